-- +goose Up
-- Index of workspace snapshot versions. The versions themselves (manifest
-- and content blobs) live in the blob store under bucket/prefix.
CREATE TABLE snapshots (
    id             TEXT PRIMARY KEY,
    sandbox_id     TEXT NOT NULL,
    owner_id       TEXT NOT NULL,
    bucket         TEXT NOT NULL DEFAULT '',
    prefix         TEXT NOT NULL DEFAULT '',
    name           TEXT NOT NULL,
    trigger_kind   TEXT NOT NULL,
    run_id         TEXT NOT NULL DEFAULT '',
    file_count     BIGINT NOT NULL DEFAULT 0,
    bytes          BIGINT NOT NULL DEFAULT 0,
    uploaded_bytes BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX snapshots_location_name ON snapshots (bucket, prefix, name);
CREATE INDEX snapshots_sandbox ON snapshots (sandbox_id, created_at);
CREATE INDEX snapshots_owner ON snapshots (owner_id, created_at);

-- +goose Down
DROP TABLE snapshots;
