-- +goose Up
-- Why the workspace snapshot after a run failed ('' = none, or a retry
-- stored it since). The server retries it until it succeeds or the
-- sandbox is deleted.
ALTER TABLE runs ADD COLUMN snapshot_error TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE runs DROP COLUMN snapshot_error;
