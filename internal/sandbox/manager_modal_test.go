package sandbox_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/sandbox/modal/modaltest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestManagerOnModal drives the Modal driver through the Manager against
// the loopback Modal control plane (the real SDK speaking gRPC to it): the
// domain logic is driver-neutral, restart re-adoption included.
func TestManagerOnModal(t *testing.T) {
	if _, err := exec.LookPath("bwrap"); err != nil {
		if storetest.RequireAll() {
			t.Fatal("bubblewrap is required by the loopback Modal server")
		}
		t.Skip("why: the loopback Modal server runs commands with bubblewrap, not installed")
	}
	srv, err := modaltest.Start(modaltest.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("MODAL_SERVER_URL", srv.URL())
	t.Setenv("MODAL_CONFIG_PATH", filepath.Join(t.TempDir(), "no-profile.toml"))
	for _, k := range []string{"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_ENVIRONMENT", "MODAL_PROFILE"} {
		t.Setenv(k, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := storetest.OpenSQLite(t)
	clk := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	newManager := func() *sandbox.Manager {
		d, err := modal.New(ctx, modal.Options{TokenID: modaltest.DefaultTokenID, TokenSecret: modaltest.DefaultTokenSecret})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		m, err := sandbox.NewManager(sandbox.Deps{
			Repo: db, Drivers: map[string]sandbox.Driver{"modal": d}, DefaultDriver: "modal",
			Limits: sandbox.DefaultLimits(), Now: clk.Now, Metrics: prometheus.NewRegistry(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := newManager()
	sb, err := m.Create(ctx, "alice", sandbox.Spec{ImageBase: "alpine:3.20", IdleTimeoutS: 120})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if sb.Driver != "modal" || sb.Ref == "" {
		t.Fatalf("created %+v", sb)
	}
	var out bytes.Buffer
	st, err := m.Exec(ctx, "alice", sb.ID, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo on-modal; exit 5"}, Stdout: &out})
	if err != nil || st.Code != 5 || out.String() != "on-modal\n" {
		t.Fatalf("Exec = %q, %+v, %v", out.String(), st, err)
	}
	_, err = m.Exec(ctx, "bob", sb.ID, sandbox.ExecRequest{Argv: []string{"true"}})
	wantKind(t, err, errs.NotFound)
	// Preview ports on Modal are its tunnels, declared at create: listed
	// with their public URLs; the server's proxy does not dial them (a
	// clear 501), after the owner check.
	ports, err := m.ListPorts(ctx, "alice", sb.ID)
	if err != nil || len(ports) != 0 {
		t.Fatalf("ports of a sandbox that published none: %v %v", ports, err)
	}
	withPorts, err := m.Create(ctx, "alice", sandbox.Spec{ImageBase: "alpine:3.20", Ports: []int{8000, 3000}})
	if err != nil {
		t.Fatal(err)
	}
	if rec := srv.Creates(); !slices.Equal(portsOf(rec[len(rec)-1].Raw.GetOpenPorts().GetPorts()), []uint32{8000, 3000}) {
		t.Errorf("create asked Modal for ports %v", portsOf(rec[len(rec)-1].Raw.GetOpenPorts().GetPorts()))
	}
	ports, err = m.ListPorts(ctx, "alice", withPorts.ID)
	if err != nil || len(ports) != 2 || ports[0].Port != 3000 || ports[1].URL != "https://"+modaltest.TunnelHost(mustModalID(t, withPorts.Ref), 8000) {
		t.Fatalf("tunnels: %+v %v", ports, err)
	}
	_, err = m.DialPort(ctx, "alice", withPorts.ID, 8000)
	wantKind(t, err, errs.NotImplemented)
	_, err = m.ListPorts(ctx, "bob", withPorts.ID)
	wantKind(t, err, errs.NotFound)
	if !slices.Contains(m.Capabilities(sb), "ports") {
		t.Errorf("modal capabilities %q do not name ports", m.Capabilities(sb))
	}
	if _, err := m.Terminate(ctx, "alice", withPorts.ID); err != nil {
		t.Fatal(err)
	}

	// Managed processes run as background execs the driver follows.
	dev, err := m.StartProcess(ctx, "alice", sb.ID, sandbox.ProcessSpec{Name: "dev", Command: []string{"sh", "-c", "echo up; exec sleep 600"}})
	if err != nil || !dev.Managed || dev.Name != "dev" {
		t.Fatalf("StartProcess = %+v, %v", dev, err)
	}
	if !slices.Contains(m.Capabilities(sb), "processes") {
		t.Errorf("modal capabilities %q do not name processes", m.Capabilities(sb))
	}
	_, err = m.ListProcesses(ctx, "bob", sb.ID)
	wantKind(t, err, errs.NotFound)

	// Restart: a new SDK client and Manager re-adopt the running sandbox.
	m = newManager()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := m.Exec(ctx, "alice", sb.ID, sandbox.ExecRequest{Argv: []string{"echo", "again"}, Stdout: &out}); err != nil || out.String() != "again\n" {
		t.Fatalf("exec after restart = %q, %v", out.String(), err)
	}
	if caps := strings.Join(m.Capabilities(sb), ","); !strings.Contains(caps, "files") || strings.Contains(caps, "pty") {
		t.Errorf("modal capabilities %q", caps)
	}
	// The managed process outlived the restart in the sandbox, and so did
	// its log (kept in the sandbox by the driver's wrapper, the image has
	// python3): listed as managed under its name, its output readable, still
	// signallable. Its stdin stayed with the old server.
	procs, err := m.ListProcesses(ctx, "alice", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(procs, func(p sandbox.Process) bool { return p.PID == dev.PID })
	if i < 0 || !procs[i].Managed || procs[i].Name != "dev" || procs[i].State != "running" {
		t.Errorf("after restart the dev process is %v in %d processes (%+v)", i, len(procs), procs)
	}
	var kept strings.Builder
	if err := m.ProcessLogs(ctx, "alice", sb.ID, dev.PID, false, 0, nil, func(o sandbox.ProcessOutput) error {
		kept.Write(o.Data)
		return nil
	}); err != nil || kept.String() != "up\n" {
		t.Errorf("logs after restart = %q, %v; want \"up\\n\"", kept.String(), err)
	}
	if err := m.SignalProcess(ctx, "alice", sb.ID, dev.PID, "KILL"); err != nil {
		t.Errorf("signal after restart: %v", err)
	}
	// File watching runs through an exec of the driver's watcher; the
	// stream's events carry ids (the shared watch ends with the reap below).
	if !slices.Contains(m.Capabilities(sb), "watch") {
		t.Errorf("modal capabilities %q do not name watch", m.Capabilities(sb))
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan sandbox.WatchEvent, 16)
	watchDone := make(chan error, 1)
	watchReady := make(chan struct{})
	go func() {
		watchDone <- m.Watch(wctx, "alice", sb.ID, "/workspace", true, "", func() { close(watchReady) }, func(ev sandbox.WatchEvent) error {
			watched <- ev
			return nil
		})
	}()
	select {
	case <-watchReady:
	case err := <-watchDone:
		t.Fatalf("watch on modal: %v", err)
	}
	if _, err := m.Exec(ctx, "alice", sb.ID, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo x > /workspace/watched.txt"}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-watched; ev.Type != "create" || ev.Path != "/workspace/watched.txt" || ev.Kind != "file" || ev.ID == "" {
		t.Errorf("first watch event on modal: %+v", ev)
	}
	stopWatch()
	if err := <-watchDone; err != nil {
		t.Errorf("watch on modal ended with %v", err)
	}
	err = m.Watch(ctx, "bob", sb.ID, "/workspace", true, "", nil, func(sandbox.WatchEvent) error { return nil })
	wantKind(t, err, errs.NotFound)

	// No terminals on Modal (its SDK's PTY exec has neither resize nor
	// re-attach): a clear 501, after the owner check.
	_, err = m.AttachPTY(ctx, "alice", sb.ID, sandbox.PTYRequest{Cols: 80, Rows: 24})
	wantKind(t, err, errs.NotImplemented)
	_, err = m.ListPTY(ctx, "alice", sb.ID)
	wantKind(t, err, errs.NotImplemented)
	_, err = m.AttachPTY(ctx, "bob", sb.ID, sandbox.PTYRequest{Cols: 80, Rows: 24})
	wantKind(t, err, errs.NotFound)

	// The reaper ends it after its idle timeout, through the driver.
	clk.Advance(121 * time.Second)
	if n, err := m.Reap(ctx); err != nil || n != 1 {
		t.Fatalf("Reap = %d, %v", n, err)
	}
	got, err := m.Get(ctx, "alice", sb.ID)
	if err != nil || got.State != sandbox.Terminated {
		t.Fatalf("after reap: %+v, %v", got, err)
	}
	if alive, err := newManagerDriverAlive(ctx, sb.Ref); err == nil && alive {
		t.Error("the reaped Modal sandbox still runs")
	}
}

// newManagerDriverAlive asks a fresh Modal driver whether ref still runs.
func newManagerDriverAlive(ctx context.Context, ref sandbox.Ref) (bool, error) {
	d, err := modal.New(ctx, modal.Options{TokenID: modaltest.DefaultTokenID, TokenSecret: modaltest.DefaultTokenSecret})
	if err != nil {
		return false, err
	}
	defer d.Close()
	return d.Recover(ctx, ref)
}

func portsOf(ps []*pb.PortSpec) []uint32 {
	var out []uint32
	for _, p := range ps {
		out = append(out, p.GetPort())
	}
	return out
}

func mustModalID(t *testing.T, ref sandbox.Ref) string {
	t.Helper()
	id, err := modal.SandboxID(ref)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
