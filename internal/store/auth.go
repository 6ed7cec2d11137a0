package store

import (
	"context"
	"fmt"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
)

var _ auth.Store = (*DB)(nil)

// CreateUser inserts a user; a duplicate email is errs.Conflict.
func (d *DB) CreateUser(ctx context.Context, u auth.User, passwordHash string) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO users (id, email, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
		u.ID, u.Email, string(u.Role), passwordHash, ms(u.CreatedAt))
	if isUnique(err) {
		return errs.Wrap(errs.Conflict, err, "a user with this email already exists")
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

const userCols = `u.id, u.email, u.role, u.created_at`

type scanner interface{ Scan(dest ...any) error }

func scanUser(sc scanner, extra ...any) (auth.User, error) {
	var u auth.User
	var role string
	var created int64
	dest := append([]any{&u.ID, &u.Email, &role, &created}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return auth.User{}, err
	}
	u.Role = auth.Role(role)
	u.CreatedAt = fromMS(created)
	return u, nil
}

func notFound(err error, what string) error {
	if isNoRows(err) {
		return errs.Wrap(errs.NotFound, err, what+" not found")
	}
	return fmt.Errorf("query %s: %w", what, err)
}

// UserByEmail returns the user with that (normalised) email and its password hash.
func (d *DB) UserByEmail(ctx context.Context, email string) (auth.User, string, error) {
	var hash string
	u, err := scanUser(d.queryRow(ctx, d.db, `SELECT `+userCols+`, u.password_hash FROM users u WHERE u.email = ?`, email), &hash)
	if err != nil {
		return auth.User{}, "", notFound(err, "user")
	}
	return u, hash, nil
}

// UserByID returns a user.
func (d *DB) UserByID(ctx context.Context, id string) (auth.User, error) {
	u, err := scanUser(d.queryRow(ctx, d.db, `SELECT `+userCols+` FROM users u WHERE u.id = ?`, id))
	if err != nil {
		return auth.User{}, notFound(err, "user")
	}
	return u, nil
}

// CountUsers returns the number of users.
func (d *DB) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := d.queryRow(ctx, d.db, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// SetPassword replaces a user's password hash.
func (d *DB) SetPassword(ctx context.Context, userID, passwordHash string) error {
	res, err := d.exec(ctx, d.db, `UPDATE users SET password_hash = ? WHERE id = ?`, passwordHash, userID)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	return mustAffect(res, "user")
}

type rowsAffected interface{ RowsAffected() (int64, error) }

func mustAffect(res rowsAffected, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("rows affected: %w", err)
	}
	if n == 0 {
		return errs.E(errs.NotFound, "%s not found", what)
	}
	return nil
}

// CreateSession stores a session.
func (d *DB) CreateSession(ctx context.Context, s auth.Session) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		s.IDHash, s.UserID, ms(s.CreatedAt), ms(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	return nil
}

// SessionUser returns a session and its user. Expiry is the caller's check.
func (d *DB) SessionUser(ctx context.Context, idHash string) (auth.Session, auth.User, error) {
	var s auth.Session
	var created, expires int64
	u, err := scanUser(d.queryRow(ctx, d.db, `SELECT `+userCols+`, s.id_hash, s.user_id, s.created_at, s.expires_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?`, idHash),
		&s.IDHash, &s.UserID, &created, &expires)
	if err != nil {
		return auth.Session{}, auth.User{}, notFound(err, "session")
	}
	s.CreatedAt, s.ExpiresAt = fromMS(created), fromMS(expires)
	return s, u, nil
}

// DeleteSession removes a session; a missing one is errs.NotFound.
func (d *DB) DeleteSession(ctx context.Context, idHash string) error {
	res, err := d.exec(ctx, d.db, `DELETE FROM sessions WHERE id_hash = ?`, idHash)
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return mustAffect(res, "session")
}

// DeleteExpiredSessions removes sessions that expired at or before now.
func (d *DB) DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error) {
	res, err := d.exec(ctx, d.db, `DELETE FROM sessions WHERE expires_at <= ?`, ms(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return res.RowsAffected()
}

const tokenCols = `t.id, t.user_id, t.name, t.created_at, t.last_used_at, t.revoked_at`

func scanToken(sc scanner, extra ...any) (auth.Token, error) {
	var t auth.Token
	var created, used, revoked int64
	dest := append([]any{&t.ID, &t.UserID, &t.Name, &created, &used, &revoked}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return auth.Token{}, err
	}
	t.CreatedAt, t.LastUsedAt, t.RevokedAt = fromMS(created), fromMS(used), fromMS(revoked)
	return t, nil
}

// CreateToken stores an API token's metadata and digest.
func (d *DB) CreateToken(ctx context.Context, t auth.Token, tokenHash string) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
		t.ID, t.UserID, t.Name, tokenHash, ms(t.CreatedAt))
	if isUnique(err) {
		return errs.Wrap(errs.Conflict, err, "token already exists")
	}
	if err != nil {
		return fmt.Errorf("insert token: %w", err)
	}
	return nil
}

// TokenUser returns the token with that digest and its user. Revocation is
// the caller's check.
func (d *DB) TokenUser(ctx context.Context, tokenHash string) (auth.Token, auth.User, error) {
	var u auth.User
	var role string
	var ucreated int64
	t, err := scanToken(d.queryRow(ctx, d.db, `SELECT `+tokenCols+`, u.id, u.email, u.role, u.created_at
		FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?`, tokenHash),
		&u.ID, &u.Email, &role, &ucreated)
	if err != nil {
		return auth.Token{}, auth.User{}, notFound(err, "token")
	}
	u.Role, u.CreatedAt = auth.Role(role), fromMS(ucreated)
	return t, u, nil
}

// ListTokens returns a user's tokens, newest first.
func (d *DB) ListTokens(ctx context.Context, userID string) ([]auth.Token, error) {
	rows, err := d.query(ctx, d.db, `SELECT `+tokenCols+` FROM api_tokens t WHERE t.user_id = ? ORDER BY t.created_at DESC, t.id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []auth.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("scan token: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// RevokeToken marks a user's token revoked (idempotent for an already
// revoked token); another user's token is errs.NotFound.
func (d *DB) RevokeToken(ctx context.Context, userID, tokenID string, at time.Time) error {
	res, err := d.exec(ctx, d.db, `UPDATE api_tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END
		WHERE id = ? AND user_id = ?`, ms(at), tokenID, userID)
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return mustAffect(res, "token")
}

// TouchToken records the token's last use.
func (d *DB) TouchToken(ctx context.Context, tokenID string, at time.Time) error {
	_, err := d.exec(ctx, d.db, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, ms(at), tokenID)
	if err != nil {
		return fmt.Errorf("touch token: %w", err)
	}
	return nil
}
