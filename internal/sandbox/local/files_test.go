package local

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

func TestFilesEscapesRefused(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx := testCtx(t)
	marker := "tb-files-" + sandboxtest.NewID()
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "secret"), []byte("host-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSh(t, d, ref, strings.Join([]string{
		"mkdir -p /workspace/e",
		"ln -s /etc /workspace/e/abs",
		"ln -s ../../../../../../../.. /workspace/e/up",
		"ln -s /proc/1/root /workspace/e/magic",
		"ln -s " + hostDir + " /workspace/e/hostpath",
		"ln -s ../../proc/self/root /workspace/e/relmagic",
	}, " && "))
	for _, p := range []string{
		"/workspace/e/abs/" + marker,
		"/workspace/e/up/" + marker,
		"/workspace/e/up/etc/" + marker,
		"/workspace/e/magic/" + marker,
		"/workspace/e/hostpath/" + marker,
		"/workspace/e/relmagic/" + marker,
		"/proc/1/root/" + marker,
		"/sys/" + marker,
		"/workspace/../" + marker,
	} {
		if _, err := d.WriteFile(ctx, ref, p, 0o644, strings.NewReader("x")); err == nil {
			t.Errorf("WriteFile %s: got nil error, want refused", p)
		} else if k := errs.KindOf(err); k != errs.Forbidden && k != errs.Invalid && k != errs.NotFound {
			t.Errorf("WriteFile %s: got %v (kind %v)", p, err, k)
		}
	}
	for _, p := range []string{"/" + marker, "/etc/" + marker, filepath.Join(hostDir, marker)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("escape: %s exists on the host", p)
			_ = os.Remove(p)
		}
	}
	for _, p := range []string{"/workspace/e/hostpath/secret", "/workspace/e/up/etc/hostname", "/workspace/e/magic/etc/hostname"} {
		var buf bytes.Buffer
		if _, err := d.ReadFile(ctx, ref, p, &buf); err == nil || buf.Len() > 0 {
			t.Errorf("ReadFile %s: got %q, %v; want refused", p, buf.String(), err)
		}
	}
	if _, err := d.ListDir(ctx, ref, "/workspace/e/hostpath"); err == nil {
		t.Errorf("ListDir through a symlink to a host path succeeded")
	}
	// Stat does not follow the final symlink and reports its target.
	fi, err := d.Stat(ctx, ref, "/workspace/e/abs")
	if err != nil || fi.Type != "symlink" || fi.Target != "/etc" {
		t.Errorf("Stat symlink: got %+v, %v", fi, err)
	}
	// Symlinks that stay inside the sandbox work.
	mustSh(t, d, ref, "mkdir -p /workspace/real && ln -s real /workspace/inside")
	if _, err := d.WriteFile(ctx, ref, "/workspace/inside/ok.txt", 0o600, strings.NewReader("fine")); err != nil {
		t.Errorf("WriteFile through an inside symlink: %v", err)
	}
	if got := mustSh(t, d, ref, "cat /workspace/real/ok.txt"); got != "fine" {
		t.Errorf("got %q", got)
	}
	// Reading a directory or a missing file.
	if _, err := d.ReadFile(ctx, ref, "/workspace", io.Discard); errs.KindOf(err) != errs.Invalid {
		t.Errorf("ReadFile of a dir: got %v", err)
	}
}

func FuzzSandboxPath(f *testing.F) {
	for _, s := range []string{"/", "/workspace/a", "/workspace/../etc", "relative", "", "/a/./b//c/", "/proc/1/root", "/x/\x00", "/..", "/a/b/../../..", "//sys", "/dev/../etc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rel, err := SandboxPath(p)
		if err != nil {
			if errs.KindOf(err) == errs.Internal {
				t.Fatalf("SandboxPath(%q): non-public error %v", p, err)
			}
			return
		}
		if strings.HasPrefix(rel, "/") || strings.ContainsRune(rel, 0) {
			t.Fatalf("SandboxPath(%q) = %q: absolute or NUL", p, rel)
		}
		for _, part := range strings.Split(rel, "/") {
			if part == ".." {
				t.Fatalf("SandboxPath(%q) = %q: contains ..", p, rel)
			}
		}
		if first, _, _ := strings.Cut(rel, "/"); first == "proc" || first == "sys" || first == "dev" {
			t.Fatalf("SandboxPath(%q) = %q: kernel filesystem allowed", p, rel)
		}
		if !filepath.IsLocal(rel) {
			t.Fatalf("SandboxPath(%q) = %q: not local", p, rel)
		}
	})
}

// failingReader yields n bytes of 'x', then fails.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestWriteFileReplacesAtomically(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx := testCtx(t)
	if _, err := d.WriteFile(ctx, ref, "/workspace/f.txt", 0o644, strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}
	// A process inside keeps the old file open while it is replaced.
	mustSh(t, d, ref, "ln -s f.txt /workspace/link")

	// An upload cut half-way leaves the old file whole, and no temp file.
	if _, err := d.WriteFile(ctx, ref, "/workspace/f.txt", 0o644, &failingReader{n: 3 << 20}); err == nil {
		t.Fatal("WriteFile from a failing reader: nil error")
	}
	if got := strings.TrimSpace(mustSh(t, d, ref, "cat /workspace/f.txt; ls -a /workspace | grep -c techboss-upload || true")); got != "old0" {
		t.Fatalf("after a failed upload: %q (%d bytes), want the old content and no temp file", got[:min(len(got), 40)], len(got))
	}

	// A complete one replaces it, with the mode asked for.
	if _, err := d.WriteFile(ctx, ref, "/workspace/f.txt", 0o600, strings.NewReader("new")); err != nil {
		t.Fatal(err)
	}
	d.bg.Wait() // the old file is removed in the background
	if got := strings.TrimSpace(mustSh(t, d, ref, "cat /workspace/f.txt; stat -c ' %a' /workspace/f.txt; ls -a /workspace | grep -c techboss-upload || true")); got != "new 600\n0" {
		t.Fatalf("after the upload: %q", got)
	}

	// Through a symlink the target is written and the link stays a link.
	if _, err := d.WriteFile(ctx, ref, "/workspace/link", 0o644, strings.NewReader("via link")); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(mustSh(t, d, ref, "cat /workspace/f.txt; test -L /workspace/link && echo ' link'")); got != "via link link" {
		t.Fatalf("write through a symlink: %q", got)
	}

	// A directory is refused, naming the path.
	mustSh(t, d, ref, "mkdir -p /workspace/dir")
	if _, err := d.WriteFile(ctx, ref, "/workspace/dir", 0o644, strings.NewReader("x")); errs.KindOf(err) != errs.Invalid {
		t.Fatalf("WriteFile over a directory: %v", err)
	}
}
