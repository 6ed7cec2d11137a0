package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/snapshot"
)

// owners returns path -> "uid:gid" of every entry below dir (host ids).
func owners(t *testing.T, dir string) map[string][2]uint32 {
	t.Helper()
	out := map[string][2]uint32{}
	for p, n := range describe(t, dir) {
		out[p] = [2]uint32{n.UID, n.GID}
	}
	return out
}

// TestOwnersThroughIDMap: with a user namespace, a version records owners
// as the sandbox sees them and a restore or import stores them as the
// target sandbox's namespace maps them on the host.
func TestOwnersThroughIDMap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners are recorded and restored as root only")
	}
	ctx := context.Background()
	src := sandbox.IDMap{HostBase: 100000, Size: 65536}
	dst := sandbox.IDMap{HostBase: 300000, Size: 65536}
	ws := t.TempDir()
	write(t, ws, "home/user/file", []byte("user's"), 0o644)
	write(t, ws, "rootfile", []byte("sandbox root's"), 0o755)
	write(t, ws, "hostfile", []byte("the host's, unmapped"), 0o644)
	must(t, os.Symlink("home/user/file", filepath.Join(ws, "link")))
	for p, id := range map[string]int{"home": 100000, "home/user": 101000, "home/user/file": 101000, "rootfile": 100000, "link": 101001, "hostfile": 0} {
		must(t, os.Lchown(filepath.Join(ws, p), id, id+7))
	}
	must(t, os.Chmod(filepath.Join(ws, "rootfile"), os.ModeSetuid|0o755)) // after chown, which clears it

	loc := snapshot.Location{Store: fsBackend().open(t), Prefix: "ids"}
	s := snapshot.New(snapshot.Config{})
	r, err := s.Snapshot(ctx, loc, ws, snapshot.Options{IDs: src})
	must(t, err)
	recorded := map[string][2]uint32{}
	for _, e := range r.Manifest.Entries {
		recorded[e.Path] = [2]uint32{e.UID, e.GID}
	}
	want := map[string][2]uint32{
		"home": {0, 7}, "home/user": {1000, 1007}, "home/user/file": {1000, 1007}, "rootfile": {0, 7},
		"link": {1001, 1008}, "hostfile": {sandbox.OverflowID, sandbox.OverflowID},
	}
	if diff := cmp.Diff(want, recorded); diff != "" {
		t.Errorf("recorded owners (-want +got):\n%s", diff)
	}

	shifted := func(m sandbox.IDMap) map[string][2]uint32 {
		out := map[string][2]uint32{}
		for p, id := range want {
			out[p] = [2]uint32{m.ToHost(id[0]), m.ToHost(id[1])}
		}
		return out
	}
	t.Run("restore", func(t *testing.T) {
		for _, m := range []sandbox.IDMap{dst, {}} {
			out := filepath.Join(t.TempDir(), "ws")
			_, err := s.Restore(ctx, loc, r.Manifest.Name, out, snapshot.RestoreOptions{IDs: m})
			must(t, err)
			if diff := cmp.Diff(shifted(m), owners(t, out)); diff != "" {
				t.Errorf("owners restored through %+v (-want +got):\n%s", m, diff)
			}
			if fi, err := os.Stat(filepath.Join(out, "rootfile")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
				t.Errorf("rootfile lost its setuid bit: %v, %v", fi, err)
			}
			// In place again, over files with other owners: owners are fixed
			// without downloading the content.
			must(t, os.Lchown(filepath.Join(out, "home/user/file"), 4242, 4242))
			st, err := s.Restore(ctx, loc, r.Manifest.Name, out, snapshot.RestoreOptions{IDs: m})
			must(t, err)
			if st.DownloadedFiles != 0 {
				t.Errorf("in-place restore downloaded %d files, want 0", st.DownloadedFiles)
			}
			if diff := cmp.Diff(shifted(m), owners(t, out)); diff != "" {
				t.Errorf("owners fixed in place through %+v (-want +got):\n%s", m, diff)
			}
		}
	})
	t.Run("import", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "ws")
		res, err := s.Import(ctx, loc, out, snapshot.ImportOptions{IDs: dst})
		must(t, err)
		if res.Mode != "version" {
			t.Fatalf("import mode %q, want version", res.Mode)
		}
		if diff := cmp.Diff(shifted(dst), owners(t, out)); diff != "" {
			t.Errorf("owners imported through %+v (-want +got):\n%s", dst, diff)
		}
	})
	t.Run("import objects", func(t *testing.T) {
		// Plain objects get the owner of the workspace root, whatever the map.
		st := fsBackend().open(t)
		for _, key := range []string{"p/a/b/c.txt", "p/top.txt"} {
			must(t, st.Put(ctx, key, strings.NewReader("x"), 1))
		}
		out := t.TempDir()
		must(t, os.Lchown(out, 300123, 300124))
		_, err := s.Import(ctx, snapshot.Location{Store: st, Prefix: "p"}, out, snapshot.ImportOptions{IDs: dst})
		must(t, err)
		want := map[string][2]uint32{"a": {300123, 300124}, "a/b": {300123, 300124}, "a/b/c.txt": {300123, 300124}, "top.txt": {300123, 300124}}
		if diff := cmp.Diff(want, owners(t, out)); diff != "" {
			t.Errorf("imported objects' owners (-want +got):\n%s", diff)
		}
		var st0 syscall.Stat_t
		must(t, syscall.Lstat(out, &st0))
		if st0.Uid != 300123 {
			t.Errorf("import changed the workspace root's owner to %d", st0.Uid)
		}
	})
}
