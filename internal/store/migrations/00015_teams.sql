-- +goose Up
-- Teams, their members and invitations, and sandbox shares (issue 20).
-- role of a member: owner | member | viewer. An invitation keeps only a
-- SHA-256 hash of its one-time token; accepted_at is set once, when used.
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members(user_id);

CREATE TABLE team_invitations (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    invited_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    accepted_at BIGINT NOT NULL DEFAULT 0,
    accepted_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX team_invitations_team ON team_invitations(team_id, created_at);

-- A share gives one user (user_id) or every member of one team (team_id)
-- a role on a sandbox: viewer | operator. Exactly one of user_id, team_id
-- is set; the other is ''.
CREATE TABLE sandbox_shares (
    id         TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL DEFAULT '',
    team_id    TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (sandbox_id, user_id, team_id)
);
CREATE INDEX sandbox_shares_user ON sandbox_shares(user_id);
CREATE INDEX sandbox_shares_team ON sandbox_shares(team_id);

-- The team a sandbox belongs to ('' = the owner's personal scope).
ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_team_created ON sandboxes(team_id, created_at, id);

-- +goose Down
DROP INDEX sandboxes_team_created;
ALTER TABLE sandboxes DROP COLUMN team_id;
DROP TABLE sandbox_shares;
DROP TABLE team_invitations;
DROP TABLE team_members;
DROP TABLE teams;
