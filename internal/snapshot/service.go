package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Index is the database index of versions the Service keeps (*store.DB).
type Index interface {
	InsertSnapshot(ctx context.Context, r Record) error
	GetSnapshot(ctx context.Context, id string) (Record, error)
	ListSnapshots(ctx context.Context, sandboxID string, limit int) ([]Record, error)
	DeleteSnapshotsByName(ctx context.Context, bucket, prefix string, names []string) error
}

// Buckets opens the store of a named S3 bucket (*s3.Opener through a small
// adapter). Errors for unusable names are errs.Invalid naming s3_bucket_name.
type Buckets interface {
	OpenBucket(ctx context.Context, bucket string) (blob.Store, error)
}

// ServiceDeps are the Service's dependencies.
type ServiceDeps struct {
	Snapshotter *Snapshotter
	Index       Index
	// DefaultStore holds the versions of sandboxes that name no bucket when
	// DefaultBucket is empty (the fs store under the data dir).
	DefaultStore blob.Store
	// Buckets opens S3 buckets; nil means S3 is not configured.
	Buckets Buckets
	// DefaultBucket, if set, is used (through Buckets) instead of
	// DefaultStore for sandboxes that name no bucket.
	DefaultBucket string
	// Drivers by name, the same map the sandbox Manager has: the Service
	// reads and restores workspaces through sandbox.WorkspaceDirer.
	Drivers map[string]sandbox.Driver
	// Retention applied after each snapshot (zero: keep everything).
	Retention Retention
	// Mirror also keeps the latest files as plain objects under the prefix.
	Mirror bool
	// OnTerminate takes a snapshot before a sandbox is terminated or
	// idle-stopped (the Manager's BeforeTerminate hook).
	OnTerminate bool
	Logger      *slog.Logger
	Now         func() time.Time
}

// Service ties snapshots to sandboxes: where a sandbox's versions live,
// taking and indexing them, restoring, and the sandbox lifecycle hooks.
type Service struct {
	d   ServiceDeps
	log *slog.Logger
}

// NewService returns a Service.
func NewService(d ServiceDeps) (*Service, error) {
	if d.Snapshotter == nil || d.Index == nil {
		return nil, errors.New("snapshot service: Snapshotter and Index are required")
	}
	if d.DefaultStore == nil && (d.DefaultBucket == "" || d.Buckets == nil) {
		return nil, errors.New("snapshot service: no default store")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Service{d: d, log: d.Logger}, nil
}

// where is a resolved storage location with its index coordinates.
type where struct {
	loc    Location
	bucket string
}

// Locate returns where a sandbox's versions live. A sandbox naming its own
// bucket uses s3_key_prefix as given; otherwise versions go to the server's
// default store under users/<owner>/, so users never share a prefix.
func (s *Service) locate(ctx context.Context, sb *sandbox.Sandbox) (where, error) {
	prefix, err := blob.ValidatePrefix("s3_key_prefix", sb.Spec.S3KeyPrefix)
	if err != nil {
		return where{}, err
	}
	bucket := sb.Spec.S3BucketName
	if bucket == "" {
		if prefix == "" {
			prefix = "sandboxes/" + sb.ID
		}
		prefix = "users/" + sb.OwnerID + "/" + prefix
		if s.d.DefaultBucket == "" {
			return where{loc: Location{Store: s.d.DefaultStore, Prefix: prefix, ID: "default:" + prefix}}, nil
		}
		bucket = s.d.DefaultBucket
	}
	st, err := s.bucket(ctx, bucket)
	if err != nil {
		return where{}, err
	}
	return where{loc: Location{Store: st, Prefix: prefix, ID: "s3:" + bucket + "/" + prefix}, bucket: bucket}, nil
}

func (s *Service) bucket(ctx context.Context, bucket string) (blob.Store, error) {
	if s.d.Buckets == nil {
		return nil, errs.Field("s3_bucket_name", "S3 is not configured on this server")
	}
	return s.d.Buckets.OpenBucket(ctx, bucket)
}

// recordLocation reopens the location a record was taken at.
func (s *Service) recordLocation(ctx context.Context, r Record) (Location, error) {
	if r.Bucket == "" {
		return Location{Store: s.d.DefaultStore, Prefix: r.Prefix, ID: "default:" + r.Prefix}, nil
	}
	st, err := s.bucket(ctx, r.Bucket)
	if err != nil {
		return Location{}, err
	}
	return Location{Store: st, Prefix: r.Prefix, ID: "s3:" + r.Bucket + "/" + r.Prefix}, nil
}

// access is how the Service reads and writes one sandbox's workspace: a
// host directory (sandbox.WorkspaceDirer) or tar streams
// (sandbox.Archiver, with sandbox.Files to clear it before a restore).
type access struct {
	dir   string
	ids   sandbox.IDMap // dir's user-namespace map
	arch  sandbox.Archiver
	files sandbox.Files
	ref   sandbox.Ref
}

// workspaceRoot is the workspace path inside a sandbox.
const workspaceRoot = "/workspace"

func (s *Service) access(sb *sandbox.Sandbox) (access, error) {
	drv, ok := s.d.Drivers[sb.Driver]
	if !ok {
		return access{}, errs.E(errs.Unavailable, "sandbox driver %q is not configured", sb.Driver)
	}
	if wd, ok := drv.(sandbox.WorkspaceDirer); ok {
		dir, ids, err := wd.WorkspaceDir(sb.Ref)
		if err != nil {
			return access{}, fmt.Errorf("workspace of %s: %w", sb.ID, err)
		}
		return access{dir: dir, ids: ids, ref: sb.Ref}, nil
	}
	arch, ok := drv.(sandbox.Archiver)
	if !ok {
		return access{}, errs.E(errs.Unavailable, "snapshots are not supported on the %s driver", sb.Driver)
	}
	files, _ := drv.(sandbox.Files)
	return access{arch: arch, files: files, ref: sb.Ref}, nil
}

// errAbandoned ends a tar pipe whose reader stopped early.
var errAbandoned = errors.New("snapshot: tar stream abandoned")

// readTar runs consume on the workspace as a tar stream.
func (a access) readTar(ctx context.Context, consume func(io.Reader) error) error {
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	var outErr error
	wg.Go(func() {
		outErr = a.arch.ArchiveOut(ctx, a.ref, workspaceRoot, pw)
		pw.CloseWithError(outErr)
	})
	err := consume(pr)
	pr.CloseWithError(errAbandoned)
	wg.Wait()
	if outErr != nil && !errors.Is(outErr, errAbandoned) {
		return fmt.Errorf("read workspace: %w", outErr)
	}
	return err
}

// writeTar empties the workspace and extracts what produce writes into it.
func (a access) writeTar(ctx context.Context, produce func(io.Writer) error) error {
	if a.files == nil {
		return errs.E(errs.Unavailable, "restore is not supported on this driver (no file operations)")
	}
	entries, err := a.files.ListDir(ctx, a.ref, workspaceRoot)
	if err != nil {
		return fmt.Errorf("list workspace: %w", err)
	}
	for _, e := range entries {
		if err := a.files.Remove(ctx, a.ref, workspaceRoot+"/"+e.Name); err != nil {
			return fmt.Errorf("clear workspace: %w", err)
		}
	}
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	var inErr error
	wg.Go(func() {
		inErr = a.arch.ArchiveIn(ctx, a.ref, workspaceRoot, pr)
		pr.CloseWithError(inErr)
	})
	err = produce(pw)
	pw.CloseWithError(err)
	wg.Wait()
	if err != nil {
		return err
	}
	if inErr != nil {
		return fmt.Errorf("write workspace: %w", inErr)
	}
	return nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "snap_" + hex.EncodeToString(b[:])
}

// Taken is a snapshot the Service took: its index record and statistics.
type Taken struct {
	Record
	Stats Stats `json:"stats"`
}

// Take snapshots the sandbox's workspace and indexes the version, then
// applies retention. A failure (e.g. S3 unreachable: errs.Dependency)
// leaves no version and does not affect the sandbox.
func (s *Service) Take(ctx context.Context, sb *sandbox.Sandbox, trigger Trigger, runID string) (Taken, error) {
	if !trigger.Valid() {
		return Taken{}, errs.E(errs.Invalid, "unknown snapshot trigger %q", trigger)
	}
	a, err := s.access(sb)
	if err != nil {
		return Taken{}, err
	}
	w, err := s.locate(ctx, sb)
	if err != nil {
		return Taken{}, err
	}
	var res *Result
	if a.dir != "" {
		res, err = s.d.Snapshotter.Snapshot(ctx, w.loc, a.dir, Options{Mirror: s.d.Mirror, IDs: a.ids})
	} else {
		err = a.readTar(ctx, func(r io.Reader) error {
			var terr error
			res, terr = s.d.Snapshotter.SnapshotTar(ctx, w.loc, r)
			return terr
		})
	}
	if err != nil {
		return Taken{}, fmt.Errorf("snapshot %s: %w", sb.ID, err)
	}
	rec := Record{
		ID: newID(), SandboxID: sb.ID, OwnerID: sb.OwnerID, Bucket: w.bucket, Prefix: w.loc.Prefix,
		Name: res.Manifest.Name, Trigger: trigger, RunID: runID, Files: res.Stats.Files,
		Bytes: res.Stats.Bytes, UploadedBytes: res.Stats.UploadedBytes, CreatedAt: s.d.Now().UTC(),
	}
	if err := s.d.Index.InsertSnapshot(ctx, rec); err != nil {
		return Taken{}, fmt.Errorf("index snapshot: %w", err)
	}
	s.log.InfoContext(ctx, "snapshot taken", "sandbox_id", sb.ID, "snapshot_id", rec.ID, "version", rec.Name,
		"trigger", trigger, "files", rec.Files, "uploaded_bytes", rec.UploadedBytes, "duration_ms", res.Stats.Duration.Milliseconds())
	if r := s.d.Retention; r.KeepLast > 0 || r.KeepFor > 0 {
		pr, err := s.d.Snapshotter.Prune(ctx, w.loc, r)
		if err == nil {
			err = s.d.Index.DeleteSnapshotsByName(ctx, w.bucket, w.loc.Prefix, pr.DeletedVersions)
		}
		if err != nil {
			s.log.WarnContext(ctx, "snapshot retention failed", "sandbox_id", sb.ID, "err", err)
		}
	}
	return Taken{Record: rec, Stats: res.Stats}, nil
}

// Get returns the owner's snapshot record; another owner's is not found.
func (s *Service) Get(ctx context.Context, ownerID, id string) (Record, error) {
	r, err := s.d.Index.GetSnapshot(ctx, id)
	if err != nil {
		return Record{}, err
	}
	if r.OwnerID != ownerID {
		return Record{}, fmt.Errorf("snapshot %s: %w", id, errs.ErrNotFound)
	}
	return r, nil
}

// List returns a sandbox's snapshots, newest first. The caller checks the
// sandbox belongs to the user.
func (s *Service) List(ctx context.Context, sandboxID string, limit int) ([]Record, error) {
	return s.d.Index.ListSnapshots(ctx, sandboxID, limit)
}

// Manifest reads the manifest of an indexed version.
func (s *Service) Manifest(ctx context.Context, r Record) (*Manifest, error) {
	loc, err := s.recordLocation(ctx, r)
	if err != nil {
		return nil, err
	}
	m, err := s.d.Snapshotter.Manifest(ctx, loc, r.Name)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, errs.Wrap(errs.NotFound, err, "the snapshot's version is gone from storage (pruned or deleted)")
	}
	return m, err
}

// Open returns a regular file of an indexed version: its entry and a
// reader of its content (checked against its hash by nobody: callers
// show it, they do not restore it). p is relative to the workspace.
func (s *Service) Open(ctx context.Context, r Record, p string) (Entry, io.ReadCloser, error) {
	m, err := s.Manifest(ctx, r)
	if err != nil {
		return Entry{}, nil, err
	}
	i := sort.Search(len(m.Entries), func(i int) bool { return m.Entries[i].Path >= p })
	if i == len(m.Entries) || m.Entries[i].Path != p {
		return Entry{}, nil, errs.E(errs.NotFound, "no %q in snapshot %s", p, r.ID)
	}
	e := m.Entries[i]
	if e.Type != File {
		return Entry{}, nil, errs.Field("path", fmt.Sprintf("%q is a %s in this snapshot, not a regular file", p, e.Type))
	}
	if e.Size == 0 {
		return e, io.NopCloser(strings.NewReader("")), nil
	}
	loc, err := s.recordLocation(ctx, r)
	if err != nil {
		return Entry{}, nil, err
	}
	rc, err := loc.Store.Get(ctx, loc.blobKey(e.SHA256))
	if errors.Is(err, errs.ErrNotFound) {
		return Entry{}, nil, errs.E(errs.Conflict, "the content of %q is missing from the store", p)
	}
	if err != nil {
		return Entry{}, nil, fmt.Errorf("read %s of snapshot %s: %w", p, r.ID, err)
	}
	return e, rc, nil
}

// Restore makes the sandbox's workspace an exact copy of the version. The
// caller checks ownership and that no run is active.
func (s *Service) Restore(ctx context.Context, sb *sandbox.Sandbox, r Record) (RestoreStats, error) {
	if r.OwnerID != sb.OwnerID {
		return RestoreStats{}, fmt.Errorf("snapshot %s: %w", r.ID, errs.ErrNotFound)
	}
	a, err := s.access(sb)
	if err != nil {
		return RestoreStats{}, err
	}
	loc, err := s.recordLocation(ctx, r)
	if err != nil {
		return RestoreStats{}, err
	}
	var st RestoreStats
	if a.dir != "" {
		st, err = s.d.Snapshotter.Restore(ctx, loc, r.Name, a.dir, RestoreOptions{IDs: a.ids})
	} else {
		// Check the version exists before clearing the workspace.
		var m *Manifest
		if m, err = s.d.Snapshotter.Manifest(ctx, loc, r.Name); err == nil {
			st = RestoreStats{Files: m.Files, DownloadedFiles: m.Files, DownloadedBytes: m.Bytes}
			err = a.writeTar(ctx, func(w io.Writer) error { return s.d.Snapshotter.RestoreTar(ctx, loc, r.Name, w) })
		}
	}
	if err != nil {
		if _, public := errs.Public(err); !public && errs.NoSpace(err) {
			// Restores write only into the sandbox: its own disk is full.
			return st, errs.Wrap(errs.TooLarge, fmt.Errorf("restore %s into %s: %w", r.ID, sb.ID, err),
				fmt.Sprintf("snapshot %s does not fit the sandbox's disk (disk_mb %d MiB); free space in the sandbox or create it with a larger disk_mb", r.ID, sb.Spec.DiskMB))
		}
		return st, fmt.Errorf("restore %s into %s: %w", r.ID, sb.ID, err)
	}
	return st, nil
}

// Hooks returns the sandbox Manager hooks: AfterCreate restores
// from_snapshot or imports init_from_s3; BeforeTerminate takes the final
// snapshot when OnTerminate is set.
func (s *Service) Hooks() sandbox.Hooks {
	return sandbox.Hooks{AfterCreate: s.afterCreate, BeforeTerminate: s.beforeTerminate}
}

func (s *Service) afterCreate(ctx context.Context, sb *sandbox.Sandbox) error {
	switch {
	case sb.Spec.FromSnapshot != "":
		r, err := s.Get(ctx, sb.OwnerID, sb.Spec.FromSnapshot)
		if errors.Is(err, errs.ErrNotFound) {
			return errs.Field("from_snapshot", "no such snapshot")
		}
		if err != nil {
			return err
		}
		_, err = s.Restore(ctx, sb, r)
		return err
	case sb.Spec.InitFromS3:
		a, err := s.access(sb)
		if err != nil {
			return err
		}
		w, err := s.locate(ctx, sb)
		if err != nil {
			return err
		}
		log := s.log.With("sandbox_id", sb.ID)
		var mu sync.Mutex
		last := time.Time{}
		progress := func(p Progress) {
			mu.Lock()
			defer mu.Unlock()
			if now := time.Now(); now.Sub(last) >= time.Second || p.FilesDone == p.FilesTotal {
				last = now
				log.InfoContext(ctx, "init_from_s3 progress", "files_done", p.FilesDone, "files_total", p.FilesTotal,
					"bytes_done", p.BytesDone, "bytes_total", p.BytesTotal)
				fmt.Fprintf(sandbox.ProgressFrom(ctx), "init_from_s3: %d/%d files, %d/%d bytes\n",
					p.FilesDone, p.FilesTotal, p.BytesDone, p.BytesTotal)
			}
		}
		var res ImportResult
		if a.dir != "" {
			res, err = s.d.Snapshotter.Import(ctx, w.loc, a.dir, ImportOptions{Progress: progress, IDs: a.ids})
		} else {
			err = a.writeTar(ctx, func(wr io.Writer) error {
				var ierr error
				res, ierr = s.d.Snapshotter.ImportTar(ctx, w.loc, wr, progress)
				return ierr
			})
		}
		if err != nil {
			return fmt.Errorf("init_from_s3: %w", err)
		}
		log.InfoContext(ctx, "init_from_s3 done", "mode", res.Mode, "version", res.Version, "files", res.Files, "bytes", res.Bytes)
		return nil
	}
	return nil
}

func (s *Service) beforeTerminate(ctx context.Context, sb *sandbox.Sandbox) error {
	if !s.d.OnTerminate {
		return nil
	}
	if _, err := s.access(sb); err != nil {
		return nil // nothing to snapshot on this driver
	}
	trigger := TriggerTerminate
	if strings.Contains(strings.ToLower(sb.Reason), "idle") {
		trigger = TriggerIdle
	}
	_, err := s.Take(ctx, sb, trigger, "")
	return err
}
