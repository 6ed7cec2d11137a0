-- +goose Up
-- A user's secrets (MCP server credentials and the like), write-only through
-- the API. value is sealed with AES-256-GCM under the server's secret key
-- (TECHBOSS_SECRET_KEY), bound to the owner and name; never plain text.
CREATE TABLE user_secrets (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);

-- +goose Down
DROP TABLE user_secrets;
