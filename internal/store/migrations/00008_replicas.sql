-- +goose Up
-- The server processes sharing this database (several replicas on
-- PostgreSQL). A replica renews seen_at while it lives, and each run names
-- the replica executing it: a replica interrupts only runs whose replica
-- is gone (no row, or not seen within the timeout), never a live peer's.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
ALTER TABLE runs ADD COLUMN replica TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE runs DROP COLUMN replica;
DROP TABLE replicas;
