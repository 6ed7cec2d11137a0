package sandboxtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// BuildInit builds the local driver's static techboss-sandbox-init helper
// to path, as `make build` does next to the server binary. Tests that run
// the local driver call it once (TestMain or a sync.Once).
func BuildInit(path string) error {
	cmd := exec.Command("go", "build", "-o", path, "github.com/techbossai/techboss/cmd/techboss-sandbox-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build techboss-sandbox-init: %v\n%s", err, out)
	}
	return nil
}

// Main is a TestMain for packages that run the local driver: it builds the
// sandbox helper into a temporary directory, sets *initBin to its path,
// runs the tests, removes the directory and, when they passed, fails the
// run on leaked goroutines (ignoring those opts name). It returns the exit
// code for os.Exit.
func Main(m *testing.M, initBin *string, opts ...goleak.Option) int {
	dir, err := os.MkdirTemp("", "techboss-sandbox-init-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*initBin = filepath.Join(dir, "techboss-sandbox-init")
	if err := BuildInit(*initBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	return code
}

// RequireLocal skips t, saying why, when this host cannot run the local
// driver (it needs root and bubblewrap), or fails it instead when
// TECHBOSS_REQUIRE_ALL=1 (as `make test` sets): nothing is skipped there.
func RequireLocal(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for the local sandbox driver (overlay mounts, cgroups, user namespaces)"
	} else if _, err := exec.LookPath("bwrap"); err != nil {
		why = "bubblewrap (bwrap) not installed"
	}
	if why == "" {
		return
	}
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip("why: " + why)
}
