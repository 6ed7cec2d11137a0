package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// newSandboxClient serves a real server with the local driver and returns
// a client of a user with one running sandbox.
func newSandboxClient(t *testing.T) (*client.Client, string) {
	t.Helper()
	sandboxtest.RequireLocal(t)
	bin := filepath.Join(t.TempDir(), "techboss-sandbox-init")
	if err := sandboxtest.BuildInit(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db := storetest.OpenSQLite(t)
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	m, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local", Limits: sandbox.DefaultLimits(), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams, AccountLimit: 2})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Store: db, Auth: svc, Sandboxes: m}))
	t.Cleanup(srv.Close)
	u, err := svc.CreateUser(ctx, "dev@example.com", "dev-password-1", auth.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := svc.CreateToken(ctx, u.ID, "t")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL, client.WithToken(string(tok)))
	if err != nil {
		t.Fatal(err)
	}
	created, err := c.CreateSandbox(ctx, client.SandboxSpec{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Destroy(context.Background(), sandbox.Ref(created.SandboxID)) })
	return c, created.SandboxID
}

func TestClientProcessesAndWatch(t *testing.T) {
	c, id := newSandboxClient(t)
	ctx := context.Background()

	// Watch first, so the process's file write is seen.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := make(chan client.WatchEvent, 64)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- c.Watch(wctx, id, "/workspace", true, func(ev client.WatchEvent) error {
			events <- ev
			return nil
		})
	}()
	select {
	case ev := <-events:
		if ev.Type != "ready" {
			t.Fatalf("first watch event %+v, want ready", ev)
		}
	case err := <-watchDone:
		t.Fatalf("watch ended: %v", err)
	}

	p, err := c.StartProcess(ctx, id, client.ProcessSpec{Name: "upper", Command: []string{"sh", "-c", "tr a-z A-Z | tee out.txt; echo done >&2; exit 4"}})
	if err != nil || !p.Managed || p.State != "running" {
		t.Fatalf("StartProcess = %+v, %v", p, err)
	}
	if err := c.ProcessStdin(ctx, id, p.PID, []byte("hello\n"), true); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, dropped, err := c.ProcessLogs(ctx, id, p.PID, true, &out, &errOut)
	if err != nil || code == nil || *code != 4 || dropped != 0 || out.String() != "HELLO\n" || errOut.String() != "done\n" {
		t.Fatalf("ProcessLogs = %v %d %v; stdout %q stderr %q", code, dropped, err, out.String(), errOut.String())
	}
	for ev := range events {
		if ev.Path == "/workspace/out.txt" && (ev.Type == "create" || ev.Type == "write") {
			break
		}
	}
	ps, err := c.Processes(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range ps {
		found = found || (q.PID == p.PID && q.State == "exited" && q.ExitCode != nil && *q.ExitCode == 4 && q.Name == "upper")
	}
	if !found {
		t.Errorf("Processes = %+v, want the exited one", ps)
	}

	sleeper, err := c.StartProcess(ctx, id, client.ProcessSpec{Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(ctx, id, sleeper.PID, "TERM"); err != nil {
		t.Fatal(err)
	}
	if code, _, err := c.ProcessLogs(ctx, id, sleeper.PID, true, nil, nil); err != nil || code == nil || *code != 143 {
		t.Errorf("after SIGTERM: exit %v, %v", code, err)
	}
	var ce *client.Error
	if err := c.Signal(ctx, id, sleeper.PID, "SIGBOGUS"); !errors.As(err, &ce) || ce.StatusCode != 422 {
		t.Errorf("bad signal: %v", err)
	}
	stopWatch()
	if err := <-watchDone; err != nil {
		t.Errorf("Watch after cancel: %v", err)
	}
}

// Start a dev server in the background, read its output, then stop it.
func ExampleClient_StartProcess() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	id := "sbx_..." // a running sandbox
	p, err := c.StartProcess(ctx, id, client.ProcessSpec{Name: "web", Command: []string{"python3", "-m", "http.server", "8000"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	// What it printed so far (follow=true would stream until it exits).
	_, _, _ = c.ProcessLogs(ctx, id, p.PID, false, os.Stdout, os.Stderr)
	_ = c.Signal(ctx, id, p.PID, "SIGTERM")
	// Changes the agent makes under /workspace, as they happen.
	_ = c.Watch(ctx, id, "/workspace", true, func(ev client.WatchEvent) error {
		fmt.Println(ev.Type, ev.Path)
		return nil
	})
}
