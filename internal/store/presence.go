package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/presence"
)

// PresenceBoard returns where this replica publishes its viewers for the
// other replicas sharing the database (PostgreSQL), or nil on SQLite,
// where this process is the only replica.
func (d *DB) PresenceBoard() presence.Board {
	if d.dialect != Postgres {
		return nil
	}
	return &pgPresence{db: d}
}

type pgPresence struct{ db *DB }

var _ presence.Board = (*pgPresence)(nil)

// pgNowMS is the database's clock in ms: the rows' stamps do not depend
// on the replicas' clocks agreeing.
const pgNowMS = `CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)`

func (p *pgPresence) Publish(ctx context.Context, replica, sandboxID string, vs []presence.Viewer) error {
	if len(vs) == 0 {
		if _, err := p.db.exec(ctx, p.db.db, `DELETE FROM presence WHERE sandbox_id = ? AND replica_id = ?`, sandboxID, replica); err != nil {
			return fmt.Errorf("unpublish viewers of %s: %w", sandboxID, err)
		}
		return nil
	}
	b, err := json.Marshal(vs)
	if err != nil {
		return fmt.Errorf("encode viewers of %s: %w", sandboxID, err)
	}
	_, err = p.db.exec(ctx, p.db.db, `INSERT INTO presence (sandbox_id, replica_id, viewers, seen_at) VALUES (?, ?, ?, `+pgNowMS+`)
		ON CONFLICT (sandbox_id, replica_id) DO UPDATE SET viewers = excluded.viewers, seen_at = excluded.seen_at`,
		sandboxID, replica, string(b))
	if err != nil {
		return fmt.Errorf("publish viewers of %s: %w", sandboxID, err)
	}
	return nil
}

func (p *pgPresence) Renew(ctx context.Context, replica string, expire time.Duration) (int, error) {
	res, err := p.db.exec(ctx, p.db.db, `UPDATE presence SET seen_at = `+pgNowMS+` WHERE replica_id = ?`, replica)
	if err != nil {
		return 0, fmt.Errorf("renew viewers: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("renew viewers: %w", err)
	}
	if _, err := p.db.exec(ctx, p.db.db, `DELETE FROM presence WHERE seen_at < `+pgNowMS+` - ?`, expire.Milliseconds()); err != nil {
		return 0, fmt.Errorf("delete expired viewers: %w", err)
	}
	return int(n), nil
}

// othersChunk bounds the sandboxes one query asks about.
const othersChunk = 500

func (p *pgPresence) Others(ctx context.Context, replica string, sandboxIDs []string, expire time.Duration) (map[string][][]presence.Viewer, error) {
	out := map[string][][]presence.Viewer{}
	for len(sandboxIDs) > 0 {
		ids := sandboxIDs[:min(len(sandboxIDs), othersChunk)]
		sandboxIDs = sandboxIDs[len(ids):]
		args := make([]any, 0, len(ids)+2)
		for _, id := range ids {
			args = append(args, id)
		}
		args = append(args, replica, expire.Milliseconds())
		rows, err := p.db.query(ctx, p.db.db, `SELECT sandbox_id, viewers FROM presence
			WHERE sandbox_id IN (?`+strings.Repeat(", ?", len(ids)-1)+`) AND replica_id <> ? AND seen_at >= `+pgNowMS+` - ?`, args...)
		if err != nil {
			return nil, fmt.Errorf("read other replicas' viewers: %w", err)
		}
		for rows.Next() {
			var id, raw string
			if err := rows.Scan(&id, &raw); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read other replicas' viewers: %w", classify(err))
			}
			var vs []presence.Viewer
			if err := json.Unmarshal([]byte(raw), &vs); err != nil {
				continue // not a list this version understands
			}
			out[id] = append(out[id], vs)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read other replicas' viewers: %w", classify(err))
		}
	}
	return out, nil
}

func (p *pgPresence) Clear(ctx context.Context, replica string) error {
	if _, err := p.db.exec(ctx, p.db.db, `DELETE FROM presence WHERE replica_id = ?`, replica); err != nil {
		return fmt.Errorf("clear this replica's viewers: %w", err)
	}
	return nil
}
