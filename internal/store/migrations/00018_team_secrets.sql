-- +goose Up
-- A team's secrets (issue 20), sealed like user_secrets (AES-256-GCM under
-- TECHBOSS_SECRET_KEY, bound to "team:<team_id>" and the name); never plain
-- text. They go with the team.
CREATE TABLE team_secrets (
    team_id    TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, name)
);

-- +goose Down
DROP TABLE team_secrets;
