package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/snapshot"
)

// snapshotOps documents the snapshot routes.
var snapshotOps = []apiOp{
	{Method: "POST", Path: "/sandbox/{id}/snapshots", Summary: "Snapshot the sandbox's workspace now (only changed content is uploaded); the body is optional: {\"label\"} names the version", Request: takeSnapshotRequest{}, Response: snapshot.Taken{}, Storage: true, Errors: []int{409}},
	{Method: "GET", Path: "/sandbox/{id}/snapshots", Summary: "List the sandbox's snapshots, newest first (?limit)", Response: listSnapshotsResponse{}},
	{Method: "GET", Path: "/snapshots/{id}", Summary: "A snapshot: summary and its file list, paginated (?after=path&limit)", Response: snapshotDetail{}, Storage: true, Errors: []int{422}},
	{Method: "GET", Path: "/snapshots/{id}/diff/{other}", Summary: "Paths added, removed and changed from snapshot id to snapshot other", Response: snapshotDiff{}, Storage: true},
	{Method: "GET", Path: "/snapshots/{id}/file", Summary: "A regular file's content in a snapshot (raw bytes; ?path= relative to /workspace); for comparing versions of a file", Storage: true, Errors: []int{409, 422}},
	{Method: "POST", Path: "/sandbox/{id}/restore", Summary: "Restore a snapshot into the sandbox's workspace, exactly (409 while a run is active)", Request: restoreRequest{}, Response: restoreResponse{}, Storage: true, Errors: []int{409, 413}},
}

// takeSnapshotRequest is the optional body of POST /sandbox/{id}/snapshots.
type takeSnapshotRequest struct {
	// Label names the version ("before the refactor"): at most 100
	// characters, no control characters.
	Label string `json:"label,omitempty"`
}

// maxSnapshotLabel bounds a label's length in characters.
const maxSnapshotLabel = 100

type listSnapshotsResponse struct {
	Snapshots []snapshot.Record `json:"snapshots"`
}

// snapshotEntry is one path of a snapshot as the API shows it.
type snapshotEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Mode   string `json:"mode"` // octal, e.g. "0755"
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Target string `json:"target,omitempty"`
}

type snapshotDetail struct {
	Snapshot  snapshot.Record `json:"snapshot"`
	Files     int             `json:"files"`
	Dirs      int             `json:"dirs"`
	Symlinks  int             `json:"symlinks"`
	Bytes     int64           `json:"bytes"`
	Entries   []snapshotEntry `json:"entries"`
	NextAfter string          `json:"next_after,omitempty"`
}

type snapshotDiff struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
}

type restoreRequest struct {
	SnapshotID string `json:"snapshot_id"`
}

type restoreResponse struct {
	SandboxID  string                `json:"sandbox_id"`
	SnapshotID string                `json:"snapshot_id"`
	Version    string                `json:"version"`
	Restored   snapshot.RestoreStats `json:"restored"`
}

const (
	defaultSnapshotPage = 1000
	maxSnapshotPage     = 10000
)

func (s *server) mountSnapshots(r chi.Router) {
	r.Post("/sandbox/{id}/snapshots", s.api(s.handleTakeSnapshot))
	r.Get("/sandbox/{id}/snapshots", s.api(s.handleListSnapshots))
	r.Get("/snapshots/{id}", s.api(s.handleGetSnapshot))
	r.Get("/snapshots/{id}/diff/{other}", s.api(s.handleDiffSnapshots))
	r.Get("/snapshots/{id}/file", s.api(s.handleSnapshotFile))
	r.Post("/sandbox/{id}/restore", s.api(s.handleRestoreSnapshot))
}

// snapshotDeps returns what the snapshot routes need, or a 503.
func (s *server) snapshotDeps() (*snapshot.Service, *sandbox.Manager, error) {
	if s.deps.Snapshots == nil || s.deps.Sandboxes == nil {
		return nil, nil, errs.E(errs.Unavailable, "snapshots are not configured on this server")
	}
	return s.deps.Snapshots, s.deps.Sandboxes, nil
}

// activeRuns reports a sandbox's active agent run (*store.DB).
type activeRuns interface {
	ActiveRun(ctx context.Context, sandboxID string) (agent.Run, error)
}

// runningSandbox returns the user's sandbox, which must be running.
func runningSandbox(r *http.Request, m *sandbox.Manager) (*sandbox.Sandbox, error) {
	sb, err := m.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return nil, err
	}
	if sb.State != sandbox.Running {
		return nil, errs.E(errs.Conflict, "sandbox is %s, not running", sb.State)
	}
	return sb, nil
}

func (s *server) handleTakeSnapshot(w http.ResponseWriter, r *http.Request) error {
	svc, m, err := s.snapshotDeps()
	if err != nil {
		return err
	}
	// The body is optional (an empty POST takes an unlabelled snapshot).
	var req takeSnapshotRequest
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
	if err != nil {
		return errs.E(errs.Malformed, "request body too large or unreadable")
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(raw))
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	req.Label = strings.TrimSpace(req.Label)
	if utf8.RuneCountInString(req.Label) > maxSnapshotLabel || !utf8.ValidString(req.Label) || strings.IndexFunc(req.Label, unicode.IsControl) >= 0 {
		return errs.Field("label", fmt.Sprintf("at most %d characters, no control characters", maxSnapshotLabel))
	}
	sb, err := runningSandbox(r, m)
	if err != nil {
		return err
	}
	release := m.MarkBusy(sb.ID)
	defer release()
	taken, err := svc.Take(r.Context(), sb, snapshot.TriggerManual, "")
	if err != nil {
		return err
	}
	if req.Label != "" {
		if s.deps.Store == nil {
			return errs.E(errs.Unavailable, "snapshot labels need the database")
		}
		if err := s.deps.Store.SetSnapshotLabel(r.Context(), taken.ID, req.Label); err != nil {
			return err
		}
		taken.Label = req.Label
	}
	return writeJSON(w, http.StatusCreated, taken)
}

// handleSnapshotFile answers a regular file's content in a snapshot.
func (s *server) handleSnapshotFile(w http.ResponseWriter, r *http.Request) error {
	svc, _, err := s.snapshotDeps()
	if err != nil {
		return err
	}
	p := strings.TrimPrefix(path.Clean("/"+r.URL.Query().Get("path")), "/")
	p = strings.TrimPrefix(p, "workspace/")
	if r.URL.Query().Get("path") == "" || p == "" || p == "." {
		return errs.Field("path", "required: a file's path relative to /workspace")
	}
	rec, err := svc.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	e, rc, err := svc.Open(r.Context(), rec, p)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.FormatInt(e.Size, 10))
	w.Header().Set("X-Snapshot-SHA256", e.SHA256)
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
	return nil
}

func (s *server) handleListSnapshots(w http.ResponseWriter, r *http.Request) error {
	svc, m, err := s.snapshotDeps()
	if err != nil {
		return err
	}
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSnapshotPage {
			return errs.Field("limit", fmt.Sprintf("must be an integer from 1 to %d", maxSnapshotPage))
		}
		limit = n
	}
	sb, err := m.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	recs, err := svc.List(r.Context(), sb.ID, limit)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listSnapshotsResponse{Snapshots: recs})
}

func (s *server) handleGetSnapshot(w http.ResponseWriter, r *http.Request) error {
	svc, _, err := s.snapshotDeps()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit := defaultSnapshotPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSnapshotPage {
			return errs.Field("limit", fmt.Sprintf("must be an integer from 1 to %d", maxSnapshotPage))
		}
		limit = n
	}
	rec, err := svc.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	man, err := svc.Manifest(r.Context(), rec)
	if err != nil {
		return err
	}
	d := snapshotDetail{Snapshot: rec, Entries: []snapshotEntry{}}
	for _, e := range man.Entries {
		switch e.Type {
		case snapshot.File:
			d.Files++
			d.Bytes += e.Size
		case snapshot.Dir:
			d.Dirs++
		case snapshot.Symlink:
			d.Symlinks++
		}
	}
	after := q.Get("after")
	start := sort.Search(len(man.Entries), func(i int) bool { return man.Entries[i].Path > after })
	end := min(start+limit, len(man.Entries))
	for _, e := range man.Entries[start:end] {
		d.Entries = append(d.Entries, snapshotEntry{
			Path: e.Path, Type: string(e.Type), Mode: fmt.Sprintf("%04o", e.Mode),
			Size: e.Size, SHA256: e.SHA256, Target: e.Target,
		})
	}
	if end < len(man.Entries) {
		d.NextAfter = man.Entries[end-1].Path
	}
	return writeJSON(w, http.StatusOK, d)
}

func (s *server) handleDiffSnapshots(w http.ResponseWriter, r *http.Request) error {
	svc, _, err := s.snapshotDeps()
	if err != nil {
		return err
	}
	user := sandboxOwner(r)
	a, err := svc.Get(r.Context(), user, chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	b, err := svc.Get(r.Context(), user, chi.URLParam(r, "other"))
	if err == nil && b.SandboxID != a.SandboxID && currentUser(r).ID != user {
		// A share reaches one sandbox's snapshots, not all the owner's.
		err = errs.Wrap(errs.NotFound, errs.ErrNotFound, "snapshot not found")
	}
	if err != nil {
		return err
	}
	ma, err := svc.Manifest(r.Context(), a)
	if err != nil {
		return err
	}
	mb, err := svc.Manifest(r.Context(), b)
	if err != nil {
		return err
	}
	c := snapshot.Diff(ma, mb)
	return writeJSON(w, http.StatusOK, snapshotDiff{From: a.ID, To: b.ID, Added: c.Added, Removed: c.Removed, Changed: c.Changed})
}

func (s *server) handleRestoreSnapshot(w http.ResponseWriter, r *http.Request) error {
	svc, m, err := s.snapshotDeps()
	if err != nil {
		return err
	}
	var req restoreRequest
	if err := decodeJSONLimit(r, &req, s.deps.MaxJSONBody); err != nil {
		return err
	}
	if req.SnapshotID == "" {
		return errs.Field("snapshot_id", "required")
	}
	sb, err := runningSandbox(r, m)
	if err != nil {
		return err
	}
	rec, err := svc.Get(r.Context(), sb.OwnerID, req.SnapshotID)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return errs.E(errs.NotFound, "snapshot %q not found", clip(req.SnapshotID, 64))
		}
		return err
	}
	release := m.MarkBusy(sb.ID)
	defer release()
	if s.deps.Store != nil {
		var runs activeRuns = s.deps.Store
		if run, err := runs.ActiveRun(r.Context(), sb.ID); err == nil {
			return errs.E(errs.Conflict, "run %s is active in this sandbox; cancel it or wait before restoring", run.ID)
		} else if !errors.Is(err, errs.ErrNotFound) {
			return err
		}
	}
	st, err := svc.Restore(r.Context(), sb, rec)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, restoreResponse{SandboxID: sb.ID, SnapshotID: rec.ID, Version: rec.Name, Restored: st})
}
