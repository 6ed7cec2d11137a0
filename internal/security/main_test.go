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

func newDriver(t testing.TB) *local.Driver {
	t.Helper()
	requireHost(t)
	d, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
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
