package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Config configures a Snapshotter.
type Config struct {
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time // default time.Now
	// Concurrency is how many files are read and uploaded at once (default 16).
	Concurrency int
	// SmallFile is the size up to which a file is read into memory once,
	// hashed and uploaded from memory (default 4 MiB). Larger files are
	// hashed in one pass and uploaded in a second, verified pass.
	SmallFile int64
}

// Snapshotter takes, restores, diffs and prunes snapshots. It is safe for
// concurrent use; snapshots and prunes of one location are serialised.
type Snapshotter struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	locks map[string]*sync.Mutex
	cache map[string]*Manifest // latest manifest per Location.ID
	bufs  sync.Pool
	large chan struct{} // semaphore: large-file uploads in flight
}

// New returns a Snapshotter.
func New(cfg Config) *Snapshotter {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.SmallFile <= 0 {
		cfg.SmallFile = 4 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Snapshotter{cfg: cfg, log: log, locks: map[string]*sync.Mutex{}, cache: map[string]*Manifest{},
		large: make(chan struct{}, 2)}
	s.bufs.New = func() any { b := make([]byte, cfg.SmallFile+1); return &b }
	return s
}

// Location is where a workspace's versions live: a store and a key prefix.
type Location struct {
	Store  blob.Store
	Prefix string // normalised, no trailing '/'; "" is the store's root
	// ID identifies store and prefix across calls (e.g. "s3:bucket/prefix")
	// for the manifest cache and per-location locking; default: the Store
	// value's identity and Prefix.
	ID string
}

func (l Location) id() string {
	if l.ID != "" {
		return l.ID
	}
	// Without an ID, only the very same store value shares cache and lock.
	return fmt.Sprintf("%p/%s", l.Store, l.Prefix)
}

func (l Location) area() string               { return blob.Join(l.Prefix, Area) }
func (l Location) versionsPrefix() string     { return l.area() + "/versions/" }
func (l Location) blobsPrefix() string        { return l.area() + "/blobs/" }
func (l Location) versionKey(n string) string { return l.versionsPrefix() + n + ".json.gz" }
func (l Location) blobKey(sha string) string  { return l.blobsPrefix() + sha[:2] + "/" + sha }

func (s *Snapshotter) lock(loc Location) func() {
	s.mu.Lock()
	m := s.locks[loc.id()]
	if m == nil {
		m = &sync.Mutex{}
		s.locks[loc.id()] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Options tunes one snapshot.
type Options struct {
	// Mirror also writes the latest files as plain objects under the
	// prefix (and deletes the plain objects of removed files).
	Mirror bool
	// IDs is the sandbox's user-namespace map: owners are recorded as the
	// sandbox sees them (IDs.FromHost of the host ids). Zero: identity.
	IDs sandbox.IDMap
}

// Stats describes one snapshot.
type Stats struct {
	Files         int           `json:"files"`
	Dirs          int           `json:"dirs"`
	Symlinks      int           `json:"symlinks"`
	Skipped       int           `json:"skipped"` // sockets, FIFOs, devices, non-UTF-8 names, files deleted mid-walk
	Bytes         int64         `json:"bytes"`   // total file content
	HashedFiles   int           `json:"hashed_files"`
	UploadedBlobs int           `json:"uploaded_blobs"`
	UploadedBytes int64         `json:"uploaded_bytes"`
	DedupedBytes  int64         `json:"deduplicated_bytes"` // file bytes not uploaded
	Duration      time.Duration `json:"-"`
}

// Result is a completed snapshot.
type Result struct {
	Manifest *Manifest
	Stats    Stats
	// MirrorErr is set when the version was stored but the mirror update failed.
	MirrorErr error
}

// errChanged marks a file that changed while it was being read.
var errChanged = errors.New("file changed while being read")

// Snapshot records dir as a new version at loc. Only content the store
// does not hold is uploaded; the manifest is written last. On error no
// version becomes visible. dir's content is the sandbox's and is read
// through a tree: an entry that changes under the snapshot (e.g. a
// directory swapped for a symlink) is left out of the version.
func (s *Snapshotter) Snapshot(ctx context.Context, loc Location, dir string, opts Options) (res *Result, err error) {
	start := time.Now()
	defer func() {
		var st Stats
		if res != nil {
			st = res.Stats
		}
		s.cfg.Metrics.snapshotDone(time.Since(start).Seconds(), st, err)
	}()
	unlock := s.lock(loc)
	defer unlock()

	top, err := openTree(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot source: %w", err)
	}
	defer top.Close()
	versions, err := s.versions(ctx, loc)
	if err != nil {
		return nil, err
	}
	var prev *Manifest
	if len(versions) > 0 {
		if prev, err = s.manifest(ctx, loc, versions[len(versions)-1]); err != nil {
			return nil, fmt.Errorf("read previous version: %w", err)
		}
	}

	startedAt := s.cfg.Now()
	m := &Manifest{Format: FormatVersion, StartedAt: startedAt.UTC()}
	var st Stats
	todo, err := s.walk(ctx, top, prev, m, &st, opts.IDs)
	if err != nil {
		return nil, err
	}

	up := &uploader{s: s, loc: loc, known: map[string]bool{}, flights: map[string]*flight{}}
	if prev != nil {
		for _, e := range prev.Entries {
			if e.Type == File {
				up.known[e.SHA256] = true // the latest version is never pruned
			}
		}
	}
	if len(todo) > 64 && (prev == nil || len(todo) > 1000) {
		// Many candidates and few of their blobs known: one listing (a
		// request per 1000 blobs) is cheaper than a Head per file.
		if err := up.listBlobs(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.readFiles(ctx, top, up, m.Entries, todo); err != nil {
		return nil, err
	}
	// Drop files that vanished while being read.
	m.Entries = slices.DeleteFunc(m.Entries, func(e Entry) bool { return e.Type == "" })
	// A directory that vanished mid-walk leaves orphans; drop them.
	m.Entries = dropOrphans(m.Entries)
	st.Files, st.Bytes = 0, 0
	for _, e := range m.Entries {
		if e.Type == File {
			st.Files++
			st.Bytes += e.Size
		}
	}
	st.HashedFiles = len(todo)
	st.UploadedBlobs = int(up.blobs.Load())
	st.UploadedBytes = up.bytes.Load()
	st.DedupedBytes = max(st.Bytes-st.UploadedBytes, 0)
	m.Files, m.Bytes = st.Files, st.Bytes

	if sy, ok := loc.Store.(blob.Syncer); ok {
		if err := sy.Sync(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.writeManifest(ctx, loc, versions, m); err != nil {
		return nil, err
	}
	st.Duration = time.Since(start)
	res = &Result{Manifest: m, Stats: st}
	if opts.Mirror {
		if err := s.mirror(ctx, loc, top, prev, m); err != nil {
			s.log.WarnContext(ctx, "snapshot mirror failed", "err", err)
			res.MirrorErr = err
		}
	}
	return res, nil
}

func dropOrphans(es []Entry) []Entry {
	dirs := map[string]bool{"": true}
	out := es[:0]
	for _, e := range es {
		if !dirs[parentOf(e.Path)] {
			continue
		}
		if e.Type == Dir {
			dirs[e.Path] = true
		}
		out = append(out, e)
	}
	return out
}

// statCacheMargin is how far before a manifest's StartedAt a file's mtime
// must be for the stat cache to trust it (coarse filesystem timestamps).
const statCacheMargin = time.Second

// walk fills m.Entries from the tree and returns the indexes of the files
// whose content must be read (not vouched for by prev's stat cache).
func (s *Snapshotter) walk(ctx context.Context, top *tree, prev *Manifest, m *Manifest, st *Stats, ids sandbox.IDMap) ([]int, error) {
	var cache map[string]*Entry
	var trustBefore int64
	if prev != nil {
		cache = make(map[string]*Entry, len(prev.Entries))
		for i := range prev.Entries {
			if prev.Entries[i].Type == File && prev.Entries[i].Inode != 0 {
				cache[prev.Entries[i].Path] = &prev.Entries[i]
			}
		}
		trustBefore = prev.StartedAt.Add(-statCacheMargin).UnixNano()
	}
	var todo []int
	visit := func(d *tree, rel string, info fs.FileInfo) (bool, error) {
		if !utf8.ValidString(rel) || strings.ContainsRune(rel, 0) || len(rel) > 4096 {
			st.Skipped++
			s.log.WarnContext(ctx, "snapshot skips a non-UTF-8 or overlong name", "path", strings.ToValidUTF8(rel[:min(len(rel), 256)], "?"))
			return false, nil
		}
		e := Entry{Path: rel, Mode: unixMode(info.Mode()), MTime: info.ModTime().UnixNano()}
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			e.UID, e.GID = ids.FromHost(sys.Uid), ids.FromHost(sys.Gid)
		}
		switch {
		case info.IsDir():
			e.Type = Dir
			st.Dirs++
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := d.readlink(info.Name())
			if err != nil {
				// Gone, or no longer a symlink (EINVAL): changed under us.
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EINVAL) {
					st.Skipped++
					return false, nil
				}
				return false, fmt.Errorf("snapshot readlink %s: %w", rel, err)
			}
			e.Type, e.Target, e.Mode = Symlink, t, 0o777
			st.Symlinks++
		case info.Mode().IsRegular():
			e.Type, e.Size = File, info.Size()
			setStat(&e, info)
			if c := cache[rel]; c != nil && c.Size == e.Size && c.MTime == e.MTime && c.CTime == e.CTime &&
				c.Inode == e.Inode && c.MTime < trustBefore {
				e.SHA256 = c.SHA256
			} else {
				todo = append(todo, len(m.Entries))
			}
		default:
			st.Skipped++
			return false, nil
		}
		m.Entries = append(m.Entries, e)
		return e.Type == Dir, nil
	}
	skip := func(rel string, info fs.FileInfo, err error) {
		st.Skipped++
		// A directory that could not be entered (it changed since it was
		// seen) is left out; nothing below it was visited, so its entry is
		// the last one.
		if info != nil && info.IsDir() {
			if n := len(m.Entries); n > 0 && m.Entries[n-1].Path == rel {
				m.Entries = m.Entries[:n-1]
				st.Dirs--
			}
		}
	}
	if err := top.walk(ctx, visit, skip); err != nil {
		return nil, fmt.Errorf("snapshot walk: %w", err)
	}
	// The walk's order is by name within each directory, which is not quite
	// the byte order of whole paths ("a-b" sorts before "a/b"). Sort once,
	// keeping todo pointing at the same entries.
	if !slices.IsSortedFunc(m.Entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) }) {
		need := make(map[string]bool, len(todo))
		for _, i := range todo {
			need[m.Entries[i].Path] = true
		}
		sortEntries(m.Entries)
		todo = todo[:0]
		for i, e := range m.Entries {
			if need[e.Path] {
				todo = append(todo, i)
			}
		}
	}
	return todo, nil
}

func setStat(e *Entry, info fs.FileInfo) {
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		e.Inode = sys.Ino
		e.CTime = sys.Ctim.Nano()
	}
}

func sameStat(a, b fs.FileInfo) bool {
	if a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) {
		return false
	}
	sa, oka := a.Sys().(*syscall.Stat_t)
	sb, okb := b.Sys().(*syscall.Stat_t)
	return !oka || !okb || sa.Ctim == sb.Ctim && sa.Ino == sb.Ino
}

// uploader stores the blobs of one snapshot, each at most once.
type uploader struct {
	s       *Snapshotter
	loc     Location
	mu      sync.Mutex
	known   map[string]bool // blobs the store holds
	listed  bool            // known is complete: absent means absent
	flights map[string]*flight
	blobs   atomic.Int64
	bytes   atomic.Int64
}

type flight struct {
	done chan struct{} // closed by the uploader that created the flight
	err  error
}

func (u *uploader) listBlobs(ctx context.Context) error {
	for in, err := range u.loc.Store.List(ctx, u.loc.blobsPrefix()) {
		if err != nil {
			return fmt.Errorf("list stored blobs: %w", err)
		}
		sha := in.Key[strings.LastIndexByte(in.Key, '/')+1:]
		if isHexSHA(sha) {
			u.known[sha] = true
		}
	}
	u.listed = true
	return nil
}

// headThreshold is the size above which a blob not known to exist is
// looked up (Head) before it is uploaded.
const headThreshold = 128 << 10

// ensure makes sure the blob sha (of size bytes) is stored, calling put at
// most once across concurrent callers with the same content.
func (u *uploader) ensure(ctx context.Context, sha string, size int64, put func(key string) (int64, error)) error {
	for {
		u.mu.Lock()
		if u.known[sha] {
			u.mu.Unlock()
			return nil
		}
		if f := u.flights[sha]; f != nil {
			u.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if f.err == nil {
				return nil
			}
			continue // the other upload failed; try ours
		}
		f := &flight{done: make(chan struct{})}
		u.flights[sha] = f
		listed := u.listed
		u.mu.Unlock()

		f.err = u.store(ctx, sha, size, listed, put)
		u.mu.Lock()
		delete(u.flights, sha)
		if f.err == nil {
			u.known[sha] = true
		}
		u.mu.Unlock()
		close(f.done)
		return f.err
	}
}

func (u *uploader) store(ctx context.Context, sha string, size int64, listed bool, put func(string) (int64, error)) error {
	key := u.loc.blobKey(sha)
	// A small blob is cheaper to put again than to ask about first; a
	// content-addressed overwrite changes nothing.
	if !listed && size > headThreshold {
		_, err := u.loc.Store.Head(ctx, key)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("check blob: %w", err)
		}
	}
	n, err := put(key)
	if err != nil {
		return err
	}
	u.blobs.Add(1)
	u.bytes.Add(n)
	return nil
}

// readFiles reads and stores the files entries[todo], several at once.
// Files are opened relative to a handle on their directory, resolved once
// per run of files sharing it; a file whose directory changed under us
// (or vanished) is left out of the version.
func (s *Snapshotter) readFiles(ctx context.Context, top *tree, up *uploader, entries []Entry, todo []int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	c := &cursor{top: top}
	defer c.Close()
	for _, i := range todo {
		e := &entries[i]
		d, err := c.dir(parentOf(e.Path))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMoved) {
				e.Type = ""
				continue
			}
			g.Wait()
			return fmt.Errorf("snapshot %s: %w", e.Path, err)
		}
		d = d.hold()
		g.Go(func() error {
			defer d.Close()
			return up.file(gctx, d, e)
		})
	}
	return g.Wait()
}

// file reads one file, records its hash and size, and stores its blob.
// A file that changes while being read is read again (three attempts).
func (u *uploader) file(ctx context.Context, d *tree, e *Entry) error {
	name := baseOf(e.Path)
	for attempt := 0; attempt < 3; attempt++ {
		err := u.fileOnce(ctx, d, name, e)
		if errors.Is(err, errChanged) {
			continue
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMoved) {
			e.Type = "" // deleted or replaced (e.g. by a symlink) mid-snapshot: leave it out
			return nil
		}
		return err
	}
	return errs.E(errs.Conflict, "snapshot: file %q kept changing while it was being read", e.Path)
}

func (u *uploader) fileOnce(ctx context.Context, d *tree, name string, e *Entry) error {
	f, before, err := d.openFile(name)
	if err != nil {
		return err
	}
	defer f.Close()
	bp := u.s.bufs.Get().(*[]byte)
	defer u.s.bufs.Put(bp)
	buf := *bp
	small := int64(len(buf) - 1)
	if before.Size() <= small {
		n, err := io.ReadFull(f, buf)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return fmt.Errorf("read %s: %w", e.Path, err)
		}
		after, err := f.Stat()
		if err != nil {
			return err
		}
		if int64(n) > small || int64(n) != after.Size() || !sameStat(before, after) {
			return errChanged
		}
		sum := sha256.Sum256(buf[:n])
		sha := hex.EncodeToString(sum[:])
		if err := u.ensure(ctx, sha, int64(n), func(key string) (int64, error) {
			return int64(n), u.loc.Store.Put(ctx, key, bytes.NewReader(buf[:n]), int64(n))
		}); err != nil {
			return fmt.Errorf("store %s: %w", e.Path, err)
		}
		e.SHA256, e.Size, e.MTime = sha, int64(n), after.ModTime().UnixNano()
		setStat(e, after)
		return nil
	}
	// Large file: hash, then upload in a second pass that checks it reads
	// the same bytes, so the blob always matches its key.
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, buf)
	if err != nil {
		return fmt.Errorf("read %s: %w", e.Path, err)
	}
	after, err := f.Stat()
	if err != nil {
		return err
	}
	if n != after.Size() || !sameStat(before, after) {
		return errChanged
	}
	sha := hex.EncodeToString(h.Sum(nil))
	if err := u.ensure(ctx, sha, n, func(key string) (int64, error) {
		// Each large upload buffers parts in memory: bound how many run at once.
		select {
		case u.s.large <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		defer func() { <-u.s.large }()
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		vr := &verifyReader{r: f, h: sha256.New(), want: sha, left: n}
		return n, u.loc.Store.Put(ctx, key, vr, -1)
	}); err != nil {
		if errors.Is(err, errChanged) {
			return errChanged
		}
		return fmt.Errorf("store %s: %w", e.Path, err)
	}
	e.SHA256, e.Size, e.MTime = sha, n, after.ModTime().UnixNano()
	setStat(e, after)
	return nil
}

// verifyReader yields exactly left bytes whose SHA-256 is want; otherwise
// it fails with errChanged instead of ending, so the Put is abandoned.
type verifyReader struct {
	r    io.Reader
	h    hash.Hash
	want string
	left int64
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.left == 0 {
		var one [1]byte
		if n, _ := v.r.Read(one[:]); n > 0 {
			return 0, errChanged
		}
		if hex.EncodeToString(v.h.Sum(nil)) != v.want {
			return 0, errChanged
		}
		return 0, io.EOF
	}
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.left -= int64(n)
	if err == io.EOF {
		if v.left > 0 {
			return n, errChanged
		}
		err = nil
	}
	return n, err
}

// writeManifest names the version (after every existing one, unique even
// within one millisecond) and stores its manifest: the commit point.
func (s *Snapshotter) writeManifest(ctx context.Context, loc Location, versions []string, m *Manifest) error {
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	if len(versions) > 0 {
		if last, err := ParseVersionName(versions[len(versions)-1]); err == nil && !now.After(last) {
			now = last.Add(time.Millisecond)
		}
	}
	for {
		name := VersionName(now)
		_, err := loc.Store.Head(ctx, loc.versionKey(name))
		if errors.Is(err, errs.ErrNotFound) {
			m.Name = name
			break
		}
		if err != nil {
			return fmt.Errorf("check version name: %w", err)
		}
		now = now.Add(time.Millisecond) // taken by a concurrent writer elsewhere
	}
	m.CreatedAt = s.cfg.Now().UTC()
	b, err := m.encodeBytes()
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	if err := loc.Store.Put(ctx, loc.versionKey(m.Name), bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	s.mu.Lock()
	s.cache[loc.id()] = m
	s.mu.Unlock()
	return nil
}

// Versions lists the version names at loc, oldest first.
func (s *Snapshotter) Versions(ctx context.Context, loc Location) ([]string, error) {
	return s.versions(ctx, loc)
}

func (s *Snapshotter) versions(ctx context.Context, loc Location) ([]string, error) {
	var names []string
	pfx := loc.versionsPrefix()
	for in, err := range loc.Store.List(ctx, pfx) {
		if err != nil {
			return nil, fmt.Errorf("list versions: %w", err)
		}
		name, ok := strings.CutSuffix(strings.TrimPrefix(in.Key, pfx), ".json.gz")
		if !ok {
			continue
		}
		if _, err := ParseVersionName(name); err == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Manifest reads one version's manifest (errs.ErrNotFound if absent).
func (s *Snapshotter) Manifest(ctx context.Context, loc Location, name string) (*Manifest, error) {
	if _, err := ParseVersionName(name); err != nil {
		return nil, err
	}
	return s.manifest(ctx, loc, name)
}

func (s *Snapshotter) manifest(ctx context.Context, loc Location, name string) (*Manifest, error) {
	s.mu.Lock()
	c := s.cache[loc.id()]
	s.mu.Unlock()
	if c != nil && c.Name == name {
		return c, nil
	}
	rc, err := loc.Store.Get(ctx, loc.versionKey(name))
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, fmt.Errorf("snapshot version %s: %w", name, errs.ErrNotFound)
		}
		return nil, fmt.Errorf("read manifest %s: %w", name, err)
	}
	defer rc.Close()
	m, err := DecodeManifest(rc)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	if m.Name != name {
		return nil, errs.E(errs.Invalid, "manifest %s names itself %q", name, m.Name)
	}
	s.mu.Lock()
	if old := s.cache[loc.id()]; old == nil || old.Name <= name {
		s.cache[loc.id()] = m
	}
	s.mu.Unlock()
	return m, nil
}

// mirror writes the files that changed since prev as plain objects under
// the prefix and deletes the plain objects of removed files. Files are
// read through the tree, as the snapshot read them; one that changed
// under us since is not mirrored.
func (s *Snapshotter) mirror(ctx context.Context, loc Location, top *tree, prev, m *Manifest) error {
	ch := Diff(prev, m)
	byPath := make(map[string]Entry, len(m.Entries))
	for _, e := range m.Entries {
		byPath[e.Path] = e
	}
	var prevFiles map[string]bool
	if prev != nil {
		prevFiles = map[string]bool{}
		for _, e := range prev.Entries {
			if e.Type == File {
				prevFiles[e.Path] = true
			}
		}
	}
	skip := func(p string) bool { return p == Area || strings.HasPrefix(p, Area+"/") }
	for _, p := range append(slices.Clone(ch.Removed), ch.Changed...) {
		if prevFiles[p] && byPath[p].Type != File && !skip(p) {
			if err := loc.Store.Delete(ctx, blob.Join(loc.Prefix, p)); err != nil {
				return err
			}
		}
	}
	put := slices.Concat(ch.Added, ch.Changed)
	slices.Sort(put) // files sharing a directory in a row, for the cursor
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	c := &cursor{top: top}
	defer c.Close()
	for _, p := range put {
		if e := byPath[p]; e.Type != File || skip(p) {
			continue
		}
		d, err := c.dir(parentOf(p))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMoved) {
			continue
		}
		if err != nil {
			g.Wait()
			return err
		}
		d = d.hold()
		g.Go(func() error {
			defer d.Close()
			f, _, err := d.openFile(baseOf(p))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMoved) {
					return nil
				}
				return err
			}
			defer f.Close()
			return loc.Store.Put(gctx, blob.Join(loc.Prefix, p), f, -1)
		})
	}
	return g.Wait()
}
