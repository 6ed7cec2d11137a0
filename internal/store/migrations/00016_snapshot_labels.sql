-- +goose Up
-- A snapshot's label: a few words its owner gave it ("before the
-- refactor"); empty for the automatic ones.
ALTER TABLE snapshots ADD COLUMN label TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE snapshots DROP COLUMN label;
