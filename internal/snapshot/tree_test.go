package snapshot

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTreeNeverFollows: what a tree opens by name is the entry itself; a
// symlink, even one pointing inside the tree, is never a way in.
func TestTreeNeverFollows(t *testing.T) {
	dir := t.TempDir()
	mk := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mk(os.MkdirAll(filepath.Join(dir, "a/real"), 0o755))
	mk(os.WriteFile(filepath.Join(dir, "a/real/f"), []byte("content"), 0o600))
	mk(os.Symlink("real", filepath.Join(dir, "a/dirlink")))
	mk(os.Symlink("real/f", filepath.Join(dir, "a/filelink")))
	mk(os.Symlink(t.TempDir(), filepath.Join(dir, "a/out")))
	mk(syscall.Mkfifo(filepath.Join(dir, "a/fifo"), 0o600))

	top, err := openTree(dir)
	mk(err)
	defer top.Close()
	a, err := top.dir("a")
	mk(err)
	defer a.Close()

	for _, name := range []string{"dirlink", "out"} {
		if _, err := a.sub(name); !errors.Is(err, errMoved) {
			t.Errorf("sub(%q) = %v, want errMoved", name, err)
		}
	}
	for _, rel := range []string{"a/dirlink", "a/out/x"} {
		if _, err := top.dir(rel); !errors.Is(err, errMoved) {
			t.Errorf("dir(%q) = %v, want errMoved", rel, err)
		}
	}
	// A FIFO must not block the open (the test would hang).
	for _, name := range []string{"filelink", "fifo", "dirlink", "real"} {
		if _, _, err := a.openFile(name); !errors.Is(err, errMoved) {
			t.Errorf("openFile(%q) = %v, want errMoved", name, err)
		}
	}
	real, err := a.sub("real")
	mk(err)
	defer real.Close()
	f, fi, err := real.openFile("f")
	mk(err)
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "content" || fi.Size() != 7 {
		t.Errorf("openFile(f) read %q (%d bytes), want content", b, fi.Size())
	}
	for _, name := range []string{"", ".", "..", "real/f", "/etc"} {
		if _, err := a.lstat(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("lstat(%q) = %v, want fs.ErrInvalid: only single entries are named", name, err)
		}
	}

	got := map[string]string{}
	err = top.walk(context.Background(), func(d *tree, rel string, fi fs.FileInfo) (bool, error) {
		got[rel] = string(typeOf(fi.Mode()))
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := d.readlink(fi.Name())
			got[rel] += " -> " + target
			return false, err
		}
		return true, nil
	}, nil)
	mk(err)
	out, _ := os.Readlink(filepath.Join(dir, "a/out"))
	want := map[string]string{
		"a": "dir", "a/real": "dir", "a/real/f": "file", "a/fifo": "",
		"a/dirlink": "symlink -> real", "a/filelink": "symlink -> real/f", "a/out": "symlink -> " + out,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("walk (-want +got):\n%s", d)
	}
}
