-- +goose Up
-- Per-user LLM limits overriding the configured default budget. Zero means
-- unlimited. The monthly limit is integer nano-USD, like usage costs.
CREATE TABLE llm_budgets (
    user_id             TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    monthly_nusd        BIGINT NOT NULL DEFAULT 0,
    requests_per_minute INTEGER NOT NULL DEFAULT 0,
    updated_at          BIGINT NOT NULL
);

-- +goose Down
DROP TABLE llm_budgets;
