package httpapi

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox/local"
)

// withRunsc runs the local driver's sandboxes under gVisor
// (TECHBOSS_RUNSC_BIN, or the runsc scripts/deps.sh builds into
// .tools/bin); without runsc the benchmark skips, or fails under
// TECHBOSS_REQUIRE_ALL=1.
func withRunsc(b testing.TB) func(*local.Options) {
	b.Helper()
	p := os.Getenv("TECHBOSS_RUNSC_BIN")
	if p == "" {
		p, _ = filepath.Abs(filepath.Join("..", "..", ".tools", "bin", "runsc"))
	}
	if _, err := exec.LookPath(p); err != nil {
		why := "gVisor's runsc not found at " + p + ": run scripts/deps.sh test, or set TECHBOSS_RUNSC_BIN"
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			b.Fatal(why)
		}
		b.Skip(why)
	}
	return func(o *local.Options) {
		o.Runtime, o.Runsc, o.RunscPlatform = local.RuntimeRunsc, p, os.Getenv("TECHBOSS_RUNSC_PLATFORM")
	}
}

// BenchmarkHTTPCreateFirstExecRunsc is BenchmarkHTTPCreateFirstExec with
// TECHBOSS_LOCAL_RUNTIME=runsc, against the same floor (bubblewrap
// starting `true`).
func BenchmarkHTTPCreateFirstExecRunsc(b *testing.B) { benchCreateFirstExec(b, withRunsc(b)) }

// BenchmarkHTTPExecTrueRunsc is BenchmarkHTTPExecTrue with
// TECHBOSS_LOCAL_RUNTIME=runsc, against the same floor (fork+exec of
// `true` on the host).
func BenchmarkHTTPExecTrueRunsc(b *testing.B) { benchExecTrue(b, withRunsc(b)) }
