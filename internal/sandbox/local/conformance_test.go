package local

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	t.Run(RuntimeBwrap, func(t *testing.T) {
		sandboxtest.Exercise(t, func(t *testing.T) sandbox.Driver { return newTestDriver(t, "") })
	})
	t.Run(RuntimeRunsc, func(t *testing.T) {
		sandboxtest.Exercise(t, func(t *testing.T) sandbox.Driver { return newRunscTestDriver(t, "") })
	})
}

// testRunsc is the runsc the tests use: TECHBOSS_RUNSC_BIN, or the one
// scripts/deps.sh builds into the checkout's .tools/bin.
func testRunsc() string {
	if p := os.Getenv("TECHBOSS_RUNSC_BIN"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, ".tools", "bin", "runsc")
		}
	}
	return "runsc"
}

// requireRunsc skips t without runsc, or fails it under
// TECHBOSS_REQUIRE_ALL=1.
func requireRunsc(t testing.TB) {
	t.Helper()
	requireHost(t)
	if _, err := exec.LookPath(testRunsc()); err == nil {
		return
	}
	why := "gVisor's runsc not found at " + testRunsc() + ": run scripts/deps.sh test, or set TECHBOSS_RUNSC_BIN"
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// newRunscTestDriver is newTestDriver with Runtime runsc.
func newRunscTestDriver(t testing.TB, dataDir string) *Driver {
	t.Helper()
	requireRunsc(t)
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	d, err := New(Options{DataDir: dataDir, InitBinary: initBin, Runtime: RuntimeRunsc, Runsc: testRunsc(), RunscPlatform: os.Getenv("TECHBOSS_RUNSC_PLATFORM")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// What the gVisor runtime cannot start is refused at create, naming the
// field: an ID whose agent socket path would not fit a Unix socket.
func TestRunscRefusesAtCreate(t *testing.T) {
	d := newRunscTestDriver(t, "")
	id := strings.Repeat("x", 100)
	_, err := d.Create(context.Background(), sandbox.CreateRequest{ID: id, OwnerID: "o", Spec: sandbox.Spec{ImageBase: "host"}})
	var fe *errs.Error
	if !errors.As(err, &fe) || fe.Kind != errs.Invalid || len(fe.Fields) != 1 || fe.Fields[0].Field != "id" {
		t.Fatalf("100-character ID under runsc: got %v, want an invalid-field error naming id", err)
	}
	if _, err := os.Stat(d.sandboxDir(id)); err == nil {
		t.Error("the refused sandbox left its directory behind")
	}
}
