-- The login throttle lives in memory (internal/auth/throttle.go); its old
-- table has been unused since.
-- +goose Up
DROP TABLE IF EXISTS login_throttle;

-- +goose Down
CREATE TABLE login_throttle (
    throttle_key TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start BIGINT NOT NULL
);
