package local

import (
	"os"
	"os/exec"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// initBin is the helper built once for the package's tests.
var initBin string

func TestMain(m *testing.M) { os.Exit(sandboxtest.Main(m, &initBin)) }

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
