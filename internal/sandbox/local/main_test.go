package local

import (
	"os"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// initBin is the helper built once for the package's tests.
var initBin string

func TestMain(m *testing.M) { os.Exit(sandboxtest.Main(m, &initBin)) }

// requireHost skips or fails t without root and bubblewrap (sandboxtest.RequireLocal).
func requireHost(t testing.TB) { t.Helper(); sandboxtest.RequireLocal(t) }

// newTestDriver returns a bubblewrap driver. TECHBOSS_TEST_LOCAL_RUNTIME=runsc
// makes it a gVisor one, to run the whole package under gVisor by hand;
// the tests that read the host cgroup's counters (pids.events,
// pids.current) or expect a sandbox to survive its memory limit are
// bubblewrap's and fail there (docs/security.md says why).
func newTestDriver(t testing.TB, dataDir string) *Driver {
	t.Helper()
	requireHost(t)
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	if os.Getenv("TECHBOSS_TEST_LOCAL_RUNTIME") == RuntimeRunsc {
		return newRunscTestDriver(t, dataDir)
	}
	d, err := New(Options{DataDir: dataDir, InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}
