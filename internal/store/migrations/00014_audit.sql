-- +goose Up
-- The audit log: one row per state-changing request, append-only (rows
-- are only ever inserted, and deleted by the retention sweep). It holds
-- names and IDs, never request bodies, secret values or tokens.
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    at         BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    email      TEXT NOT NULL,
    auth       TEXT NOT NULL,
    token_id   TEXT NOT NULL,
    ip         TEXT NOT NULL,
    action     TEXT NOT NULL,
    method     TEXT NOT NULL,
    route      TEXT NOT NULL,
    resource   TEXT NOT NULL,
    status     INTEGER NOT NULL,
    error_code TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at, id);
CREATE INDEX audit_log_user ON audit_log(user_id, at);
CREATE INDEX audit_log_action ON audit_log(action, at);
CREATE INDEX audit_log_resource ON audit_log(resource);

-- +goose Down
DROP TABLE audit_log;
