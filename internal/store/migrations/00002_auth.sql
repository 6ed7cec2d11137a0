-- +goose Up
-- Users, server-side sessions, API tokens and the login throttle.
-- Sessions and tokens are stored only as SHA-256 digests of their values.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE, -- lower-cased
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,        -- argon2id, PHC format
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions(user_id);
CREATE INDEX sessions_expires_at ON sessions(expires_at);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    revoked_at   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX api_tokens_user_id ON api_tokens(user_id);

CREATE TABLE login_throttle (
    throttle_key TEXT PRIMARY KEY, -- "acct:<email>" or "ip:<addr>"
    failures     INTEGER NOT NULL,
    window_start BIGINT NOT NULL
);

-- +goose Down
DROP TABLE login_throttle;
DROP TABLE api_tokens;
DROP TABLE sessions;
DROP TABLE users;
