-- +goose Up
-- A team's monthly LLM limit (issue 20): calls from the team's sandboxes
-- are refused once their summed cost this month reaches it. Integer
-- nano-USD, like usage costs; no row = no team limit.
CREATE TABLE team_budgets (
    team_id      TEXT PRIMARY KEY REFERENCES teams(id) ON DELETE CASCADE,
    monthly_nusd BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE team_budgets;
