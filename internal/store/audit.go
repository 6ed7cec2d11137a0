package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/audit"
)

var _ audit.Repo = (*DB)(nil)

const auditCols = `id, at, user_id, email, auth, token_id, ip, action, method, route, resource, status, error_code, request_id`

// AppendAudit inserts entries in one transaction; an entry whose ID is
// already stored is skipped, so a retried batch is never doubled.
func (d *DB) AppendAudit(ctx context.Context, es []audit.Entry) error {
	if len(es) == 0 {
		return nil
	}
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		for _, e := range es {
			if _, err := d.exec(ctx, tx, `INSERT INTO audit_log (`+auditCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (id) DO NOTHING`,
				e.ID, ms(e.At), e.UserID, e.Email, e.Auth, e.TokenID, e.IP, e.Action, e.Method, e.Route,
				e.Resource, e.Status, e.ErrorCode, e.RequestID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append audit entries: %w", err)
	}
	return nil
}

// ListAudit returns the entries f selects, newest first.
func (d *DB) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Entry, error) {
	var where []string
	var args []any
	if f.User != "" {
		where, args = append(where, "(user_id = ? OR email = ?)"), append(args, f.User, f.User)
	}
	if f.Action != "" {
		where, args = append(where, "action = ?"), append(args, f.Action)
	}
	if f.Resource != "" {
		where = append(where, `(resource = ? OR resource LIKE ? ESCAPE '\')`)
		args = append(args, f.Resource, likeEscape(f.Resource)+"/%")
	}
	if !f.From.IsZero() {
		where, args = append(where, "at >= ?"), append(args, ms(f.From))
	}
	if !f.To.IsZero() {
		where, args = append(where, "at < ?"), append(args, ms(f.To))
	}
	if f.After != nil {
		where = append(where, "(at < ? OR (at = ? AND id < ?))")
		args = append(args, ms(f.After.At), ms(f.After.At), f.After.ID)
	}
	limit := f.Limit
	if limit <= 0 || limit > audit.MaxPageSize {
		limit = audit.MaxPageSize
	}
	q := `SELECT ` + auditCols + ` FROM audit_log`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += fmt.Sprintf(` ORDER BY at DESC, id DESC LIMIT %d`, limit)
	rows, err := d.query(ctx, d.db, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	defer rows.Close()
	out := []audit.Entry{}
	for rows.Next() {
		var e audit.Entry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.UserID, &e.Email, &e.Auth, &e.TokenID, &e.IP, &e.Action, &e.Method,
			&e.Route, &e.Resource, &e.Status, &e.ErrorCode, &e.RequestID); err != nil {
			return nil, fmt.Errorf("read audit entry: %w", err)
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit entries: %w", classify(err))
	}
	return out, nil
}

// DeleteAuditBefore removes the entries older than before (retention).
func (d *DB) DeleteAuditBefore(ctx context.Context, before time.Time) (int64, error) {
	res, err := d.exec(ctx, d.db, `DELETE FROM audit_log WHERE at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("delete old audit entries: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// likeEscape escapes LIKE's wildcards (and the escape character) in s.
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
