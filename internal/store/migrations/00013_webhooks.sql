-- +goose Up
-- Users' webhooks and their deliveries (the outbox). secret_sealed is the
-- hook's signing secret sealed with AES-256-GCM under the server's key
-- (TECHBOSS_SECRET_KEY); never plain text. events is a comma-separated
-- list of event types.
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX webhooks_user ON webhooks(user_id, created_at);

-- One row per (event, hook), written when the event is emitted; a worker
-- delivers it. state: pending | delivered | failed. claimed_until is the
-- lease of the replica sending it now.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    data            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    response_status INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
