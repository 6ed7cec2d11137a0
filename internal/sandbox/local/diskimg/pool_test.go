package diskimg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// runPool runs p until the test ends and checks Run returns nil once
// cancelled.
func runPool(t *testing.T, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var g errgroup.Group
	g.Go(func() error { return p.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func waitReady(t *testing.T, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("pool not full: %v (ready: %d)", err, p.Ready())
	}
}

func poolFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPool(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	poolDir := filepath.Join(dir, "pool")
	p, err := NewPool(poolDir, 64, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	runPool(t, p)
	waitReady(t, p)
	if got := len(poolFiles(t, poolDir)); got != 2 {
		t.Errorf("pool dir holds %d files, want 2", got)
	}

	// A ready image moves into place and mounts.
	img := filepath.Join(dir, "a.img")
	if err := p.Take(t.Context(), img, 64); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "a")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := Mount(img, mnt)
	if err != nil {
		t.Fatalf("mount a pool image: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "x"), []byte("x"), 0o644); err != nil {
		t.Error(err)
	}
	if err := d.Unmount(t.Context()); err != nil {
		t.Error(err)
	}
	// Run refills.
	waitReady(t, p)

	// An existing destination is left alone, and the pool keeps its image.
	if err := os.WriteFile(filepath.Join(dir, "b.img"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Take(t.Context(), filepath.Join(dir, "b.img"), 64); !errors.Is(err, os.ErrExist) {
		t.Errorf("Take onto an existing file: got %v, want os.ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b.img")); string(b) != "keep" {
		t.Errorf("existing file became %q", b)
	}
	if got := p.Ready(); got != 2 {
		t.Errorf("ready after a failed Take: %d, want 2", got)
	}

	// Other sizes are formatted on demand.
	other := filepath.Join(dir, "c.img")
	if err := p.Take(t.Context(), other, 128); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(other); err != nil || fi.Size() != 128<<20 {
		t.Errorf("on-demand image: %v, %v; want 128 MiB", fi, err)
	}
}

// TestPoolAdopts: ready images outlive the Pool (a server restart); the
// next one adopts them and removes partial or foreign files.
func TestPoolAdopts(t *testing.T) {
	requireLoop(t)
	poolDir := filepath.Join(t.TempDir(), "pool")
	p, err := NewPool(poolDir, 64, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := p.make(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ready := poolFiles(t, poolDir)
	junk := []string{".tmp-ext4v1-64M-partial", "ext4v1-128M-othersize.img", "ext4v0-64M-oldformat.img"}
	for _, j := range junk {
		if err := os.WriteFile(filepath.Join(poolDir, j), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p2, err := NewPool(poolDir, 64, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := p2.Ready(); got != 2 {
		t.Errorf("adopted %d images, want 2", got)
	}
	if got := poolFiles(t, poolDir); !slices.Equal(got, ready) {
		t.Errorf("pool dir after NewPool: %v, want only %v", got, ready)
	}
	// A smaller pool keeps only what it wants.
	p3, err := NewPool(poolDir, 64, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, files := p3.Ready(), len(poolFiles(t, poolDir)); got != 1 || files != 1 {
		t.Errorf("pool of 1: %d ready, %d files; want 1 and 1", got, files)
	}
}

// TestPoolWithoutRun: Take works (on demand) when Run is not running.
func TestPoolWithoutRun(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	p, err := NewPool(filepath.Join(dir, "pool"), 64, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "a.img")
	if err := p.Take(t.Context(), img, 64); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != 64<<20 {
		t.Errorf("image: %v, %v; want 64 MiB", fi, err)
	}
	if _, err := NewPool(dir, 1, 1, nil); err == nil {
		t.Error("NewPool with a 1 MiB size succeeded")
	}
}

// TestPoolImageGone: a ready image removed behind the pool's back is
// dropped, and Take formats one instead.
func TestPoolImageGone(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	p, err := NewPool(filepath.Join(dir, "pool"), 64, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.make(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, f := range poolFiles(t, filepath.Join(dir, "pool")) {
		if err := os.Remove(filepath.Join(dir, "pool", f)); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "a.img")
	if err := p.Take(t.Context(), img, 64); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != 64<<20 {
		t.Errorf("image: %v, %v; want 64 MiB", fi, err)
	}
	if got := p.Ready(); got != 0 {
		t.Errorf("ready: %d, want 0 (the removed image dropped)", got)
	}
}
