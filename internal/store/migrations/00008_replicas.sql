-- +goose Up
-- The server processes sharing this database (several replicas on
-- PostgreSQL). A replica renews seen_at while it lives, and each run names
-- the replica executing it: a replica interrupts only runs whose replica
-- is gone (no row, or not seen within the timeout), never a live peer's.
-- host names the machine (data directory) a replica runs on: a sandbox of
-- a host-bound driver (local) records it, and servers on other hosts leave
-- it alone while a replica of its host lives.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    host       TEXT NOT NULL DEFAULT '',
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
CREATE INDEX replicas_host ON replicas (host, seen_at);
ALTER TABLE runs ADD COLUMN replica TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN host TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN host;
ALTER TABLE runs DROP COLUMN replica;
DROP TABLE replicas;
