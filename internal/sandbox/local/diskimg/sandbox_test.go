package diskimg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSandboxLayout runs the layout proposed to the driver under
// bubblewrap: one disk holding the overlay root's upper and work dirs,
// /workspace and /tmp. A sandbox writing to all three together hits one
// limit, with ENOSPC, and its writes land on the disk.
func TestSandboxLayout(t *testing.T) {
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal("bubblewrap (bwrap) not installed")
		}
		t.Skip("bubblewrap (bwrap) not installed")
	}
	const sizeMB = 64
	d := newMounted(t, sizeMB)
	for _, sub := range []string{"upper", "work", "workspace", "tmp"} {
		if err := os.Mkdir(filepath.Join(d.Dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(d.Dir, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	// The image's lower layer: just the mount points bubblewrap needs.
	lower := t.TempDir()
	for _, sub := range []string{"usr", "proc", "dev", "tmp", "workspace", "etc"} {
		if err := os.Mkdir(filepath.Join(lower, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := t.TempDir()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(d.Dir, "upper"), filepath.Join(d.Dir, "work"))
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
	script := `set -e
head -c 20000000 /dev/zero > /rootfile
head -c 20000000 /dev/zero > /tmp/tmpfile
head -c 20000000 /dev/zero > /workspace/wsfile
echo all written
head -c 20000000 /dev/zero > /workspace/overflow`
	cmd := exec.Command(bwrap,
		"--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
		"--bind", merged, "/",
		"--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
		"--proc", "/proc", "--dev", "/dev",
		"--bind", filepath.Join(d.Dir, "tmp"), "/tmp",
		"--bind", filepath.Join(d.Dir, "workspace"), "/workspace",
		"--chdir", "/workspace", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
		"sh", "-c", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("sandbox: got %v, want a failed write: %s", err, out.String())
	}
	if !strings.Contains(out.String(), "all written") || !strings.Contains(out.String(), "No space left on device") {
		t.Errorf("sandbox output %q: want the three files written, then ENOSPC", out.String())
	}
	for _, p := range []string{"upper/rootfile", "tmp/tmpfile", "workspace/wsfile"} {
		if fi, err := os.Stat(filepath.Join(d.Dir, p)); err != nil || fi.Size() != 20000000 {
			t.Errorf("%s on the disk: %v, %v; want 20000000 bytes", p, fi, err)
		}
	}
	if alloc := allocated(t, d.Image); alloc > sizeMB<<20+1<<20 {
		t.Errorf("image allocates %d bytes, want at most %d MiB", alloc, sizeMB+1)
	}
}
