package snapshot_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/snapshot"
)

// TestTarRoundTrip snapshots a tree from a tar stream (as a driver without
// a host workspace provides it) and restores it as a tar stream, extracted
// with the system tar: the tree comes back exactly.
func TestTarRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store := blob.NewCounting(b.open(t))
		loc := snapshot.Location{Store: store, Prefix: "tar"}
		s := snapshot.New(snapshot.Config{Concurrency: 4, SmallFile: 1 << 20})
		src := filepath.Join(t.TempDir(), "src")
		must(t, os.Mkdir(src, 0o755))
		buildTree(t, src)
		must(t, os.Link(filepath.Join(src, "README.md"), filepath.Join(src, "hardlink")))
		want := describe(t, src)

		tarOut := func(dir string) io.ReadCloser {
			cmd := exec.Command("tar", "-C", dir, "-cf", "-", ".")
			out, err := cmd.StdoutPipe()
			must(t, err)
			must(t, cmd.Start())
			t.Cleanup(func() { cmd.Wait() })
			return out
		}
		r1, err := s.SnapshotTar(ctx, loc, tarOut(src))
		if err != nil {
			t.Fatalf("SnapshotTar: %v", err)
		}
		before := store.Stats()
		r2, err := s.SnapshotTar(ctx, loc, tarOut(src))
		if err != nil {
			t.Fatal(err)
		}
		if got := store.Stats().PutObjects - before.PutObjects; got != 1 || r2.Stats.UploadedBytes != 0 {
			t.Errorf("unchanged tar snapshot put %d objects (%d bytes), want only the manifest", got, r2.Stats.UploadedBytes)
		}

		dst := filepath.Join(t.TempDir(), "dst")
		must(t, os.Mkdir(dst, 0o755))
		cmd := exec.Command("tar", "-C", dst, "--same-owner", "-xpf", "-")
		in, err := cmd.StdinPipe()
		must(t, err)
		cmd.Stderr = os.Stderr
		must(t, cmd.Start())
		if err := s.RestoreTar(ctx, loc, r1.Manifest.Name, in); err != nil {
			t.Fatalf("RestoreTar: %v", err)
		}
		in.Close()
		must(t, cmd.Wait())
		sameTree(t, want, dst)
	})
}
