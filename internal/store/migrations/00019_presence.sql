-- +goose Up
-- Who watches which sandbox through which replica (internal/presence), so
-- that replicas sharing a PostgreSQL database see each other's viewers.
-- One row per replica and watched sandbox: its viewers (JSON) and when the
-- replica last renewed it (ms, the database's clock); rows of a replica
-- that stopped renewing are ignored and then deleted. Unused on SQLite.
CREATE TABLE presence (
    sandbox_id TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    viewers    TEXT NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, replica_id)
);
CREATE INDEX presence_replica ON presence (replica_id);
CREATE INDEX presence_seen ON presence (seen_at);

-- +goose Down
DROP TABLE presence;
