-- +goose Up
-- Sandboxes, their labels (a table so label filters are portable SQL), and
-- named volumes. spec is the JSON Spec with env values redacted.
CREATE TABLE sandboxes (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    driver         TEXT NOT NULL,
    ref            TEXT NOT NULL DEFAULT '',
    spec           TEXT NOT NULL,
    volume_name    TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    terminated_at  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sandboxes_owner_created ON sandboxes(owner_id, created_at, id);
CREATE INDEX sandboxes_state ON sandboxes(state);

CREATE TABLE sandbox_labels (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    label_key  TEXT NOT NULL,
    label_val  TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, label_key)
);
CREATE INDEX sandbox_labels_kv ON sandbox_labels(label_key, label_val);

CREATE TABLE volumes (
    owner_id   TEXT NOT NULL,
    name       TEXT NOT NULL,
    driver     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (owner_id, name)
);

-- +goose Down
DROP TABLE volumes;
DROP TABLE sandbox_labels;
DROP TABLE sandboxes;
