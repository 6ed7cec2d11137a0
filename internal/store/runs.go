package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
)

var _ agent.Store = (*DB)(nil)

const runCols = `id, sandbox_id, owner_id, prompt, options, status, resumed_from, session_id, model,
	created_at, started_at, finished_at, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
	cost_nusd, num_turns, exit_code, error, last_seq, replica`

// runSelect reads runs with last_seq computed from the event log (one
// primary-key probe), so appending an event is a single INSERT.
const runSelect = `SELECT id, sandbox_id, owner_id, prompt, options, status, resumed_from, session_id, model,
	created_at, started_at, finished_at, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
	cost_nusd, num_turns, exit_code, error,
	(SELECT COALESCE(MAX(e.seq), 0) FROM run_events e WHERE e.run_id = runs.id), replica, snapshot_error FROM runs`

// CreateRun inserts a run. A second active run for the same sandbox is an
// errs.Conflict naming the active one.
func (d *DB) CreateRun(ctx context.Context, r agent.Run) error {
	opts, err := json.Marshal(r.Options)
	if err != nil {
		return fmt.Errorf("encode run options: %w", err)
	}
	var exit sql.NullInt64
	if r.ExitCode != nil {
		exit = sql.NullInt64{Int64: int64(*r.ExitCode), Valid: true}
	}
	_, err = d.exec(ctx, d.db, `INSERT INTO runs (`+runCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.SandboxID, r.OwnerID, r.Prompt, string(opts), string(r.Status), r.ResumedFrom, r.SessionID, r.Model,
		ms(r.CreatedAt), ms(r.StartedAt), ms(r.FinishedAt), r.Usage.InputTokens, r.Usage.OutputTokens,
		r.Usage.CacheReadTokens, r.Usage.CacheCreationTokens, r.CostNanoUSD, r.NumTurns, exit, r.Error, r.LastSeq, r.Replica)
	if err == nil {
		return nil
	}
	if !isUnique(err) {
		return fmt.Errorf("insert run: %w", err)
	}
	if active, aerr := d.ActiveRun(ctx, r.SandboxID); aerr == nil && active.ID != r.ID {
		return errs.Wrap(errs.Conflict, err, fmt.Sprintf("sandbox %s already has an active run %s", r.SandboxID, active.ID))
	}
	return errs.Wrap(errs.Conflict, err, "run already exists")
}

func scanRun(s rowScanner) (agent.Run, error) {
	var (
		r                          agent.Run
		opts, status               string
		created, started, finished int64
		exit                       sql.NullInt64
	)
	err := s.Scan(&r.ID, &r.SandboxID, &r.OwnerID, &r.Prompt, &opts, &status, &r.ResumedFrom, &r.SessionID, &r.Model,
		&created, &started, &finished, &r.Usage.InputTokens, &r.Usage.OutputTokens, &r.Usage.CacheReadTokens,
		&r.Usage.CacheCreationTokens, &r.CostNanoUSD, &r.NumTurns, &exit, &r.Error, &r.LastSeq, &r.Replica, &r.SnapshotError)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(opts), &r.Options); err != nil {
		return r, fmt.Errorf("decode options of run %s: %w", r.ID, err)
	}
	r.Status = agent.Status(status)
	r.CreatedAt, r.StartedAt, r.FinishedAt = fromMS(created), fromMS(started), fromMS(finished)
	if exit.Valid {
		c := int(exit.Int64)
		r.ExitCode = &c
	}
	return r, nil
}

// GetRun returns one run.
func (d *DB) GetRun(ctx context.Context, id string) (agent.Run, error) {
	r, err := scanRun(d.queryRow(ctx, d.db, runSelect+` WHERE id = ?`, id))
	if isNoRows(err) {
		return r, errs.Wrap(errs.NotFound, errs.ErrNotFound, "run not found")
	}
	if err != nil {
		return r, fmt.Errorf("get run %s: %w", id, err)
	}
	return r, nil
}

// ActiveRun returns the sandbox's queued or running run.
func (d *DB) ActiveRun(ctx context.Context, sandboxID string) (agent.Run, error) {
	r, err := scanRun(d.queryRow(ctx, d.db, runSelect+` WHERE sandbox_id = ? AND status IN ('queued', 'running')`, sandboxID))
	if isNoRows(err) {
		return r, errs.Wrap(errs.NotFound, errs.ErrNotFound, "no active run")
	}
	if err != nil {
		return r, fmt.Errorf("active run of %s: %w", sandboxID, err)
	}
	return r, nil
}

// ListRuns returns a sandbox's runs, newest first.
func (d *DB) ListRuns(ctx context.Context, sandboxID string, limit int) ([]agent.Run, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := d.query(ctx, d.db, runSelect+` WHERE sandbox_id = ? ORDER BY created_at DESC, id DESC LIMIT ?`, sandboxID, limit)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []agent.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("scan run: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// UpdateRun writes a run's mutable fields. Usage and cost are written as
// given (AddRunUsage adds to them atomically).
func (d *DB) UpdateRun(ctx context.Context, r agent.Run) error {
	var exit sql.NullInt64
	if r.ExitCode != nil {
		exit = sql.NullInt64{Int64: int64(*r.ExitCode), Valid: true}
	}
	res, err := d.exec(ctx, d.db, `UPDATE runs SET status = ?, session_id = ?, model = ?, started_at = ?, finished_at = ?,
		input_tokens = ?, output_tokens = ?, cache_read_tokens = ?, cache_creation_tokens = ?, cost_nusd = ?,
		num_turns = ?, exit_code = ?, error = ? WHERE id = ? AND status IN ('queued', 'running')`,
		string(r.Status), r.SessionID, r.Model, ms(r.StartedAt), ms(r.FinishedAt),
		r.Usage.InputTokens, r.Usage.OutputTokens, r.Usage.CacheReadTokens, r.Usage.CacheCreationTokens, r.CostNanoUSD,
		r.NumTurns, exit, r.Error, r.ID)
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		cur, err := d.GetRun(ctx, r.ID)
		if err != nil {
			return err
		}
		return errs.E(errs.Conflict, "run %s already ended (%s)", r.ID, cur.Status)
	}
	return nil
}

// SetRunSnapshotError records why the run's after-run snapshot failed (""
// clears it: a retry stored it). It applies to ended runs too.
func (d *DB) SetRunSnapshotError(ctx context.Context, runID, msg string) error {
	res, err := d.exec(ctx, d.db, `UPDATE runs SET snapshot_error = ? WHERE id = ?`, msg, runID)
	if err != nil {
		return fmt.Errorf("set snapshot error of run %s: %w", runID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "run not found")
	}
	return nil
}

// AddRunUsage adds tokens and cost to a run's totals.
func (d *DB) AddRunUsage(ctx context.Context, runID string, u agent.Usage, costNanoUSD int64) error {
	_, err := d.exec(ctx, d.db, `UPDATE runs SET input_tokens = input_tokens + ?, output_tokens = output_tokens + ?,
		cache_read_tokens = cache_read_tokens + ?, cache_creation_tokens = cache_creation_tokens + ?, cost_nusd = cost_nusd + ?
		WHERE id = ?`, u.InputTokens, u.OutputTokens, u.CacheReadTokens, u.CacheCreationTokens, costNanoUSD, runID)
	if err != nil {
		return fmt.Errorf("add usage to run %s: %w", runID, err)
	}
	return nil
}

// LastSessionID returns the session of the sandbox's latest run that has one.
func (d *DB) LastSessionID(ctx context.Context, sandboxID string) (string, error) {
	var s string
	err := d.queryRow(ctx, d.db, `SELECT session_id FROM runs WHERE sandbox_id = ? AND session_id <> ''
		ORDER BY created_at DESC, id DESC LIMIT 1`, sandboxID).Scan(&s)
	if isNoRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("last session of %s: %w", sandboxID, err)
	}
	return s, nil
}

// HasSession reports whether one of the sandbox's runs reported session.
func (d *DB) HasSession(ctx context.Context, sandboxID, session string) (bool, error) {
	var one int
	err := d.queryRow(ctx, d.db, `SELECT 1 FROM runs WHERE sandbox_id = ? AND session_id = ? LIMIT 1`, sandboxID, session).Scan(&one)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("session %s of %s: %w", session, sandboxID, err)
	}
	return true, nil
}

// AppendRunEvent persists one event (a single INSERT: the run's last_seq
// is derived from the log when the run is read). It is idempotent: the
// same event again (a retry after a commit whose answer was lost) is a
// no-op; a different event at a taken seq is an errs.Conflict.
func (d *DB) AppendRunEvent(ctx context.Context, ev agent.Event) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO run_events (run_id, seq, type, at, data, raw) VALUES (?, ?, ?, ?, ?, ?)`,
		ev.RunID, ev.Seq, ev.Type, ms(ev.Time), string(ev.Data), ev.Raw)
	if err == nil {
		return nil
	}
	if !isUnique(err) {
		return fmt.Errorf("insert run event: %w", err)
	}
	var typ, data, raw string
	if qerr := d.queryRow(ctx, d.db, `SELECT type, data, raw FROM run_events WHERE run_id = ? AND seq = ?`, ev.RunID, ev.Seq).
		Scan(&typ, &data, &raw); qerr != nil {
		return fmt.Errorf("check stored run event %d: %w", ev.Seq, qerr)
	}
	if typ == ev.Type && data == string(ev.Data) && raw == ev.Raw {
		return nil
	}
	return errs.Wrap(errs.Conflict, err, "event already exists")
}

// RunEvents returns a run's events after seq `after`, in order; limit 0 = all.
func (d *DB) RunEvents(ctx context.Context, runID string, after int64, limit int) ([]agent.Event, error) {
	q := `SELECT run_id, seq, type, at, data, raw FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq`
	args := []any{runID, after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := d.query(ctx, d.db, q, args...)
	if err != nil {
		return nil, fmt.Errorf("run events: %w", err)
	}
	defer rows.Close()
	var out []agent.Event
	for rows.Next() {
		var (
			ev   agent.Event
			at   int64
			data string
		)
		if err := rows.Scan(&ev.RunID, &ev.Seq, &ev.Type, &at, &data, &ev.Raw); err != nil {
			return nil, fmt.Errorf("scan run event: %w", err)
		}
		ev.Time = fromMS(at)
		ev.Data = json.RawMessage(data)
		out = append(out, ev)
	}
	return out, rows.Err()
}

// ReplicaAlive records that replica id, on host, is alive at `at`, and
// reports whether it was registered already (false the first time, and
// after another replica took it for dead and forgot it).
func (d *DB) ReplicaAlive(ctx context.Context, id, host string, at time.Time) (renewed bool, err error) {
	res, err := d.exec(ctx, d.db, `UPDATE replicas SET seen_at = ? WHERE id = ?`, ms(at), id)
	if err != nil {
		return false, fmt.Errorf("renew replica %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		return true, nil
	}
	_, err = d.exec(ctx, d.db, `INSERT INTO replicas (id, host, started_at, seen_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, id, host, ms(at), ms(at))
	if err != nil {
		return false, fmt.Errorf("register replica %s: %w", id, err)
	}
	return false, nil
}

// HostAlive reports whether a replica on host was seen at or after since.
func (d *DB) HostAlive(ctx context.Context, host string, since time.Time) (bool, error) {
	var n int
	err := d.queryRow(ctx, d.db, `SELECT COUNT(*) FROM replicas WHERE host = ? AND seen_at >= ?`, host, ms(since)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("replicas of host %s: %w", host, err)
	}
	return n > 0, nil
}

// RemoveReplica forgets a replica that stopped cleanly.
func (d *DB) RemoveReplica(ctx context.Context, id string) error {
	if _, err := d.exec(ctx, d.db, `DELETE FROM replicas WHERE id = ?`, id); err != nil {
		return fmt.Errorf("remove replica %s: %w", id, err)
	}
	return nil
}

// InterruptOrphanedRuns marks interrupted every queued or running run
// whose replica is gone: not self, and with no replicas row seen at or
// after staleBefore. It deletes their tokens and forgets those replicas,
// and returns the runs it marked. A run is marked by one caller only, so
// replicas sweeping at once each get a disjoint set.
func (d *DB) InterruptOrphanedRuns(ctx context.Context, self string, staleBefore, at time.Time, reason string) ([]agent.Run, error) {
	var found, marked []agent.Run
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := d.query(ctx, tx, runSelect+` WHERE status IN ('queued', 'running') AND replica <> ?
			AND NOT EXISTS (SELECT 1 FROM replicas p WHERE p.id = runs.replica AND p.seen_at >= ?)`, self, ms(staleBefore))
		if err != nil {
			return fmt.Errorf("find orphaned runs: %w", err)
		}
		for rows.Next() {
			r, err := scanRun(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("scan run: %w", err)
			}
			found = append(found, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range found {
			// The status condition makes a run that another replica marked
			// first (PostgreSQL re-checks it after that commit) a no-op here.
			res, err := d.exec(ctx, tx, `UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status IN ('queued', 'running')`,
				string(agent.Interrupted), ms(at), reason, r.ID)
			if err != nil {
				return fmt.Errorf("interrupt run: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				continue
			}
			if _, err := d.exec(ctx, tx, `DELETE FROM run_tokens WHERE run_id = ?`, r.ID); err != nil {
				return fmt.Errorf("delete run tokens: %w", err)
			}
			r.Status, r.FinishedAt, r.Error = agent.Interrupted, at, reason
			marked = append(marked, r)
		}
		if _, err := d.exec(ctx, tx, `DELETE FROM replicas WHERE seen_at < ? AND id <> ?`, ms(staleBefore), self); err != nil {
			return fmt.Errorf("forget stale replicas: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return marked, nil
}

// CreateRunToken stores a run token's hash.
func (d *DB) CreateRunToken(ctx context.Context, t agent.RunToken) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO run_tokens (token_hash, run_id, sandbox_id, user_id, created_at) VALUES (?, ?, ?, ?, ?)`,
		t.Hash, t.RunID, t.SandboxID, t.UserID, ms(t.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert run token: %w", err)
	}
	return nil
}

// RunToken looks a run token up by its hash.
func (d *DB) RunToken(ctx context.Context, hash string) (agent.RunToken, error) {
	var (
		t  agent.RunToken
		at int64
	)
	err := d.queryRow(ctx, d.db, `SELECT token_hash, run_id, sandbox_id, user_id, created_at FROM run_tokens WHERE token_hash = ?`, hash).
		Scan(&t.Hash, &t.RunID, &t.SandboxID, &t.UserID, &at)
	if isNoRows(err) {
		return t, errs.Wrap(errs.NotFound, errs.ErrNotFound, "run token not found")
	}
	if err != nil {
		return t, fmt.Errorf("get run token: %w", err)
	}
	t.CreatedAt = fromMS(at)
	return t, nil
}

// DeleteRunTokens removes a run's tokens (when the run ends).
func (d *DB) DeleteRunTokens(ctx context.Context, runID string) error {
	if _, err := d.exec(ctx, d.db, `DELETE FROM run_tokens WHERE run_id = ?`, runID); err != nil {
		return fmt.Errorf("delete run tokens: %w", err)
	}
	return nil
}
