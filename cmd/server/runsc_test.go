package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// testRunsc is the runsc the tests use: TECHBOSS_RUNSC_BIN, or the one
// scripts/deps.sh builds into the checkout's .tools/bin; without it the
// test skips, or fails under TECHBOSS_REQUIRE_ALL=1.
func testRunsc(t *testing.T) string {
	t.Helper()
	p := os.Getenv("TECHBOSS_RUNSC_BIN")
	if p == "" {
		p, _ = filepath.Abs(filepath.Join("..", "..", defaultRunsc))
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

// TECHBOSS_LOCAL_RUNTIME=runsc without runsc stops the server at start,
// saying how to get it.
func TestRunscMissing(t *testing.T) {
	sandboxtest.RequireLocal(t)
	env := map[string]string{
		"TECHBOSS_DATA_DIR": t.TempDir(), "TECHBOSS_SANDBOX_INIT": sandboxInit,
		"TECHBOSS_LOCAL_RUNTIME": "runsc", "TECHBOSS_RUNSC_BIN": filepath.Join(t.TempDir(), "no-runsc"),
	}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, io.Discard)
	if err == nil {
		t.Fatal("the server started without runsc")
	}
	for _, want := range []string{"runsc", "scripts/deps.sh", "TECHBOSS_RUNSC_BIN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want it to mention %s", err, want)
		}
	}
}

// With TECHBOSS_LOCAL_RUNTIME=runsc the server's sandboxes run under
// gVisor, through the same API.
func TestRunscSandbox(t *testing.T) {
	sandboxtest.RequireLocal(t)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"TECHBOSS_LOCAL_RUNTIME": "runsc", "TECHBOSS_RUNSC_BIN": testRunsc(t),
	}
	in := start(t, env)
	ctx := context.Background()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.TerminateSandbox(ctx, sb.SandboxID)
	// gVisor's kernel answers: its /proc has files Linux's has not.
	res, err := c.Exec(ctx, sb.SandboxID, client.ExecRequest{Command: []string{"sh", "-c", "test -e /proc/sentry-meminfo && echo gvisor"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "gvisor\n" || res.ExitCode != 0 {
		t.Errorf("got %q exit %d (stderr %q), want gVisor's /proc", res.Stdout, res.ExitCode, res.Stderr)
	}
}
