-- +goose Up
-- One row per metered LLM call (gateway request). Cost is integer nano-USD.
CREATE TABLE usage_records (
    id                    TEXT PRIMARY KEY,
    at                    BIGINT NOT NULL,
    user_id               TEXT NOT NULL,
    sandbox_id            TEXT NOT NULL DEFAULT '',
    run_id                TEXT NOT NULL DEFAULT '',
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nusd             BIGINT NOT NULL DEFAULT 0,
    latency_ms            BIGINT NOT NULL DEFAULT 0,
    status                INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_user_at ON usage_records (user_id, at);
CREATE INDEX usage_run ON usage_records (run_id);

-- +goose Down
DROP TABLE usage_records;
