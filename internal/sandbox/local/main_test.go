package local

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// initBin is the helper built once for the package's tests.
var initBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "techboss-init-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	initBin = filepath.Join(dir, "techboss-sandbox-init")
	if err := sandboxtest.BuildInit(initBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireHost skips (or fails under TECHBOSS_REQUIRE_ALL=1) without root and bubblewrap.
func requireHost(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (overlay mounts, cgroups)"
	} else if _, err := exec.LookPath("bwrap"); err != nil {
		why = "bubblewrap (bwrap) not installed"
	}
	if why == "" {
		return
	}
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func newTestDriver(t testing.TB, dataDir string) *Driver {
	t.Helper()
	requireHost(t)
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	d, err := New(Options{DataDir: dataDir, InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}
