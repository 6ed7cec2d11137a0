package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/snapshot"
)

const largeSize = 11<<20 + 333 // above the 5 MiB multipart threshold the S3 tests use

func buildTree(t *testing.T, dir string) {
	write(t, dir, "README.md", []byte("# hello\n"), 0o644)
	write(t, dir, "bin/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write(t, dir, "src/main.go", []byte("package main\n"), 0o600)
	write(t, dir, "src/dup-a.txt", []byte("same content"), 0o644)
	write(t, dir, "src/dup-b.txt", []byte("same content"), 0o644)
	write(t, dir, "ünïcödé dir/file with spaces.txt", []byte("ü"), 0o644)
	write(t, dir, "日本語/ファイル.txt", []byte("こんにちは"), 0o640)
	write(t, dir, "empty-file", nil, 0o644)
	write(t, dir, "big/large.bin", pseudoRandom(largeSize, 1), 0o644)
	write(t, dir, "a-b", []byte("sorts before a/b"), 0o644)
	write(t, dir, "a/b", []byte("inside a"), 0o644)
	write(t, dir, ".claude/projects/x/session.jsonl", []byte(`{"type":"user"}`+"\n"), 0o600)
	must(t, os.MkdirAll(filepath.Join(dir, "empty/nested/dir"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "private"), 0o700))
	write(t, dir, "ro/file", []byte("in a read-only dir"), 0o444)
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o555))
	must(t, os.Symlink("../README.md", filepath.Join(dir, "src/link-rel")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "link-abs-outside")))
	must(t, os.Symlink("does/not/exist", filepath.Join(dir, "dangling")))
	must(t, os.Symlink("src", filepath.Join(dir, "dirlink")))
	if os.Geteuid() == 0 { // owners are restored when the server runs as root
		must(t, os.Lchown(filepath.Join(dir, "README.md"), 1000, 1000))
		must(t, os.Lchown(filepath.Join(dir, "dangling"), 1001, 1002))
		must(t, os.Lchown(filepath.Join(dir, "empty"), 1003, 1003))
	}
}

func mutateTree(t *testing.T, dir string) {
	must(t, os.Remove(filepath.Join(dir, "src/main.go")))
	must(t, os.Chmod(filepath.Join(dir, "README.md"), 0o755))
	write(t, dir, "bin/run.sh", []byte("#!/bin/sh\necho changed\n"), 0o755)
	must(t, os.Remove(filepath.Join(dir, "a-b")))
	must(t, os.Mkdir(filepath.Join(dir, "a-b"), 0o750)) // file -> dir
	write(t, dir, "a-b/inner", []byte("x"), 0o644)
	must(t, os.RemoveAll(filepath.Join(dir, "empty/nested")))
	must(t, os.Remove(filepath.Join(dir, "dirlink")))
	must(t, os.Symlink("bin", filepath.Join(dir, "dirlink")))
	write(t, dir, "new/file.txt", []byte("new"), 0o644)
	write(t, dir, "big/large.bin", pseudoRandom(largeSize, 2), 0o644)
}

func TestRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store := blob.NewCounting(b.open(t))
		loc := snapshot.Location{Store: store, Prefix: "users/u1/ws"}
		s := snapshot.New(snapshot.Config{Concurrency: 4})
		src := filepath.Join(t.TempDir(), "ws")
		must(t, os.Mkdir(src, 0o755))
		buildTree(t, src)
		tree1 := describe(t, src)

		r1, err := s.Snapshot(ctx, loc, src, snapshot.Options{})
		if err != nil {
			t.Fatalf("snapshot 1: %v", err)
		}
		if r1.Stats.UploadedBlobs != r1.Stats.Files-1 { // two files share content
			t.Errorf("uploaded %d blobs for %d files with one duplicate", r1.Stats.UploadedBlobs, r1.Stats.Files)
		}
		mutateTree(t, src)
		tree2 := describe(t, src)
		r2, err := s.Snapshot(ctx, loc, src, snapshot.Options{})
		if err != nil {
			t.Fatalf("snapshot 2: %v", err)
		}
		if r2.Manifest.Name <= r1.Manifest.Name {
			t.Errorf("version names not increasing: %s then %s", r1.Manifest.Name, r2.Manifest.Name)
		}
		// Changed: run.sh, a-b/inner, new/file.txt, large.bin.
		if r2.Stats.UploadedBlobs != 4 {
			t.Errorf("second snapshot uploaded %d blobs, want 4", r2.Stats.UploadedBlobs)
		}

		// Restore v1 into a fresh dir, then in place over the mutated tree.
		fresh := filepath.Join(t.TempDir(), "fresh")
		if _, err := s.Restore(ctx, loc, r1.Manifest.Name, fresh, snapshot.RestoreOptions{}); err != nil {
			t.Fatalf("restore v1 fresh: %v", err)
		}
		sameTree(t, tree1, fresh)
		st, err := s.Restore(ctx, loc, r1.Manifest.Name, src, snapshot.RestoreOptions{})
		if err != nil {
			t.Fatalf("restore v1 in place: %v", err)
		}
		sameTree(t, tree1, src)
		if st.Removed == 0 {
			t.Errorf("in-place restore removed nothing, want the paths v1 lacks removed")
		}
		if st.DownloadedFiles >= st.Files {
			t.Errorf("in-place restore downloaded %d of %d files, want unchanged files kept", st.DownloadedFiles, st.Files)
		}
		// And forward again to v2 with a fresh Snapshotter (no cache).
		s2 := snapshot.New(snapshot.Config{})
		if _, err := s2.Restore(ctx, loc, r2.Manifest.Name, src, snapshot.RestoreOptions{}); err != nil {
			t.Fatalf("restore v2: %v", err)
		}
		sameTree(t, tree2, src)

		versions, err := s2.Versions(ctx, loc)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{r1.Manifest.Name, r2.Manifest.Name}, versions); diff != "" {
			t.Errorf("versions (-want +got):\n%s", diff)
		}
		d := snapshot.Diff(r1.Manifest, r2.Manifest)
		want := snapshot.Changes{
			Added:   []string{"a-b/inner", "new", "new/file.txt"},
			Removed: []string{"empty/nested", "empty/nested/dir", "src/main.go"},
			Changed: []string{"README.md", "a-b", "big/large.bin", "bin/run.sh", "dirlink"},
		}
		if diff := cmp.Diff(want, d); diff != "" {
			t.Errorf("Diff (-want +got):\n%s", diff)
		}
	})
}

func TestDedupCounters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		// 10,000 files on fs; fewer on S3, where the benchmarks cover 10,000.
		n := 10000
		if b.name == "s3" {
			n = 2000
		}
		store := blob.NewCounting(b.open(t))
		loc := snapshot.Location{Store: store, Prefix: "p"}
		clock := &fakeClock{t: time.Now()}
		s := snapshot.New(snapshot.Config{Now: clock.Now, Concurrency: 16})
		dir := t.TempDir()
		for i := range n {
			write(t, dir, fmt.Sprintf("d%02d/f%05d.txt", i%100, i), fmt.Appendf(nil, "file %d\n", i), 0o644)
		}
		// Files are older than the snapshot, as in real use; the stat cache
		// only trusts mtimes before the previous snapshot began.
		clock.Add(time.Hour)
		start := time.Now()
		r1, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("first snapshot of %d files: %v", n, time.Since(start))
		if r1.Stats.UploadedBlobs != n || r1.Stats.Files != n {
			t.Fatalf("first snapshot: %d blobs for %d files, want %d", r1.Stats.UploadedBlobs, r1.Stats.Files, n)
		}
		before := store.Stats()
		clock.Add(time.Minute)
		start = time.Now()
		r2, err := snapshot.New(snapshot.Config{Now: clock.Now}).Snapshot(ctx, loc, dir, snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("no-change snapshot of %d files (fresh snapshotter): %v", n, time.Since(start))
		after := store.Stats()
		// Exactly the manifest: no content.
		if got := after.PutObjects - before.PutObjects; got != 1 {
			t.Errorf("no-change snapshot put %d objects, want 1 (the manifest)", got)
		}
		if r2.Stats.UploadedBytes != 0 || r2.Stats.HashedFiles != 0 {
			t.Errorf("no-change snapshot: uploaded %d bytes, hashed %d files; want 0, 0", r2.Stats.UploadedBytes, r2.Stats.HashedFiles)
		}
		write(t, dir, "d07/f00007.txt", []byte("changed!\n"), 0o644)
		clock.Add(time.Minute)
		before = store.Stats()
		r3, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		after = store.Stats()
		if got := after.PutObjects - before.PutObjects; got != 2 {
			t.Errorf("one-change snapshot put %d objects, want 2 (one blob + the manifest)", got)
		}
		if r3.Stats.UploadedBlobs != 1 || r3.Stats.UploadedBytes != int64(len("changed!\n")) {
			t.Errorf("one-change snapshot: %d blobs, %d bytes; want 1, 9", r3.Stats.UploadedBlobs, r3.Stats.UploadedBytes)
		}
		if d := snapshot.Diff(r2.Manifest, r3.Manifest); len(d.Added)+len(d.Removed) != 0 || !slices.Equal(d.Changed, []string{"d07/f00007.txt"}) {
			t.Errorf("Diff = %+v, want only d07/f00007.txt changed", d)
		}
	})
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestVersionNamesUniqueWithinMillisecond(t *testing.T) {
	ctx := context.Background()
	loc := snapshot.Location{Store: fsBackend().open(t)}
	clock := &fakeClock{t: time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)}
	s := snapshot.New(snapshot.Config{Now: clock.Now})
	dir := t.TempDir()
	write(t, dir, "f", []byte("x"), 0o644)
	var names []string
	for range 3 {
		r, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Manifest.Name)
	}
	want := []string{"20260506T070809.123Z", "20260506T070809.124Z", "20260506T070809.125Z"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	// A snapshotter that has never seen the location still continues after them.
	r, err := snapshot.New(snapshot.Config{Now: clock.Now}).Snapshot(ctx, loc, dir, snapshot.Options{})
	if err != nil || r.Manifest.Name != "20260506T070809.126Z" {
		t.Errorf("fresh snapshotter name = %v, %v; want 20260506T070809.126Z", r, err)
	}
}

// hookStore runs a hook before the n-th Put of a key matching match.
type hookStore struct {
	blob.Store
	mu    sync.Mutex
	puts  int
	at    int
	match func(key string) bool
	hook  func()
}

func (h *hookStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if h.match == nil || h.match(key) {
		h.mu.Lock()
		h.puts++
		fire := h.puts == h.at
		h.mu.Unlock()
		if fire {
			h.hook()
		}
	}
	return h.Store.Put(ctx, key, r, size)
}

func TestS3KilledMidSnapshot(t *testing.T) {
	b := s3Backend(t)
	ctx := context.Background()
	inner := b.open(t)
	dir := t.TempDir()
	for i := range 300 {
		write(t, dir, fmt.Sprintf("f%03d", i), fmt.Appendf(nil, "content %d", i), 0o644)
	}
	write(t, dir, "big", pseudoRandom(largeSize, 3), 0o644)
	hs := &hookStore{Store: inner, at: 100, hook: b.v.Stop}
	loc := snapshot.Location{Store: hs, Prefix: "ws", ID: "s3:kill/ws"}
	s := snapshot.New(snapshot.Config{Concurrency: 8})

	_, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
	pe, ok := errs.Public(err)
	if !ok || pe.Kind != errs.Dependency {
		t.Fatalf("snapshot with the server killed: error = %v, want errs.Dependency", err)
	}
	t.Logf("error while the server is down: %v", pe.Message)

	b.v.Start(t)
	versions, err := s.Versions(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != 0 {
		t.Fatalf("a failed snapshot left versions %v", versions)
	}
	r, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
	if err != nil {
		t.Fatalf("snapshot after restart: %v", err)
	}
	out := t.TempDir()
	if _, err := s.Restore(ctx, loc, r.Manifest.Name, out, snapshot.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, describe(t, dir), out)
}

func TestFileChangedDuringUpload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		dir := t.TempDir()
		write(t, dir, "big", pseudoRandom(largeSize, 4), 0o644)
		changed := pseudoRandom(largeSize+10, 5)
		st := b.open(t)
		hs := &hookStore{Store: st, at: 1, match: func(k string) bool { return bytes.Contains([]byte(k), []byte("/blobs/")) },
			hook: func() { write(t, dir, "big", changed, 0o644) }}
		loc := snapshot.Location{Store: hs}
		r, err := snapshot.New(snapshot.Config{}).Snapshot(ctx, loc, dir, snapshot.Options{})
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		sum := sha256.Sum256(changed)
		e := r.Manifest.Entries[0]
		if e.SHA256 != hex.EncodeToString(sum[:]) || e.Size != int64(len(changed)) {
			t.Errorf("manifest records %s (%d bytes), want the content that was uploaded", e.SHA256, e.Size)
		}
		// Every stored blob matches its key.
		for in, err := range st.List(ctx, ".techboss/blobs/") {
			must(t, err)
			rc, err := st.Get(ctx, in.Key)
			must(t, err)
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			must(t, err)
			if got := hex.EncodeToString(h.Sum(nil)); !bytes.HasSuffix([]byte(in.Key), []byte(got)) {
				t.Errorf("blob %s holds content hashing to %s", in.Key, got)
			}
		}
	})
}

func TestPrune(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store := b.open(t)
		loc := snapshot.Location{Store: store, Prefix: "x"}
		clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		s := snapshot.New(snapshot.Config{Now: clock.Now})
		dir := t.TempDir()
		write(t, dir, "shared", []byte("always here"), 0o644)
		var names []string
		for i := range 5 {
			write(t, dir, "v", fmt.Appendf(nil, "version %d", i), 0o644)
			r, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
			must(t, err)
			names = append(names, r.Manifest.Name)
			clock.Add(24 * time.Hour)
		}
		// Keep the last 2, or anything under 2.5 days old: versions 2, 3, 4.
		// Blobs are written now (real mtime) so Grace must be tiny.
		res, err := snapshot.New(snapshot.Config{Now: time.Now}).Prune(ctx, loc, snapshot.Retention{KeepLast: 2, Grace: time.Nanosecond})
		must(t, err)
		if diff := cmp.Diff(names[:3], res.DeletedVersions); diff != "" {
			t.Errorf("deleted versions (-want +got):\n%s", diff)
		}
		if res.DeletedBlobs != 3 {
			t.Errorf("deleted %d blobs, want 3 (the 'v' contents of versions 0-2)", res.DeletedBlobs)
		}
		for _, name := range names[3:] {
			out := t.TempDir()
			if _, err := s.Restore(ctx, loc, name, out, snapshot.RestoreOptions{}); err != nil {
				t.Errorf("restore kept version %s: %v", name, err)
			}
		}
		if _, err := s.Restore(ctx, loc, names[0], t.TempDir(), snapshot.RestoreOptions{}); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("restore pruned version: %v, want ErrNotFound", err)
		}
		// KeepFor keeps by age: at day 5 keep versions newer than 1.5 days.
		s3 := snapshot.New(snapshot.Config{Now: func() time.Time { return clock.Now() }})
		res, err = s3.Prune(ctx, loc, snapshot.Retention{KeepFor: 36 * time.Hour, Grace: time.Nanosecond})
		must(t, err)
		if diff := cmp.Diff(names[3:4], res.DeletedVersions); diff != "" {
			t.Errorf("KeepFor deleted (-want +got):\n%s", diff)
		}
	})
}

func TestImport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store := b.open(t)
		for key, body := range map[string]string{
			"docs/my-project/README.md":        "readme",
			"docs/my-project/src/a b/ü.txt":    "unicode",
			"docs/my-project/.techboss/ignore": "version area",
			"docs/other/x":                     "not under the prefix",
			"docs/my-project-2/y":              "not under the prefix either",
		} {
			must(t, store.Put(ctx, key, bytes.NewReader([]byte(body)), int64(len(body))))
		}
		loc := snapshot.Location{Store: store, Prefix: "docs/my-project"}
		s := snapshot.New(snapshot.Config{})
		dir := filepath.Join(t.TempDir(), "ws")
		var mu sync.Mutex
		var last snapshot.Progress
		res, err := s.Import(ctx, loc, dir, snapshot.ImportOptions{Progress: func(p snapshot.Progress) { mu.Lock(); last = p; mu.Unlock() }})
		must(t, err)
		if res.Mode != "objects" || res.Files != 2 {
			t.Errorf("import = %+v, want 2 objects", res)
		}
		if last.FilesDone != 2 || last.FilesTotal != 2 || last.BytesDone != last.BytesTotal {
			t.Errorf("last progress = %+v, want 2 of 2 files, all bytes", last)
		}
		got := describe(t, dir)
		for _, p := range []string{"README.md", "src/a b/ü.txt"} {
			if got[p].Type != "file" {
				t.Errorf("import missing %s (got %v)", p, got)
			}
		}
		if len(got) != 4 { // two files, src, src/a b
			t.Errorf("import wrote %d paths, want 4: %v", len(got), got)
		}

		// Once the prefix holds versions, import restores the latest.
		write(t, dir, "later.txt", []byte("later"), 0o600)
		r, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
		must(t, err)
		dir2 := filepath.Join(t.TempDir(), "ws2")
		res, err = snapshot.New(snapshot.Config{}).Import(ctx, loc, dir2, snapshot.ImportOptions{})
		must(t, err)
		if res.Mode != "version" || res.Version != r.Manifest.Name {
			t.Errorf("import with versions = %+v, want version %s", res, r.Manifest.Name)
		}
		sameTree(t, describe(t, dir), dir2)
	})
}

func TestMirror(t *testing.T) {
	ctx := context.Background()
	store := fsBackend().open(t)
	loc := snapshot.Location{Store: store, Prefix: "m"}
	s := snapshot.New(snapshot.Config{})
	dir := t.TempDir()
	write(t, dir, "a.txt", []byte("a"), 0o644)
	write(t, dir, "d/b.txt", []byte("b"), 0o644)
	_, err := s.Snapshot(ctx, loc, dir, snapshot.Options{Mirror: true})
	must(t, err)
	must(t, os.Remove(filepath.Join(dir, "a.txt")))
	write(t, dir, "d/b.txt", []byte("b2"), 0o644)
	r, err := s.Snapshot(ctx, loc, dir, snapshot.Options{Mirror: true})
	must(t, err)
	if r.MirrorErr != nil {
		t.Fatal(r.MirrorErr)
	}
	var plain []string
	for in, err := range store.List(ctx, "m/") {
		must(t, err)
		if !bytes.HasPrefix([]byte(in.Key), []byte("m/.techboss/")) {
			plain = append(plain, in.Key)
		}
	}
	if diff := cmp.Diff([]string{"m/d/b.txt"}, plain); diff != "" {
		t.Errorf("mirror objects (-want +got):\n%s", diff)
	}
	rc, err := store.Get(ctx, "m/d/b.txt")
	must(t, err)
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != "b2" {
		t.Errorf("mirror holds %q, want b2", body)
	}
}
