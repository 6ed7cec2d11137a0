package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/diskimg"
)

// mountsUnder lists the mount points at or below dir in this process's
// mount namespace.
func mountsUnder(t *testing.T, dir string) []diskimg.MountPoint {
	t.Helper()
	all, err := diskimg.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	var out []diskimg.MountPoint
	for _, m := range all {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m)
		}
	}
	return out
}

// TestSandboxMountsStayPrivate: the driver's data and run directories sit
// on a shared mount with a peer elsewhere (as on a systemd host, where / is
// shared with the services' namespaces). What the driver mounts for a
// sandbox must not appear at the peer, a running sandbox's root must not
// stay in the host's mount table (every starting bubblewrap copies and
// reads that table), and the sandbox must still see its /workspace and
// /tmp, the server its files.
func TestSandboxMountsStayPrivate(t *testing.T) {
	requireHost(t)
	if os.Getenv("TECHBOSS_TEST_LOCAL_RUNTIME") == RuntimeRunsc {
		t.Skip("gVisor keeps the root mounted on the host (runtime_runsc.go)")
	}
	base := t.TempDir()
	// bubblewrap runs as the sandboxes' root, which must traverse to the
	// run dir.
	for _, p := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	shared, peer := filepath.Join(base, "shared"), filepath.Join(base, "peer")
	for _, p := range []string{shared, peer} {
		if err := os.Mkdir(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", shared, "tmpfs", 0, "mode=0711"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	// A bind of a shared mount is its peer: mounts below one appear below
	// the other.
	if err := unix.Mount(shared, peer, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(peer, unix.MNT_DETACH) })
	if err := os.Mkdir(filepath.Join(shared, "probe"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(shared, "probe"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if len(mountsUnder(t, filepath.Join(peer, "probe"))) == 0 {
		t.Fatal("the test's setup: a mount below the shared dir did not propagate to its peer")
	}
	if err := unix.Unmount(filepath.Join(shared, "probe"), 0); err != nil {
		t.Fatal(err)
	}

	dataDir, runDir := filepath.Join(shared, "data"), filepath.Join(shared, "run")
	d, err := New(Options{DataDir: dataDir, InitBinary: initBin, RunDir: runDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	for _, dir := range []string{d.runDir, dataDir} {
		ms := mountsUnder(t, dir)
		if len(ms) == 0 || ms[0].Point != dir {
			t.Fatalf("%s is not a mount of its own: %+v", dir, ms)
		}
		if len(ms[0].Propagation) != 0 {
			t.Errorf("%s propagates: %v", dir, ms[0].Propagation)
		}
	}

	ref := create(t, d, sandbox.Spec{})
	mustSh(t, d, ref, "echo ws > /workspace/f && echo tmp > /tmp/g && cat /workspace/f /tmp/g")
	if got := mustSh(t, d, ref, "cat /workspace/f /tmp/g"); got != "ws\ntmp\n" {
		t.Errorf("the sandbox reads %q from /workspace/f and /tmp/g", got)
	}
	var buf bytes.Buffer
	if _, err := d.ReadFile(testCtx(t), ref, "/workspace/f", &buf); err != nil || buf.String() != "ws\n" {
		t.Errorf("ReadFile /workspace/f = %q, %v", buf.String(), err)
	}
	// The private binds themselves reach the peer (a mount attached below
	// a shared one always does), empty; nothing below them may.
	for _, dir := range []string{filepath.Join(peer, "run", d.instance), filepath.Join(peer, "data")} {
		if ms := mountsUnder(t, dir); len(ms) > 1 || len(ms) == 1 && ms[0].Point != dir {
			t.Errorf("the sandbox's mounts propagated to the shared dir's peer: %+v", ms)
		}
	}
	s, err := d.get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if ms := mountsUnder(t, s.st.RunDir); len(ms) > 0 {
		t.Errorf("a running sandbox's root stays in the host's mount table: %+v", ms)
	}
	if err := d.Destroy(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if ms := mountsUnder(t, shared); len(ms) != 3 { // shared, the run dir, the data dir
		t.Errorf("after Destroy, mounts below %s: %+v", shared, ms)
	}
	// Close undoes the private binds, so the directories can be removed.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if ms := mountsUnder(t, shared); len(ms) != 1 {
		t.Errorf("after Close, mounts below %s: %+v", shared, ms)
	}
}

// TestCloseLetsGoOfDataDir: Close takes the driver's private bind of its
// data dir away even while a file below is still open (a sandbox's last
// processes holding its log as they exit), so the directory can be
// removed. (While sandboxes' mounts are below it, Close leaves the bind
// for the next driver; this test does not cover that case.)
func TestCloseLetsGoOfDataDir(t *testing.T) {
	requireHost(t)
	dataDir := t.TempDir()
	d, err := New(Options{DataDir: dataDir, InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	if len(mountsUnder(t, dataDir)) == 0 {
		t.Fatalf("the data dir %s is no mount of its own", dataDir)
	}
	f, err := os.Create(filepath.Join(dataDir, "held-open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if left := mountsUnder(t, dataDir); len(left) != 0 {
		t.Fatalf("after Close, with a file open below it: still mounted %v", left)
	}
	if _, err := f.WriteString("still works"); err != nil {
		t.Fatalf("the open file after Close: %v", err)
	}
}

// TestFailedNewLetsGoOfDataDir: a driver that does not start (here: a
// runtime it does not know) leaves no bind of its data dir behind.
func TestFailedNewLetsGoOfDataDir(t *testing.T) {
	requireHost(t)
	dataDir := t.TempDir()
	if _, err := New(Options{DataDir: dataDir, InitBinary: initBin, Runtime: "no-such-runtime"}); err == nil {
		t.Fatal("New with an unknown runtime started")
	}
	if left := mountsUnder(t, dataDir); len(left) != 0 {
		t.Fatalf("after a failed New: still mounted %v", left)
	}
}
