-- +goose Up
-- Portable SQL only (SQLite and PostgreSQL): TEXT, BIGINT, INTEGER; times are
-- unix milliseconds; booleans are INTEGER 0/1; JSON is TEXT.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- +goose Down
DROP TABLE meta;
