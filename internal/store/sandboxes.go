package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

var _ sandbox.Repo = (*DB)(nil)

const sandboxCols = `id, owner_id, state, reason, driver, ref, spec, created_at, updated_at, last_active_at, terminated_at, host, team_id`

// CreateSandbox inserts a sandbox record and its labels.
func (d *DB) CreateSandbox(ctx context.Context, sb *sandbox.Sandbox) error {
	spec, err := json.Marshal(sb.Spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	return d.inTx(ctx, func(tx *sql.Tx) error {
		_, err := d.exec(ctx, tx, `INSERT INTO sandboxes (id, owner_id, state, reason, driver, ref, spec, volume_name, created_at, updated_at, last_active_at, terminated_at, host, team_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sb.ID, sb.OwnerID, string(sb.State), sb.Reason, sb.Driver, string(sb.Ref), string(spec), sb.Spec.VolumeName,
			ms(sb.CreatedAt), ms(sb.UpdatedAt), ms(sb.LastActiveAt), msPtr(sb.TerminatedAt), sb.Host, sb.TeamID)
		if err != nil {
			if isUnique(err) {
				return errs.Wrap(errs.Conflict, err, "sandbox already exists")
			}
			return fmt.Errorf("insert sandbox: %w", err)
		}
		keys := make([]string, 0, len(sb.Spec.Labels))
		for k := range sb.Spec.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, err := d.exec(ctx, tx, `INSERT INTO sandbox_labels (sandbox_id, label_key, label_val) VALUES (?, ?, ?)`, sb.ID, k, sb.Spec.Labels[k]); err != nil {
				return fmt.Errorf("insert sandbox label: %w", err)
			}
		}
		return nil
	})
}

func msPtr(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return ms(*t)
}

type rowScanner interface{ Scan(dest ...any) error }

func scanSandbox(r rowScanner) (*sandbox.Sandbox, error) {
	var (
		sb                                  sandbox.Sandbox
		state, ref, spec                    string
		created, updated, active, terminate int64
	)
	if err := r.Scan(&sb.ID, &sb.OwnerID, &state, &sb.Reason, &sb.Driver, &ref, &spec, &created, &updated, &active, &terminate, &sb.Host, &sb.TeamID); err != nil {
		return nil, err
	}
	sb.State = sandbox.State(state)
	sb.Ref = sandbox.Ref(ref)
	if err := json.Unmarshal([]byte(spec), &sb.Spec); err != nil {
		return nil, fmt.Errorf("decode spec of %s: %w", sb.ID, err)
	}
	sb.CreatedAt = fromMS(created)
	sb.UpdatedAt = fromMS(updated)
	sb.LastActiveAt = fromMS(active)
	if terminate != 0 {
		t := fromMS(terminate)
		sb.TerminatedAt = &t
	}
	return &sb, nil
}

// GetSandbox returns one sandbox or an error wrapping errs.ErrNotFound.
func (d *DB) GetSandbox(ctx context.Context, id string) (*sandbox.Sandbox, error) {
	sb, err := scanSandbox(d.queryRow(ctx, d.db, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = ?`, id))
	if err != nil {
		if isNoRows(err) {
			return nil, errs.E(errs.NotFound, "sandbox not found")
		}
		return nil, fmt.Errorf("get sandbox: %w", err)
	}
	return sb, nil
}

// UpdateSandbox stores the mutable lifecycle fields of a sandbox.
func (d *DB) UpdateSandbox(ctx context.Context, sb *sandbox.Sandbox) error {
	res, err := d.exec(ctx, d.db, `UPDATE sandboxes SET state = ?, reason = ?, ref = ?, updated_at = ?, last_active_at = ?, terminated_at = ?, host = ? WHERE id = ?`,
		string(sb.State), sb.Reason, string(sb.Ref), ms(sb.UpdatedAt), ms(sb.LastActiveAt), msPtr(sb.TerminatedAt), sb.Host, sb.ID)
	if err != nil {
		return fmt.Errorf("update sandbox: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errs.E(errs.NotFound, "sandbox not found")
	}
	return nil
}

// TouchSandbox raises last_active_at to at; it never lowers it.
func (d *DB) TouchSandbox(ctx context.Context, id string, at time.Time) error {
	_, err := d.exec(ctx, d.db, `UPDATE sandboxes SET last_active_at = ? WHERE id = ? AND last_active_at < ?`, ms(at), id, ms(at))
	if err != nil {
		return fmt.Errorf("touch sandbox: %w", err)
	}
	return nil
}

// ListSandboxes returns sandboxes matching f, newest first.
func (d *DB) ListSandboxes(ctx context.Context, f sandbox.ListFilter) ([]*sandbox.Sandbox, error) {
	where, args := sandboxWhere(f)
	q := `SELECT ` + prefixCols("s.", sandboxCols) + ` FROM sandboxes s`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY s.created_at DESC, s.id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := d.query(ctx, d.db, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []*sandbox.Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	return out, nil
}

// CountSandboxes counts the sandboxes matching f (After and Limit are
// ignored): the quota check, without reading and decoding each record.
func (d *DB) CountSandboxes(ctx context.Context, f sandbox.ListFilter) (int, error) {
	f.After = nil
	where, args := sandboxWhere(f)
	q := `SELECT COUNT(*) FROM sandboxes s`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	var n int
	if err := d.queryRow(ctx, d.db, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count sandboxes: %w", err)
	}
	return n, nil
}

// sandboxWhere is the WHERE clause of f, without After and Limit.
func sandboxWhere(f sandbox.ListFilter) (where []string, args []any) {
	if f.OwnerID != "" {
		where = append(where, "s.owner_id = ?")
		args = append(args, f.OwnerID)
	}
	if f.TeamID != "" {
		where = append(where, "s.team_id = ?")
		args = append(args, f.TeamID)
	}
	if len(f.IDs) > 0 {
		ph := make([]string, len(f.IDs))
		for i, id := range f.IDs {
			ph[i] = "?"
			args = append(args, id)
		}
		where = append(where, "s.id IN ("+strings.Join(ph, ", ")+")")
	}
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, st := range f.States {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "s.state IN ("+strings.Join(ph, ", ")+")")
	}
	if f.VolumeName != "" {
		where = append(where, "s.volume_name = ?")
		args = append(args, f.VolumeName)
	}
	keys := make([]string, 0, len(f.Labels))
	for k := range f.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		where = append(where, "EXISTS (SELECT 1 FROM sandbox_labels l WHERE l.sandbox_id = s.id AND l.label_key = ? AND l.label_val = ?)")
		args = append(args, k, f.Labels[k])
	}
	if f.After != nil {
		c := ms(f.After.CreatedAt)
		where = append(where, "(s.created_at < ? OR (s.created_at = ? AND s.id < ?))")
		args = append(args, c, c, f.After.ID)
	}
	return where, args
}

func prefixCols(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}

// CountSandboxesByState counts every sandbox by state.
func (d *DB) CountSandboxesByState(ctx context.Context) (map[sandbox.State]int, error) {
	rows, err := d.query(ctx, d.db, `SELECT state, COUNT(*) FROM sandboxes GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count sandboxes: %w", err)
	}
	defer rows.Close()
	out := map[sandbox.State]int{}
	for rows.Next() {
		var (
			s string
			n int
		)
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count sandboxes: %w", err)
		}
		out[sandbox.State(s)] = n
	}
	return out, rows.Err()
}

// EnsureVolume records a named volume; an existing record is kept as is.
func (d *DB) EnsureVolume(ctx context.Context, v sandbox.VolumeRecord) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO volumes (owner_id, name, driver, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (owner_id, name) DO NOTHING`,
		v.OwnerID, v.Name, v.Driver, ms(v.CreatedAt))
	if err != nil {
		return fmt.Errorf("ensure volume: %w", err)
	}
	return nil
}

// ListVolumes returns an owner's volume records by name.
func (d *DB) ListVolumes(ctx context.Context, ownerID string) ([]sandbox.VolumeRecord, error) {
	rows, err := d.query(ctx, d.db, `SELECT owner_id, name, driver, created_at FROM volumes WHERE owner_id = ? ORDER BY name`, ownerID)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	defer rows.Close()
	var out []sandbox.VolumeRecord
	for rows.Next() {
		var (
			v  sandbox.VolumeRecord
			at int64
		)
		if err := rows.Scan(&v.OwnerID, &v.Name, &v.Driver, &at); err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		v.CreatedAt = fromMS(at)
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVolume removes a volume record or returns errs.ErrNotFound.
func (d *DB) DeleteVolume(ctx context.Context, ownerID, name string) error {
	res, err := d.exec(ctx, d.db, `DELETE FROM volumes WHERE owner_id = ? AND name = ?`, ownerID, name)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errs.E(errs.NotFound, "volume not found")
	}
	return nil
}
