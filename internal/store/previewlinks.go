package store

import (
	"context"
	"fmt"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

var _ sandbox.PreviewLinkRepo = (*DB)(nil)

const previewLinkCols = `id, sandbox_id, owner_id, port, token_hash, created_at, expires_at`

// CreatePreviewLink stores a share link (its token's hash, never the token).
func (d *DB) CreatePreviewLink(ctx context.Context, l *sandbox.PreviewLink) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO preview_links (`+previewLinkCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		l.ID, l.SandboxID, l.OwnerID, l.Port, l.TokenHash, ms(l.CreatedAt), ms(l.ExpiresAt))
	if err != nil {
		return fmt.Errorf("insert preview link: %w", err)
	}
	return nil
}

func scanPreviewLink(r rowScanner) (*sandbox.PreviewLink, error) {
	var l sandbox.PreviewLink
	var created, expires int64
	if err := r.Scan(&l.ID, &l.SandboxID, &l.OwnerID, &l.Port, &l.TokenHash, &created, &expires); err != nil {
		return nil, err
	}
	l.CreatedAt, l.ExpiresAt = fromMS(created), fromMS(expires)
	return &l, nil
}

// GetPreviewLink returns one link or an error wrapping errs.ErrNotFound.
func (d *DB) GetPreviewLink(ctx context.Context, id string) (*sandbox.PreviewLink, error) {
	l, err := scanPreviewLink(d.queryRow(ctx, d.db, `SELECT `+previewLinkCols+` FROM preview_links WHERE id = ?`, id))
	if isNoRows(err) {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "preview link not found")
	}
	if err != nil {
		return nil, fmt.Errorf("read preview link: %w", err)
	}
	return l, nil
}

// ListPreviewLinks returns the links to one port of a sandbox that expire
// after now, newest first.
func (d *DB) ListPreviewLinks(ctx context.Context, sandboxID string, port int, now time.Time) ([]*sandbox.PreviewLink, error) {
	rows, err := d.query(ctx, d.db, `SELECT `+previewLinkCols+` FROM preview_links
		WHERE sandbox_id = ? AND port = ? AND expires_at > ? ORDER BY created_at DESC, id`, sandboxID, port, ms(now))
	if err != nil {
		return nil, fmt.Errorf("list preview links: %w", err)
	}
	defer rows.Close()
	out := []*sandbox.PreviewLink{}
	for rows.Next() {
		l, err := scanPreviewLink(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// DeletePreviewLink removes one link of a sandbox.
func (d *DB) DeletePreviewLink(ctx context.Context, sandboxID, id string) error {
	res, err := d.exec(ctx, d.db, `DELETE FROM preview_links WHERE sandbox_id = ? AND id = ?`, sandboxID, id)
	if err != nil {
		return fmt.Errorf("delete preview link: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "preview link not found")
	}
	return nil
}

// DeleteExpiredPreviewLinks removes the links that expired at or before now.
func (d *DB) DeleteExpiredPreviewLinks(ctx context.Context, now time.Time) error {
	if _, err := d.exec(ctx, d.db, `DELETE FROM preview_links WHERE expires_at <= ?`, ms(now)); err != nil {
		return fmt.Errorf("delete expired preview links: %w", err)
	}
	return nil
}
