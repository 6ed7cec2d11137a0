package client

import (
	"context"
	"net/url"
	"strconv"
	"time"
)

// Snapshot is a stored version of a sandbox's workspace.
type Snapshot struct {
	ID            string    `json:"snapshot_id"`
	SandboxID     string    `json:"sandbox_id"`
	OwnerID       string    `json:"owner_id"`
	Bucket        string    `json:"bucket,omitempty"`
	Prefix        string    `json:"prefix"`
	Version       string    `json:"version"`
	Trigger       string    `json:"trigger"` // manual, run, terminate, ...
	RunID         string    `json:"run_id,omitempty"`
	FileCount     int       `json:"file_count"`
	Bytes         int64     `json:"bytes"`
	UploadedBytes int64     `json:"uploaded_bytes"`
	CreatedAt     time.Time `json:"created_at"`
}

// SnapshotStats says what taking a snapshot did.
type SnapshotStats struct {
	Files             int   `json:"files"`
	Dirs              int   `json:"dirs"`
	Symlinks          int   `json:"symlinks"`
	Skipped           int   `json:"skipped"`
	Bytes             int64 `json:"bytes"`
	HashedFiles       int   `json:"hashed_files"`
	UploadedBlobs     int   `json:"uploaded_blobs"`
	UploadedBytes     int64 `json:"uploaded_bytes"`
	DeduplicatedBytes int64 `json:"deduplicated_bytes"`
}

// TakenSnapshot is the answer to CreateSnapshot.
type TakenSnapshot struct {
	Snapshot
	Stats SnapshotStats `json:"stats"`
}

// SnapshotEntry is one path of a snapshot.
type SnapshotEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Mode   string `json:"mode"` // octal, e.g. "0755"
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Target string `json:"target,omitempty"`
}

// SnapshotDetail is a snapshot with one page of its file list.
type SnapshotDetail struct {
	Snapshot  Snapshot        `json:"snapshot"`
	Files     int             `json:"files"`
	Dirs      int             `json:"dirs"`
	Symlinks  int             `json:"symlinks"`
	Bytes     int64           `json:"bytes"`
	Entries   []SnapshotEntry `json:"entries"`
	NextAfter string          `json:"next_after,omitempty"`
}

// SnapshotDiff lists the paths that differ between two snapshots.
type SnapshotDiff struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
}

// RestoreResult is the answer to RestoreSnapshot.
type RestoreResult struct {
	SandboxID  string `json:"sandbox_id"`
	SnapshotID string `json:"snapshot_id"`
	Version    string `json:"version"`
	Restored   struct {
		Files           int   `json:"files"`
		DownloadedFiles int   `json:"downloaded_files"`
		DownloadedBytes int64 `json:"downloaded_bytes"`
		Removed         int   `json:"removed"`
	} `json:"restored"`
}

// CreateSnapshot snapshots a sandbox's workspace now.
func (c *Client) CreateSnapshot(ctx context.Context, sandboxID string) (*TakenSnapshot, error) {
	var out TakenSnapshot
	if err := c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(sandboxID)+"/snapshots", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSnapshots lists a sandbox's snapshots, newest first (limit 0 = the
// server's default).
func (c *Client) ListSnapshots(ctx context.Context, sandboxID string, limit int) ([]Snapshot, error) {
	p := "/sandbox/" + url.PathEscape(sandboxID) + "/snapshots"
	if limit > 0 {
		p += "?limit=" + strconv.Itoa(limit)
	}
	var out struct {
		Snapshots []Snapshot `json:"snapshots"`
	}
	if err := c.Do(ctx, "GET", p, nil, &out); err != nil {
		return nil, err
	}
	return out.Snapshots, nil
}

// GetSnapshot returns a snapshot and the page of its files after the path
// after ("" = from the first; limit 0 = the server's default).
func (c *Client) GetSnapshot(ctx context.Context, snapshotID, after string, limit int) (*SnapshotDetail, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	p := "/snapshots/" + url.PathEscape(snapshotID)
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out SnapshotDetail
	if err := c.Do(ctx, "GET", p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DiffSnapshots lists the paths added, removed and changed from one
// snapshot to another.
func (c *Client) DiffSnapshots(ctx context.Context, from, to string) (*SnapshotDiff, error) {
	var out SnapshotDiff
	if err := c.Do(ctx, "GET", "/snapshots/"+url.PathEscape(from)+"/diff/"+url.PathEscape(to), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RestoreSnapshot restores a snapshot into a sandbox's workspace, exactly.
func (c *Client) RestoreSnapshot(ctx context.Context, sandboxID, snapshotID string) (*RestoreResult, error) {
	var out RestoreResult
	if err := c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(sandboxID)+"/restore", map[string]string{"snapshot_id": snapshotID}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
