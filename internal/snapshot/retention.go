package snapshot

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Retention says which versions to keep. A version is kept when it is among
// the last KeepLast or younger than KeepFor; the latest is always kept.
// Zero for both keeps everything.
type Retention struct {
	KeepLast int
	KeepFor  time.Duration
	// Grace protects blobs younger than this from deletion even when no kept
	// version names them: a concurrent snapshot may be about to (default 1h).
	Grace time.Duration
}

// PruneResult is what Prune deleted.
type PruneResult struct {
	DeletedVersions []string `json:"deleted_versions"`
	DeletedBlobs    int      `json:"deleted_blobs"`
	FreedBytes      int64    `json:"freed_bytes"`
}

// Prune deletes the versions r does not keep, then the blobs no kept
// version needs. Manifests go first, so a failure part-way leaves only
// unreferenced blobs behind, never a version with missing content.
func (s *Snapshotter) Prune(ctx context.Context, loc Location, r Retention) (PruneResult, error) {
	var res PruneResult
	if r.KeepLast <= 0 && r.KeepFor <= 0 {
		return res, nil
	}
	if r.Grace <= 0 {
		r.Grace = time.Hour
	}
	unlock := s.lock(loc)
	defer unlock()
	now := s.cfg.Now()
	versions, err := s.versions(ctx, loc)
	if err != nil {
		return res, err
	}
	var kept []string
	for i, name := range versions {
		t, _ := ParseVersionName(name)
		keep := i == len(versions)-1 ||
			r.KeepLast > 0 && i >= len(versions)-r.KeepLast ||
			r.KeepFor > 0 && now.Sub(t) < r.KeepFor
		if keep {
			kept = append(kept, name)
			continue
		}
		res.DeletedVersions = append(res.DeletedVersions, name)
	}
	if len(res.DeletedVersions) == 0 {
		return res, nil
	}
	need := map[string]bool{}
	for _, name := range kept {
		m, err := s.manifest(ctx, loc, name)
		if err != nil {
			return res, fmt.Errorf("prune: read kept version %s: %w", name, err)
		}
		for _, e := range m.Entries {
			if e.Type == File {
				need[e.SHA256] = true
			}
		}
	}
	for _, name := range res.DeletedVersions {
		if err := loc.Store.Delete(ctx, loc.versionKey(name)); err != nil {
			return res, fmt.Errorf("prune version %s: %w", name, err)
		}
	}
	cutoff := now.Add(-r.Grace)
	for in, err := range loc.Store.List(ctx, loc.blobsPrefix()) {
		if err != nil {
			return res, fmt.Errorf("prune: list blobs: %w", err)
		}
		sha := in.Key[strings.LastIndexByte(in.Key, '/')+1:]
		if need[sha] || in.ModTime.After(cutoff) {
			continue
		}
		if err := loc.Store.Delete(ctx, in.Key); err != nil {
			return res, fmt.Errorf("prune blob: %w", err)
		}
		res.DeletedBlobs++
		res.FreedBytes += in.Size
	}
	return res, nil
}
