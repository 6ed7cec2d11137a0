-- +goose Up
-- Agent runs, their durable event logs and run-scoped gateway tokens.
-- Portable SQL only: times are unix ms, cost is integer nano-USD.
CREATE TABLE runs (
    id                    TEXT PRIMARY KEY,
    sandbox_id            TEXT NOT NULL,
    owner_id              TEXT NOT NULL,
    prompt                TEXT NOT NULL,
    options               TEXT NOT NULL DEFAULT '{}',
    status                TEXT NOT NULL,
    resumed_from          TEXT NOT NULL DEFAULT '',
    session_id            TEXT NOT NULL DEFAULT '',
    model                 TEXT NOT NULL DEFAULT '',
    created_at            BIGINT NOT NULL,
    started_at            BIGINT NOT NULL DEFAULT 0,
    finished_at           BIGINT NOT NULL DEFAULT 0,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nusd             BIGINT NOT NULL DEFAULT 0,
    num_turns             INTEGER NOT NULL DEFAULT 0,
    exit_code             INTEGER,
    error                 TEXT NOT NULL DEFAULT '',
    last_seq              BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_sandbox ON runs (sandbox_id, created_at);
CREATE INDEX runs_owner ON runs (owner_id, created_at);
-- At most one active run per sandbox, enforced by the database so two
-- replicas cannot both start one.
CREATE UNIQUE INDEX runs_one_active ON runs (sandbox_id) WHERE status IN ('queued', 'running');

CREATE TABLE run_events (
    run_id  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    type    TEXT NOT NULL,
    at      BIGINT NOT NULL,
    data    TEXT NOT NULL,
    raw     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE run_tokens (
    token_hash  TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    sandbox_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX run_tokens_run ON run_tokens (run_id);

-- +goose Down
DROP TABLE run_tokens;
DROP TABLE run_events;
DROP TABLE runs;
