package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
)

// runFeedChannel is the PostgreSQL notification channel of run events.
const runFeedChannel = "techboss_run_events"

// RunFeed returns the feed that carries run-event notices between the
// replicas sharing this database (PostgreSQL LISTEN/NOTIFY), or nil on
// SQLite, where this process is the only one.
func (d *DB) RunFeed() agent.Feed {
	if d.dialect != Postgres {
		return nil
	}
	return &pgFeed{db: d}
}

type pgFeed struct{ db *DB }

// Notify sends "<seq> <run id>", or "cancel <run id>", on the channel.
func (f *pgFeed) Notify(ctx context.Context, n agent.Notice) error {
	payload := strconv.FormatInt(n.Seq, 10) + " " + n.RunID
	switch {
	case n.Cancel:
		payload = "cancel " + n.RunID
	case n.Decide != nil:
		payload = "decide " + n.RunID + " " + base64.StdEncoding.EncodeToString(n.Decide)
		if len(payload) > 7900 { // NOTIFY takes under 8000 bytes
			return errs.E(errs.TooLarge, "the answer is too large to pass to the run's replica (edited input over ~5 KiB)")
		}
	}
	if _, err := f.db.db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, runFeedChannel, payload); err != nil {
		return fmt.Errorf("notify run %s: %w", n.RunID, err)
	}
	return nil
}

// Listen holds a connection of its own (outside the pool: a pooled one
// would go on receiving notices for whoever used it next).
func (f *pgFeed) Listen(ctx context.Context, fn func(agent.Notice), connected func()) error {
	c, err := pgx.Connect(ctx, f.db.url)
	if err != nil {
		return fmt.Errorf("run feed: connect: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, "LISTEN "+runFeedChannel); err != nil {
		return fmt.Errorf("run feed: listen: %w", err)
	}
	connected()
	for {
		m, err := c.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("run feed: %w", err)
		}
		head, runID, ok := strings.Cut(m.Payload, " ")
		if !ok || runID == "" {
			continue // not ours
		}
		if head == "cancel" {
			fn(agent.Notice{RunID: runID, Cancel: true})
			continue
		}
		if head == "decide" {
			id, b64, _ := strings.Cut(runID, " ")
			if b, err := base64.StdEncoding.DecodeString(b64); err == nil && id != "" {
				fn(agent.Notice{RunID: id, Decide: b})
			}
			continue
		}
		if n, err := strconv.ParseInt(head, 10, 64); err == nil {
			fn(agent.Notice{RunID: runID, Seq: n})
		}
	}
}
