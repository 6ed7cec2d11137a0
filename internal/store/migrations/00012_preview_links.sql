-- +goose Up
-- Share links to a port of a sandbox (preview URLs). Only a hash of the
-- link's token is kept; deleting the row revokes the link at once.
CREATE TABLE preview_links (
    id         TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    owner_id   TEXT NOT NULL,
    port       INTEGER NOT NULL,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX preview_links_sandbox_port ON preview_links(sandbox_id, port, created_at);
CREATE INDEX preview_links_expires ON preview_links(expires_at);

-- +goose Down
DROP TABLE preview_links;
