package security

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// initBin is the sandbox helper built once for the package's tests.
var initBin string

func TestMain(m *testing.M) { os.Exit(sandboxtest.Main(m, &initBin)) }

// requireHost skips or fails t without root and bubblewrap (sandboxtest.RequireLocal).
func requireHost(t testing.TB) { t.Helper(); sandboxtest.RequireLocal(t) }

// runtimes runs f once per runtime of the local driver: bubblewrap, and
// gVisor (runsc), which must hold the same boundary. Where a check means
// something else under gVisor, the test says so and checks gVisor's
// equivalent.
func runtimes(t *testing.T, f func(t *testing.T, rt string)) {
	for _, rt := range []string{local.RuntimeBwrap, local.RuntimeRunsc} {
		t.Run(rt, func(t *testing.T) { f(t, rt) })
	}
}

func newDriver(t testing.TB, rt string) *local.Driver {
	t.Helper()
	return newDriverWith(t, rt, local.Options{})
}

// newDriverWith is newDriver with further options.
func newDriverWith(t testing.TB, rt string, o local.Options) *local.Driver {
	t.Helper()
	requireHost(t)
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	o.InitBinary, o.Runtime = initBin, rt
	if rt == local.RuntimeRunsc {
		o.Runsc = requireRunsc(t)
		o.RunscPlatform = os.Getenv("TECHBOSS_RUNSC_PLATFORM")
	}
	d, err := local.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// requireRunsc returns the runsc the tests use (TECHBOSS_RUNSC_BIN, or
// the one scripts/deps.sh builds into .tools/bin); without it the test
// skips, or fails under TECHBOSS_REQUIRE_ALL=1.
func requireRunsc(t testing.TB) string {
	t.Helper()
	p := os.Getenv("TECHBOSS_RUNSC_BIN")
	if p == "" {
		p = "runsc"
		dir, _ := os.Getwd()
		for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				p = filepath.Join(d, ".tools", "bin", "runsc")
				break
			}
		}
	}
	if _, err := exec.LookPath(p); err == nil {
		return p
	}
	why := "gVisor's runsc not found at " + p + ": run scripts/deps.sh test, or set TECHBOSS_RUNSC_BIN"
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
	return ""
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func create(t testing.TB, d *local.Driver, sp sandbox.Spec) sandbox.Ref {
	t.Helper()
	if sp.ImageBase == "" {
		sp.ImageBase = "host"
	}
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "attacker", Spec: sp})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
	return ref
}

type result struct {
	st             sandbox.ExitStatus
	stdout, stderr string
}

// sh runs script with /bin/sh in the sandbox.
func sh(t testing.TB, d sandbox.Driver, ref sandbox.Ref, script string) result {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return result{st, out.String(), errb.String()}
}

// mustSh is sh for a script that must succeed; it returns stdout.
func mustSh(t testing.TB, d sandbox.Driver, ref sandbox.Ref, script string) string {
	t.Helper()
	r := sh(t, d, ref, script)
	if r.st.Code != 0 {
		t.Fatalf("%q: exit %+v\nstdout: %s\nstderr: %s", script, r.st, r.stdout, r.stderr)
	}
	return r.stdout
}

// buildStatic builds a static Go program of this module into dir.
func buildStatic(t testing.TB, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// tarOf builds a tar stream of regular files (parents implied).
func tarOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
