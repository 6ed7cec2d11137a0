package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/snapshot"
)

const snapshotCols = `id, sandbox_id, owner_id, bucket, prefix, name, trigger_kind, run_id, file_count, bytes, uploaded_bytes, created_at, label`

// InsertSnapshot records one snapshot version in the index.
func (d *DB) InsertSnapshot(ctx context.Context, r snapshot.Record) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO snapshots (`+snapshotCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.SandboxID, r.OwnerID, r.Bucket, r.Prefix, r.Name, string(r.Trigger), r.RunID,
		int64(r.Files), r.Bytes, r.UploadedBytes, ms(r.CreatedAt), r.Label)
	if err != nil {
		if isUnique(err) {
			return errs.Wrap(errs.Conflict, err, "snapshot already recorded")
		}
		return fmt.Errorf("insert snapshot: %w", err)
	}
	return nil
}

func scanSnapshot(s rowScanner) (snapshot.Record, error) {
	var r snapshot.Record
	var trigger string
	var files, created int64
	err := s.Scan(&r.ID, &r.SandboxID, &r.OwnerID, &r.Bucket, &r.Prefix, &r.Name, &trigger, &r.RunID,
		&files, &r.Bytes, &r.UploadedBytes, &created, &r.Label)
	r.Trigger, r.Files, r.CreatedAt = snapshot.Trigger(trigger), int(files), fromMS(created)
	return r, err
}

// SetSnapshotLabel sets a snapshot's label (errs.ErrNotFound if absent).
func (d *DB) SetSnapshotLabel(ctx context.Context, id, label string) error {
	res, err := d.exec(ctx, d.db, `UPDATE snapshots SET label = ? WHERE id = ?`, label, id)
	if err != nil {
		return fmt.Errorf("label snapshot: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("snapshot %s: %w", id, errs.ErrNotFound)
	}
	return nil
}

// GetSnapshot returns one snapshot record (errs.ErrNotFound if absent).
func (d *DB) GetSnapshot(ctx context.Context, id string) (snapshot.Record, error) {
	r, err := scanSnapshot(d.queryRow(ctx, d.db, `SELECT `+snapshotCols+` FROM snapshots WHERE id = ?`, id))
	if isNoRows(err) {
		return r, fmt.Errorf("snapshot %s: %w", id, errs.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("get snapshot: %w", err)
	}
	return r, nil
}

// ListSnapshots returns a sandbox's snapshots, newest first, at most limit
// (0: all).
func (d *DB) ListSnapshots(ctx context.Context, sandboxID string, limit int) ([]snapshot.Record, error) {
	q := `SELECT ` + snapshotCols + ` FROM snapshots WHERE sandbox_id = ? ORDER BY created_at DESC, name DESC`
	args := []any{sandboxID}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	return d.listSnapshots(ctx, q, args...)
}

// ListSnapshotsAt returns the snapshots recorded for one bucket and prefix,
// oldest first (retention works on these).
func (d *DB) ListSnapshotsAt(ctx context.Context, bucket, prefix string) ([]snapshot.Record, error) {
	return d.listSnapshots(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE bucket = ? AND prefix = ? ORDER BY name`, bucket, prefix)
}

// LatestSnapshot returns a sandbox's newest snapshot (errs.ErrNotFound if none).
func (d *DB) LatestSnapshot(ctx context.Context, sandboxID string) (snapshot.Record, error) {
	rs, err := d.ListSnapshots(ctx, sandboxID, 1)
	if err != nil {
		return snapshot.Record{}, err
	}
	if len(rs) == 0 {
		return snapshot.Record{}, fmt.Errorf("snapshots of %s: %w", sandboxID, errs.ErrNotFound)
	}
	return rs[0], nil
}

func (d *DB) listSnapshots(ctx context.Context, q string, args ...any) ([]snapshot.Record, error) {
	rows, err := d.query(ctx, d.db, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer rows.Close()
	out := []snapshot.Record{}
	for rows.Next() {
		r, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("scan snapshot: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return out, nil
}

// DeleteSnapshotsByName removes index entries of pruned versions at one
// bucket and prefix. Missing names are ignored.
func (d *DB) DeleteSnapshotsByName(ctx context.Context, bucket, prefix string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	return d.inTx(ctx, func(tx *sql.Tx) error {
		for _, n := range names {
			if _, err := d.exec(ctx, tx, `DELETE FROM snapshots WHERE bucket = ? AND prefix = ? AND name = ?`, bucket, prefix, n); err != nil {
				return fmt.Errorf("delete snapshot %s: %w", n, err)
			}
		}
		return nil
	})
}

// BucketPrefix is one bucket prefix snapshots were written under.
type BucketPrefix struct {
	Bucket string
	Prefix string
}

// SnapshotLocations returns every distinct S3 bucket and prefix the index
// holds versions for (the default blob store's, bucket "", excluded): where
// this server writes, so where the multipart sweeper may look.
func (d *DB) SnapshotLocations(ctx context.Context) ([]BucketPrefix, error) {
	rows, err := d.query(ctx, d.db, `SELECT DISTINCT bucket, prefix FROM snapshots WHERE bucket <> '' ORDER BY bucket, prefix`)
	if err != nil {
		return nil, fmt.Errorf("list snapshot locations: %w", err)
	}
	defer rows.Close()
	out := []BucketPrefix{}
	for rows.Next() {
		var l BucketPrefix
		if err := rows.Scan(&l.Bucket, &l.Prefix); err != nil {
			return nil, fmt.Errorf("scan snapshot location: %w", classify(err))
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list snapshot locations: %w", classify(err))
	}
	return out, nil
}
