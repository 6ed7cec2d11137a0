package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// SecretInfo describes a stored secret (never its value).
type SecretInfo struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// secretRows is where owner's secrets live: a team's ("team:<id>", see
// secrets.TeamOwner) in team_secrets, a user's in user_secrets.
func secretRows(owner string) (table, col, key string) {
	if id, ok := strings.CutPrefix(owner, "team:"); ok {
		return "team_secrets", "team_id", id
	}
	return "user_secrets", "user_id", owner
}

// PutSecret stores a sealed secret value under (userID, name), replacing
// an earlier one.
func (d *DB) PutSecret(ctx context.Context, userID, name, sealed string, at time.Time) error {
	table, col, key := secretRows(userID)
	_, err := d.exec(ctx, d.db, `INSERT INTO `+table+` (`+col+`, name, sealed, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (`+col+`, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at`,
		key, name, sealed, ms(at), ms(at))
	if err != nil {
		return fmt.Errorf("store secret %s: %w", name, err)
	}
	return nil
}

// SealedSecret returns the sealed value of a secret, or NotFound.
func (d *DB) SealedSecret(ctx context.Context, userID, name string) (string, error) {
	var sealed string
	table, col, key := secretRows(userID)
	err := d.queryRow(ctx, d.db, `SELECT sealed FROM `+table+` WHERE `+col+` = ? AND name = ?`, key, name).Scan(&sealed)
	if isNoRows(err) {
		return "", errs.E(errs.NotFound, "no secret named %q", name)
	}
	if err != nil {
		return "", fmt.Errorf("read secret %s: %w", name, err)
	}
	return sealed, nil
}

// ListSecrets returns a user's secrets by name.
func (d *DB) ListSecrets(ctx context.Context, userID string) ([]SecretInfo, error) {
	table, col, key := secretRows(userID)
	rows, err := d.query(ctx, d.db, `SELECT name, created_at, updated_at FROM `+table+` WHERE `+col+` = ? ORDER BY name`, key)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	defer rows.Close()
	out := []SecretInfo{}
	for rows.Next() {
		var s SecretInfo
		var c, u int64
		if err := rows.Scan(&s.Name, &c, &u); err != nil {
			return nil, err
		}
		s.CreatedAt, s.UpdatedAt = fromMS(c), fromMS(u)
		out = append(out, s)
	}
	return out, rows.Err()
}

// DeleteSecret removes a secret; NotFound when there is none.
func (d *DB) DeleteSecret(ctx context.Context, userID, name string) error {
	table, col, key := secretRows(userID)
	res, err := d.exec(ctx, d.db, `DELETE FROM `+table+` WHERE `+col+` = ? AND name = ?`, key, name)
	if err != nil {
		return fmt.Errorf("delete secret %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.E(errs.NotFound, "no secret named %q", name)
	}
	return nil
}
