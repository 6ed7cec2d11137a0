-- +goose Up
-- A team's spend this month (store.teamSpent) sums the usage of the
-- team's sandboxes, and the gateway asks it before every call from a team
-- sandbox under a budget: without this index that is a scan of every
-- usage record.
CREATE INDEX usage_sandbox_at ON usage_records (sandbox_id, at);

-- +goose Down
DROP INDEX usage_sandbox_at;
