package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
)

const dayMS = 86_400_000

// InsertUsage stores one usage record.
func (d *DB) InsertUsage(ctx context.Context, rec agent.UsageRecord) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO usage_records (id, at, user_id, sandbox_id, run_id, provider, model,
		input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_nusd, latency_ms, status)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.ID, ms(rec.Time), rec.UserID, rec.SandboxID, rec.RunID, rec.Provider, rec.Model,
		rec.Usage.InputTokens, rec.Usage.OutputTokens, rec.Usage.CacheReadTokens, rec.Usage.CacheCreationTokens,
		rec.CostNanoUSD, rec.Latency.Milliseconds(), rec.Status)
	if err != nil {
		if isUnique(err) {
			return errs.Wrap(errs.Conflict, err, "usage record already exists")
		}
		return fmt.Errorf("insert usage record: %w", err)
	}
	return nil
}

// StoreUsage inserts rec and adds it to its run's totals (if it has a run)
// in one transaction. A record already stored (same ID) is not added
// again, so a retry after a commit whose answer was lost is harmless.
func (d *DB) StoreUsage(ctx context.Context, rec agent.UsageRecord) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := d.exec(ctx, tx, `INSERT INTO usage_records (id, at, user_id, sandbox_id, run_id, provider, model,
			input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_nusd, latency_ms, status)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			rec.ID, ms(rec.Time), rec.UserID, rec.SandboxID, rec.RunID, rec.Provider, rec.Model,
			rec.Usage.InputTokens, rec.Usage.OutputTokens, rec.Usage.CacheReadTokens, rec.Usage.CacheCreationTokens,
			rec.CostNanoUSD, rec.Latency.Milliseconds(), rec.Status)
		if err != nil {
			return fmt.Errorf("insert usage record: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 || rec.RunID == "" {
			return nil // stored before, with its run's totals
		}
		u := rec.Usage
		if _, err := d.exec(ctx, tx, `UPDATE runs SET input_tokens = input_tokens + ?, output_tokens = output_tokens + ?,
			cache_read_tokens = cache_read_tokens + ?, cache_creation_tokens = cache_creation_tokens + ?, cost_nusd = cost_nusd + ?
			WHERE id = ?`, u.InputTokens, u.OutputTokens, u.CacheReadTokens, u.CacheCreationTokens, rec.CostNanoUSD, rec.RunID); err != nil {
			return fmt.Errorf("add usage to run %s: %w", rec.RunID, err)
		}
		return nil
	})
}

func usageWhere(q agent.UsageQuery) (string, []any) {
	where := ` WHERE at >= ? AND at < ?`
	to := q.To
	if to.IsZero() {
		to = time.Unix(1<<40, 0)
	}
	args := []any{ms(q.From), ms(to)}
	if q.UserID != "" {
		where += ` AND user_id = ?`
		args = append(args, q.UserID)
	}
	return where, args
}

// usageKeys are the groupings of UsageSummary (agent.UsageGroupBys):
// the SQL of each group's key, where the key is an ID of a label that
// names it, and any join the key needs. A grouping is one more row.
var usageKeys = map[string]struct{ key, label, join string }{
	"day":     {key: `at / ` + fmt.Sprint(dayMS)},
	"model":   {key: `model`},
	"sandbox": {key: `sandbox_id`},
	"user":    {key: `user_id`, label: `(SELECT email FROM users WHERE users.id = usage_records.user_id)`},
	// A team's usage is that of every call from its sandboxes (whoever
	// made it); calls outside a team sandbox are in no group.
	"team": {key: `ts.team_id`, label: `(SELECT name FROM teams WHERE teams.id = ts.team_id)`,
		join: ` JOIN sandboxes ts ON ts.id = usage_records.sandbox_id AND ts.team_id <> ''`},
}

// UsageSummary sums usage records in [From, To) grouped by day (UTC),
// model, sandbox, user or team, ordered by key.
func (d *DB) UsageSummary(ctx context.Context, q agent.UsageQuery) ([]agent.UsageGroup, error) {
	by := q.GroupBy
	if by == "" {
		by = "day"
	}
	gk, ok := usageKeys[by]
	if !ok {
		return nil, errs.Field("group_by", "must be one of "+strings.Join(agent.UsageGroupBys, ", "))
	}
	label := gk.label
	if label == "" {
		label = `''`
	}
	where, args := usageWhere(q)
	if q.TeamMemberID != "" {
		if by != "team" {
			return nil, errs.Field("group_by", "a team member's usage is grouped by team")
		}
		where += ` AND ts.team_id IN (SELECT team_id FROM team_members WHERE user_id = ?)`
		args = append(args, q.TeamMemberID)
	}
	rows, err := d.query(ctx, d.db, `SELECT `+gk.key+`, `+label+`, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),
		SUM(cache_creation_tokens), SUM(cost_nusd) FROM usage_records`+gk.join+where+` GROUP BY `+gk.key+` ORDER BY `+gk.key, args...)
	if err != nil {
		return nil, fmt.Errorf("usage summary: %w", err)
	}
	defer rows.Close()
	out := []agent.UsageGroup{}
	for rows.Next() {
		var (
			g     agent.UsageGroup
			k     any
			day   int64
			lbl   sql.NullString
			isDay = by == "day"
		)
		dest := []any{&k, &lbl}
		if isDay {
			dest = []any{&day, &lbl}
		}
		dest = append(dest, &g.Requests, &g.Usage.InputTokens, &g.Usage.OutputTokens, &g.Usage.CacheReadTokens,
			&g.Usage.CacheCreationTokens, &g.CostNanoUSD)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan usage summary: %w", err)
		}
		if isDay {
			g.Key = time.UnixMilli(day * dayMS).UTC().Format(time.DateOnly)
		} else {
			switch v := k.(type) {
			case string:
				g.Key = v
			case []byte:
				g.Key = string(v)
			}
		}
		g.Label = lbl.String
		out = append(out, g)
	}
	return out, rows.Err()
}

// ListUsage returns usage records in [From, To), newest first.
func (d *DB) ListUsage(ctx context.Context, q agent.UsageQuery, limit int) ([]agent.UsageRecord, error) {
	if limit <= 0 {
		limit = 1000
	}
	where, args := usageWhere(q)
	rows, err := d.query(ctx, d.db, `SELECT id, at, user_id, sandbox_id, run_id, provider, model, input_tokens, output_tokens,
		cache_read_tokens, cache_creation_tokens, cost_nusd, latency_ms, status FROM usage_records`+where+
		` ORDER BY at DESC, id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list usage: %w", err)
	}
	defer rows.Close()
	var out []agent.UsageRecord
	for rows.Next() {
		var (
			r         agent.UsageRecord
			at, latMS int64
		)
		if err := rows.Scan(&r.ID, &at, &r.UserID, &r.SandboxID, &r.RunID, &r.Provider, &r.Model, &r.Usage.InputTokens,
			&r.Usage.OutputTokens, &r.Usage.CacheReadTokens, &r.Usage.CacheCreationTokens, &r.CostNanoUSD, &latMS, &r.Status); err != nil {
			return nil, fmt.Errorf("scan usage record: %w", err)
		}
		r.Time, r.Latency = fromMS(at), time.Duration(latMS)*time.Millisecond
		out = append(out, r)
	}
	return out, rows.Err()
}

// SpentUSD is the summed cost of the user's usage records at or after
// since (llm.Ledger, for budgets).
func (d *DB) SpentUSD(ctx context.Context, userID string, since time.Time) (float64, error) {
	var n int64
	err := d.queryRow(ctx, d.db, `SELECT COALESCE(SUM(cost_nusd), 0) FROM usage_records WHERE user_id = ? AND at >= ?`,
		userID, ms(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("spent by %s: %w", userID, err)
	}
	return float64(n) / 1e9, nil
}
