package diskimg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestMain points TMPDIR (and so every t.TempDir) at one directory, and
// fails the run if any loop device is still backed by a file in it after
// the tests: every test's images live there, so this counts exactly this
// package's leaks even while other processes use loop devices.
//
// As root it first re-executes the tests in a mount namespace of their
// own (private, so nothing propagates back): a process elsewhere on the
// host that copies the host's mount tree for good (bwrap --ro-bind / /,
// which other sandboxes on a shared machine run) would otherwise pin the
// tests' disks at random, and the tests check that Unmount releases them.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(privateNSEnv) == "" {
		os.Exit(reexecPrivate())
	}
	os.Exit(run(m))
}

const privateNSEnv = "DISKIMG_TEST_PRIVATE_MOUNT_NS"

func reexecPrivate() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), privateNSEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Go makes / recursively private in the child when it unshares the
	// mount namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "re-exec the tests in a private mount namespace:", err)
		return 1
	}
	return 0
}

func run(m *testing.M) int {
	root, err := os.MkdirTemp("", "diskimg-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(root)
	if err := os.Setenv("TMPDIR", root); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	before := countLoops()
	code := m.Run()
	leaked, err := AttachedUnder(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leak check:", err)
		return 1
	}
	if len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: loop devices leaked by the tests: %v\n", leaked)
		return 1
	}
	fmt.Printf("loop devices attached (all processes): %d before, %d after; none under %s\n", before, countLoops(), root)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: goroutine leak:", err)
			return 1
		}
	}
	return code
}

// countLoops counts /sys/block/loop*/loop/backing_file, i.e. attached
// loop devices of the whole host.
func countLoops() int {
	m, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	return len(m)
}

// requireLoop skips (or fails under TECHBOSS_REQUIRE_ALL=1) without root,
// loop devices or mkfs.ext4.
func requireLoop(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (loop devices, mounts)"
	} else if _, err := os.Stat("/dev/loop-control"); err != nil {
		why = "no /dev/loop-control (loop module not loaded?)"
	} else if _, err := findMkfs(); err != nil {
		why = "mkfs.ext4 not installed (e2fsprogs)"
	}
	if why == "" {
		return
	}
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// newMounted creates an image of sizeMB in a temp dir and mounts it,
// unmounting (and checking the loop device went away) at cleanup.
func newMounted(t testing.TB, sizeMB int64) *Disk {
	t.Helper()
	return newMountedKind(t, sizeMB, Create)
}

// newMountedKind is newMounted with Create or CreateVolume.
func newMountedKind(t testing.TB, sizeMB int64, create func(context.Context, string, int64) error) *Disk {
	t.Helper()
	requireLoop(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := create(t.Context(), img, sizeMB); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "disk")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := Mount(img, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Unmount(context.Background(), img, mnt); err != nil {
			t.Error(err)
		}
	})
	return d
}

// allocated is the host space a file takes (st_blocks).
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
