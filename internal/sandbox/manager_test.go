package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// initBin is the local driver's sandbox helper, built once for these tests.
var initBin string

func TestMain(m *testing.M) {
	os.Exit(sandboxtest.Main(m, &initBin, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener")))
}

// requireHost skips or fails t without root and bubblewrap (sandboxtest.RequireLocal).
func requireHost(t testing.TB) { t.Helper(); sandboxtest.RequireLocal(t) }

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is one server's worth of sandbox domain over a real DB and a real
// local driver. restart builds a new driver and Manager over the same DB
// and data dir, as a server restart does.
type env struct {
	t       *testing.T
	db      *store.DB
	dataDir string
	clock   *clock
	limits  sandbox.Limits
	hooks   sandbox.Hooks
	events  sandbox.EventSink
	drv     *local.Driver
	m       *sandbox.Manager
	reg     *prometheus.Registry
	// host and hostTimeout are sandbox.Deps.Host and HostTimeout.
	host        string
	hostTimeout time.Duration
	// warm is the driver's warm pool size and drvReg its metrics (nil:
	// none); repo, when set, is the Manager's Repo (wrapping db).
	warm   int
	drvReg *prometheus.Registry
	repo   sandbox.Repo
}

func newEnv(t *testing.T, tweak func(*env)) *env {
	t.Helper()
	requireHost(t)
	e := &env{
		t: t, dataDir: t.TempDir(),
		clock:  &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		limits: sandbox.DefaultLimits(),
	}
	if tweak != nil {
		tweak(e)
	}
	if e.db == nil {
		e.db = storetest.OpenSQLite(t)
	}
	e.start()
	t.Cleanup(e.destroyAll)
	return e
}

func (e *env) start() {
	e.t.Helper()
	o := local.Options{DataDir: e.dataDir, InitBinary: initBin, WarmPool: e.warm}
	if e.drvReg != nil {
		o.Metrics = e.drvReg
	}
	drv, err := local.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = drv.Close() })
	e.reg = prometheus.NewRegistry()
	var repo sandbox.Repo = e.db
	if e.repo != nil {
		repo = e.repo
	}
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: repo, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local",
		Limits: e.limits, Hooks: e.hooks, Now: e.clock.Now, Metrics: e.reg, Events: e.events,
		Host: e.host, HostTimeout: e.hostTimeout,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.drv, e.m = drv, m
}

// destroyAll leaves no sandbox process behind, whatever the test did.
func (e *env) destroyAll() {
	items, err := e.db.ListSandboxes(context.Background(), sandbox.ListFilter{})
	if err != nil {
		e.t.Errorf("cleanup: %v", err)
		return
	}
	for _, sb := range items {
		if err := e.drv.Destroy(context.Background(), sandbox.Ref(sb.ID)); err != nil {
			e.t.Errorf("cleanup destroy %s: %v", sb.ID, err)
		}
	}
}

func (e *env) create(owner string, spec sandbox.Spec) *sandbox.Sandbox {
	e.t.Helper()
	sb, err := e.m.Create(context.Background(), owner, spec)
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	return sb
}

func (e *env) exec(owner, id string, argv ...string) (string, sandbox.ExitStatus, error) {
	var out bytes.Buffer
	st, err := e.m.Exec(context.Background(), owner, id, sandbox.ExecRequest{Argv: argv, Stdout: &out, Stderr: &out})
	return out.String(), st, err
}

func (e *env) state(id string) *sandbox.Sandbox {
	e.t.Helper()
	sb, err := e.db.GetSandbox(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

func (e *env) reap(want int) {
	e.t.Helper()
	n, err := e.m.Reap(context.Background())
	if err != nil {
		e.t.Fatalf("Reap: %v", err)
	}
	if n != want {
		e.t.Fatalf("Reap terminated %d sandboxes, want %d", n, want)
	}
}

func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if errs.KindOf(err) != k {
		t.Fatalf("got error %v (kind %v), want kind %v", err, errs.KindOf(err), k)
	}
}

func TestManagerLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.create("alice", sandbox.Spec{Env: map[string]string{"SECRET_TOKEN": "s3cr3t"}, Labels: map[string]string{"team": "a"}})
	if sb.State != sandbox.Running || !strings.HasPrefix(sb.ID, "sb_") {
		t.Fatalf("created %+v, want a running sb_ sandbox", sb)
	}
	out, st, err := e.exec("alice", sb.ID, "sh", "-c", "echo $SECRET_TOKEN; exit 3")
	if err != nil || st.Code != 3 || out != "s3cr3t\n" {
		t.Fatalf("exec = %q, %+v, %v; want the env value and exit 3", out, st, err)
	}
	// The env value reached the sandbox but not the database.
	var raw string
	if err := e.db.SQL().QueryRowContext(ctx, "SELECT spec FROM sandboxes WHERE id = ?", sb.ID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(raw, "s3cr3t") || !strings.Contains(raw, "SECRET_TOKEN") {
		t.Errorf("stored spec %s: want the env name without its value", raw)
	}

	// Another owner sees nothing, on every operation.
	_, err = e.m.Get(ctx, "bob", sb.ID)
	wantKind(t, err, errs.NotFound)
	_, _, err = e.exec("bob", sb.ID, "true")
	wantKind(t, err, errs.NotFound)
	_, err = e.m.ListDir(ctx, "bob", sb.ID, "/workspace")
	wantKind(t, err, errs.NotFound)
	_, err = e.m.Terminate(ctx, "bob", sb.ID)
	wantKind(t, err, errs.NotFound)
	_, _, err = e.m.BuildLog(ctx, "bob", sb.ID)
	wantKind(t, err, errs.NotFound)
	if items, _, err := e.m.List(ctx, "bob", sandbox.ListFilter{}); err != nil || len(items) != 0 {
		t.Errorf("bob's list = %v, %v; want empty", items, err)
	}
	items, _, err := e.m.List(ctx, "alice", sandbox.ListFilter{Labels: map[string]string{"team": "a"}, States: []sandbox.State{sandbox.Running}})
	if err != nil || len(items) != 1 || items[0].ID != sb.ID {
		t.Errorf("alice's filtered list = %v, %v; want her sandbox", items, err)
	}

	blog, _, err := e.m.BuildLog(ctx, "alice", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if data, _, done, _ := blog.Read(0); !done || !strings.Contains(string(data), "sandbox running") {
		t.Errorf("build log %q (done %v), want the start progress", data, done)
	}

	if caps := strings.Join(e.m.Capabilities(sb), ","); caps != "files,archive,workspace_dir,volumes,net_listener,ports,pty,processes,watch" {
		t.Errorf("local capabilities %s", caps)
	}

	got, err := e.m.Terminate(ctx, "alice", sb.ID)
	if err != nil || got.State != sandbox.Terminated || got.TerminatedAt == nil {
		t.Fatalf("Terminate = %+v, %v", got, err)
	}
	// Idempotent.
	if got, err := e.m.Terminate(ctx, "alice", sb.ID); err != nil || got.State != sandbox.Terminated {
		t.Fatalf("second Terminate = %+v, %v", got, err)
	}
	_, _, err = e.exec("alice", sb.ID, "true")
	wantKind(t, err, errs.Conflict)
	if alive, err := e.drv.Recover(ctx, sb.Ref); alive || err != nil {
		t.Errorf("driver still runs the terminated sandbox (alive %v, err %v)", alive, err)
	}
}

func TestManagerBadSpecs(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		spec  sandbox.Spec
		field string
	}{
		{"bad dockerfile line", sandbox.Spec{DockerfileCommands: []string{"RUN true", "COPY . /src"}}, "dockerfile_commands[1]"},
		{"over maximum", sandbox.Spec{MemoryMB: 1 << 20}, "memory_mb"},
		{"unknown network", sandbox.Spec{Network: sandbox.Network{Mode: "bridge"}}, "network"},
		{"snapshot without storage", sandbox.Spec{FromSnapshot: "snap1"}, "from_snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Create(ctx, "alice", tc.spec)
			pe, ok := errs.Public(err)
			if !ok || pe.Kind != errs.Invalid || len(pe.Fields) == 0 || pe.Fields[0].Field != tc.field {
				t.Fatalf("Create = %v, want invalid naming %s", err, tc.field)
			}
		})
	}
	// Nothing was persisted for specs refused up front.
	if items, _ := e.db.ListSandboxes(ctx, sandbox.ListFilter{}); len(items) != 0 {
		t.Errorf("refused specs left records: %v", items)
	}

	t.Run("unknown image", func(t *testing.T) {
		_, err := e.m.Create(ctx, "alice", sandbox.Spec{ImageBase: "127.0.0.1:1/no/such-image:latest"})
		if err == nil {
			t.Fatal("Create with an unreachable image succeeded")
		}
		pe, ok := errs.Public(err)
		if !ok || pe.Kind == errs.Internal {
			t.Fatalf("Create = %v, want a public 4xx error", err)
		}
		items, _ := e.db.ListSandboxes(ctx, sandbox.ListFilter{States: []sandbox.State{sandbox.Failed}})
		if len(items) != 1 || items[0].Reason == "" {
			t.Fatalf("failed records = %+v, want one with a reason", items)
		}
		blog, _, err := e.m.BuildLog(ctx, "alice", items[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if data, _, done, _ := blog.Read(0); !done || !strings.Contains(string(data), "create failed") {
			t.Errorf("failed create's log %q (done %v)", data, done)
		}
	})
}

func TestManagerQuota(t *testing.T) {
	e := newEnv(t, func(e *env) { e.limits.MaxRunningPerUser = 1 })
	ctx := context.Background()
	a := e.create("alice", sandbox.Spec{})
	_, err := e.m.Create(ctx, "alice", sandbox.Spec{})
	wantKind(t, err, errs.TooMany)
	if !strings.Contains(err.Error(), "quota") || !strings.Contains(err.Error(), "maximum is 1") {
		t.Errorf("quota message %q is not clear", err)
	}
	e.create("bob", sandbox.Spec{}) // quotas are per user
	if _, err := e.m.Terminate(ctx, "alice", a.ID); err != nil {
		t.Fatal(err)
	}
	e.create("alice", sandbox.Spec{})
}

func TestReaperIdle(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create("alice", sandbox.Spec{IdleTimeoutS: 60})
	e.clock.Advance(30 * time.Second)
	e.reap(0)
	if _, _, err := e.exec("alice", sb.ID, "true"); err != nil { // activity at +30s
		t.Fatal(err)
	}
	e.clock.Advance(50 * time.Second) // +80s: idle for 50s
	e.reap(0)
	e.clock.Advance(11 * time.Second) // idle for 61s
	e.reap(1)
	got := e.state(sb.ID)
	if got.State != sandbox.Terminated || got.Reason != "idle timeout" {
		t.Fatalf("after idle: %s (%s), want terminated (idle timeout)", got.State, got.Reason)
	}
	want := `
# HELP techboss_sandbox_reaped_total Sandboxes terminated (or found lost) by the reaper, by reason.
# TYPE techboss_sandbox_reaped_total counter
techboss_sandbox_reaped_total{reason="idle timeout"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "techboss_sandbox_reaped_total"); err != nil {
		t.Error(err)
	}
}

func TestReaperBusyIsActive(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create("alice", sandbox.Spec{IdleTimeoutS: 60})
	release := e.m.MarkBusy(sb.ID) // an agent run in progress
	e.clock.Advance(2 * time.Hour)
	e.reap(0)
	e.clock.Advance(2 * time.Hour)
	e.reap(0)
	release()
	release() // twice is harmless
	e.clock.Advance(59 * time.Second)
	e.reap(0)
	e.clock.Advance(2 * time.Second)
	e.reap(1)
	if got := e.state(sb.ID); got.State != sandbox.Terminated {
		t.Fatalf("state %s, want terminated", got.State)
	}
}

func TestReaperMaxLifetime(t *testing.T) {
	e := newEnv(t, func(e *env) { e.limits.MaxLifetime = time.Hour })
	sb := e.create("alice", sandbox.Spec{MaxLifetimeS: 120, IdleTimeoutS: 3600})
	release := e.m.MarkBusy(sb.ID) // busy does not extend the lifetime
	defer release()
	e.clock.Advance(119 * time.Second)
	e.reap(0)
	e.clock.Advance(time.Second)
	e.reap(1)
	if got := e.state(sb.ID); got.State != sandbox.Terminated || got.Reason != "max lifetime reached" {
		t.Fatalf("state %s (%s), want terminated (max lifetime reached)", got.State, got.Reason)
	}

	// A lowered server maximum applies to sandboxes created before it.
	sb2 := e.create("alice", sandbox.Spec{MaxLifetimeS: 3600, IdleTimeoutS: 3600})
	e.limits.MaxLifetime = 10 * time.Minute
	e.start()
	e.clock.Advance(10 * time.Minute)
	e.reap(1)
	if got := e.state(sb2.ID); got.State != sandbox.Terminated {
		t.Fatalf("state %s, want terminated by the lowered maximum", got.State)
	}
}

func TestRunStopsAndKeepsActivity(t *testing.T) {
	e := newEnv(t, func(e *env) { e.limits.ReapInterval = time.Hour })
	sb := e.create("alice", sandbox.Spec{})
	e.clock.Advance(10 * time.Minute)
	e.m.Touch(sb.ID)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.m.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := e.state(sb.ID); !got.LastActiveAt.Equal(e.clock.Now()) {
		t.Errorf("last_active_at %v after shutdown, want the touch at %v", got.LastActiveAt, e.clock.Now())
	}
}

func TestRestartReadopts(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.create("alice", sandbox.Spec{})
	if _, _, err := e.exec("alice", sb.ID, "sh", "-c", "echo kept > /tmp/marker"); err != nil {
		t.Fatal(err)
	}
	e.start() // new driver instance and Manager, same DB and data dir
	if err := e.m.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := e.state(sb.ID); got.State != sandbox.Running {
		t.Fatalf("after restart: %s (%s), want running", got.State, got.Reason)
	}
	out, st, err := e.exec("alice", sb.ID, "cat", "/tmp/marker")
	if err != nil || st.Code != 0 || out != "kept\n" {
		t.Fatalf("exec after restart = %q, %+v, %v", out, st, err)
	}
	if _, err := e.m.Terminate(ctx, "alice", sb.ID); err != nil {
		t.Fatal(err)
	}
}

// killBehindBack kills the host processes of a sandbox the way an admin or
// the OOM killer would: found by the sandbox ID on their command line or in
// their cgroup path. It returns once every one of them has exited.
func killBehindBack(t *testing.T, id string) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		cg, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cgroup"))
		if !bytes.Contains(cmd, []byte(id)) && !bytes.Contains(cg, []byte(id)) {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // already gone
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
			unix.Close(fd)
			continue
		}
		fds = append(fds, fd)
	}
	if len(fds) == 0 {
		t.Fatalf("found no host process of sandbox %s", id)
	}
	for _, fd := range fds {
		// A pidfd becomes readable when its process exits.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(pfd, 10_000); err != unix.EINTR {
				break
			}
		}
		unix.Close(fd)
	}
}

func TestLostAfterRestart(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.create("alice", sandbox.Spec{})
	keep := e.create("alice", sandbox.Spec{})
	killBehindBack(t, sb.ID)
	e.start()
	if err := e.m.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := e.state(sb.ID); got.State != sandbox.Lost || got.Reason == "" {
		t.Fatalf("killed sandbox: %s (%q), want lost with a reason", got.State, got.Reason)
	}
	if got := e.state(keep.ID); got.State != sandbox.Running {
		t.Fatalf("untouched sandbox: %s, want running", got.State)
	}
	// Deleting a lost one marks it terminated (nothing runs).
	if got, err := e.m.Terminate(ctx, "alice", sb.ID); err != nil || got.State != sandbox.Terminated || got.Reason == "" {
		t.Fatalf("Terminate(lost) = %+v, %v; want terminated keeping the reason", got, err)
	}
}

func TestLostWhileRunning(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create("alice", sandbox.Spec{})
	killBehindBack(t, sb.ID)
	_, _, err := e.exec("alice", sb.ID, "true")
	wantKind(t, err, errs.Conflict)
	if got := e.state(sb.ID); got.State != sandbox.Lost || got.Reason == "" {
		t.Fatalf("after a failed exec in a killed sandbox: %s (%q), want lost", got.State, got.Reason)
	}
}

func TestReconcileInterrupted(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	// A create the server died in the middle of.
	now := e.clock.Now()
	creating := &sandbox.Sandbox{ID: "sb_interrupted", OwnerID: "alice", State: sandbox.Creating, Driver: "local", CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
	if err := e.db.CreateSandbox(ctx, creating); err != nil {
		t.Fatal(err)
	}
	// A terminate the server died in the middle of.
	term := e.create("alice", sandbox.Spec{})
	term.State = sandbox.Terminating
	if err := e.db.UpdateSandbox(ctx, term); err != nil {
		t.Fatal(err)
	}
	// A sandbox on a driver this server no longer has.
	gone := &sandbox.Sandbox{ID: "sb_modal", OwnerID: "alice", State: sandbox.Running, Driver: "modal", Ref: "x", CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
	if err := e.db.CreateSandbox(ctx, gone); err != nil {
		t.Fatal(err)
	}
	e.start()
	if err := e.m.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	for id, want := range map[string]sandbox.State{creating.ID: sandbox.Failed, term.ID: sandbox.Terminated, gone.ID: sandbox.Lost} {
		if got := e.state(id); got.State != want {
			t.Errorf("%s: %s (%s), want %s", id, got.State, got.Reason, want)
		}
	}
	if alive, _ := e.drv.Recover(ctx, term.Ref); alive {
		t.Error("the interrupted terminate left the sandbox running")
	}
}

func TestHooks(t *testing.T) {
	var (
		mu     sync.Mutex
		calls  []string
		failOn = "sb_none"
	)
	events := &eventLog{}
	e := newEnv(t, func(e *env) {
		e.events = events
		e.hooks = sandbox.Hooks{
			AfterCreate: func(ctx context.Context, sb *sandbox.Sandbox) error {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, "after:"+sb.Spec.S3KeyPrefix)
				if sb.Spec.S3KeyPrefix == "fail/" {
					failOn = sb.ID
					return errs.E(errs.Dependency, "bucket refused the import")
				}
				if sb.State != sandbox.Creating || sb.Ref == "" {
					return fmt.Errorf("hook saw state %s ref %q", sb.State, sb.Ref)
				}
				return nil
			},
			BeforeTerminate: func(ctx context.Context, sb *sandbox.Sandbox) error {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, "before:"+string(sb.State))
				return errors.New("snapshot store down")
			},
		}
	})
	ctx := context.Background()
	sb := e.create("alice", sandbox.Spec{S3BucketName: "bucket-1", S3KeyPrefix: "ok/", InitFromS3: true})
	_, err := e.m.Create(ctx, "alice", sandbox.Spec{S3BucketName: "bucket-1", S3KeyPrefix: "fail/", InitFromS3: true})
	wantKind(t, err, errs.Dependency)
	if got := e.state(failOn); got.State != sandbox.Failed || got.Reason != "bucket refused the import" {
		t.Errorf("failed hook: %s (%q)", got.State, got.Reason)
	}
	if alive, _ := e.drv.Recover(ctx, sandbox.Ref(failOn)); alive {
		t.Error("a sandbox whose create hook failed still runs")
	}
	// The failed create is one sandbox.failed event for its owner (webhooks).
	want := []string{"alice sandbox.failed " + failOn + " bucket refused the import"}
	if got := events.all(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
	got, err := e.m.Terminate(ctx, "alice", sb.ID)
	if err != nil || got.State != sandbox.Terminated || !strings.Contains(got.Reason, "final snapshot failed") {
		t.Fatalf("Terminate = %+v, %v; want terminated noting the failed snapshot", got, err)
	}
	// ... and a snapshot.failed event, without the cause's text (not public).
	want = append(want, "alice snapshot.failed "+sb.ID+" final=true the final snapshot before the sandbox stopped failed (the server log has the cause)")
	if got := events.all(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "after:ok/ after:fail/ before:terminating"; strings.Join(calls, " ") != want {
		t.Errorf("hook calls %q, want %q", strings.Join(calls, " "), want)
	}
}

func TestVolumes(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.create("alice", sandbox.Spec{VolumeName: "data"})
	if _, _, err := e.exec("alice", sb.ID, "sh", "-c", "echo persisted > /workspace/f"); err != nil {
		t.Fatal(err)
	}
	vs, err := e.m.ListVolumes(ctx, "alice", "")
	if err != nil || len(vs) != 1 || vs[0].Name != "data" || !vs[0].InUse {
		t.Fatalf("ListVolumes = %+v, %v; want data in use", vs, err)
	}
	if vs, _ := e.m.ListVolumes(ctx, "bob", ""); len(vs) != 0 {
		t.Errorf("bob sees volumes %+v", vs)
	}
	wantKind(t, e.m.DeleteVolume(ctx, "alice", "", "data"), errs.Conflict)
	wantKind(t, e.m.DeleteVolume(ctx, "bob", "", "data"), errs.NotFound)
	if _, err := e.m.Terminate(ctx, "alice", sb.ID); err != nil {
		t.Fatal(err)
	}
	// The next sandbox on the volume sees the data.
	sb2 := e.create("alice", sandbox.Spec{VolumeName: "data"})
	out, _, err := e.exec("alice", sb2.ID, "cat", "/workspace/f")
	if err != nil || out != "persisted\n" {
		t.Fatalf("volume content = %q, %v", out, err)
	}
	if _, err := e.m.Terminate(ctx, "alice", sb2.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteVolume(ctx, "alice", "", "data"); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if vs, _ := e.m.ListVolumes(ctx, "alice", ""); len(vs) != 0 {
		t.Errorf("after delete: %+v", vs)
	}
	wantKind(t, e.m.DeleteVolume(ctx, "alice", "", "data"), errs.NotFound)
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create("alice", sandbox.Spec{})
	if _, _, err := e.exec("alice", sb.ID, "true"); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP techboss_sandbox_sandboxes Sandboxes by state.
# TYPE techboss_sandbox_sandboxes gauge
techboss_sandbox_sandboxes{state="creating"} 0
techboss_sandbox_sandboxes{state="failed"} 0
techboss_sandbox_sandboxes{state="lost"} 0
techboss_sandbox_sandboxes{state="running"} 1
techboss_sandbox_sandboxes{state="terminated"} 0
techboss_sandbox_sandboxes{state="terminating"} 0
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "techboss_sandbox_sandboxes"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(e.reg, "techboss_sandbox_create_duration_seconds", "techboss_sandbox_exec_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration histograms: %d series, %v; want 2", n, err)
	}
}

func TestFilesThroughManager(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.create("alice", sandbox.Spec{})
	if _, err := e.m.WriteFile(ctx, "alice", sb.ID, "dir/a.txt", 0o600, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	fi, err := e.m.ReadFile(ctx, "alice", sb.ID, "/workspace/dir/a.txt", &buf)
	if err != nil || buf.String() != "hello" || fi.Size != 5 {
		t.Fatalf("ReadFile = %q, %+v, %v", buf.String(), fi, err)
	}
	_, err = e.m.ReadFile(ctx, "alice", sb.ID, "../etc/passwd", &buf)
	wantKind(t, err, errs.Invalid)
	_, err = e.m.ReadFile(ctx, "bob", sb.ID, "dir/a.txt", &buf)
	wantKind(t, err, errs.NotFound)
	// File operations count as activity.
	e.clock.Advance(29 * time.Minute)
	if _, err := e.m.ListDir(ctx, "alice", sb.ID, "dir"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(29 * time.Minute)
	e.reap(0)
}

func TestQuotaUnderConcurrentCreates(t *testing.T) {
	e := newEnv(t, func(e *env) { e.limits.MaxRunningPerUser = 2 })
	results := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := e.m.Create(context.Background(), "alice", sandbox.Spec{})
			results <- err
		}()
	}
	ok, tooMany := 0, 0
	for range 5 {
		switch err := <-results; {
		case err == nil:
			ok++
		case errs.KindOf(err) == errs.TooMany:
			tooMany++
		default:
			t.Errorf("Create: %v", err)
		}
	}
	if ok != 2 || tooMany != 3 {
		t.Fatalf("%d created and %d refused, want 2 and 3", ok, tooMany)
	}
}

func TestTerminateStopsRunningExec(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create("alice", sandbox.Spec{})
	started := make(chan struct{})
	var once sync.Once
	type result struct {
		st  sandbox.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.m.Exec(context.Background(), "alice", sb.ID, sandbox.ExecRequest{
			Argv:   []string{"sh", "-c", "echo up; exec sleep 600"},
			Stdout: writerFunc(func(p []byte) { once.Do(func() { close(started) }) }),
		})
		done <- result{st, err}
	}()
	<-started
	if _, err := e.m.Terminate(context.Background(), "alice", sb.ID); err != nil {
		t.Fatal(err)
	}
	r := <-done // must not hang: terminate kills every process of the sandbox
	if r.err == nil && r.st.Code == 0 && r.st.Signal == "" {
		t.Fatalf("exec survived terminate: %+v", r.st)
	}
}

// writerFunc calls f with every write.
type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
}

func TestReaperFindsLost(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create("alice", sandbox.Spec{IdleTimeoutS: 3600})
	keep := e.create("alice", sandbox.Spec{IdleTimeoutS: 3600})
	e.reap(0) // first liveness check: both alive
	killBehindBack(t, sb.ID)
	e.clock.Advance(30 * time.Second)
	e.reap(0) // not due yet
	if got := e.state(sb.ID); got.State != sandbox.Running {
		t.Fatalf("checked before the liveness interval: %s", got.State)
	}
	e.clock.Advance(31 * time.Second)
	e.reap(0)
	got := e.state(sb.ID)
	if got.State != sandbox.Lost || got.Reason == "" {
		t.Fatalf("killed sandbox: %s (%q), want lost", got.State, got.Reason)
	}
	if got := e.state(keep.ID); got.State != sandbox.Running {
		t.Fatalf("live sandbox: %s, want running", got.State)
	}
}

// TestManagerOnPostgres runs the lifecycle, quota, reaper and restart paths
// over PostgreSQL (the other tests use SQLite).
func TestManagerOnPostgres(t *testing.T) {
	e := newEnv(t, func(e *env) {
		e.db = storetest.OpenPostgres(e.t)
		e.limits.MaxRunningPerUser = 2
	})
	ctx := context.Background()
	a := e.create("alice", sandbox.Spec{IdleTimeoutS: 60, Labels: map[string]string{"k": "v"}})
	b := e.create("alice", sandbox.Spec{IdleTimeoutS: 600})
	_, err := e.m.Create(ctx, "alice", sandbox.Spec{})
	wantKind(t, err, errs.TooMany)
	if out, _, err := e.exec("alice", a.ID, "echo", "pg"); err != nil || out != "pg\n" {
		t.Fatalf("exec = %q, %v", out, err)
	}
	items, next, err := e.m.List(ctx, "alice", sandbox.ListFilter{Limit: 1, Labels: map[string]string{"k": "v"}})
	if err != nil || len(items) != 1 || items[0].ID != a.ID || next != nil {
		t.Fatalf("List = %v, %v, %v", items, next, err)
	}
	e.start()
	if err := e.m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(61 * time.Second)
	e.reap(1)
	if got := e.state(a.ID); got.State != sandbox.Terminated || got.Reason != "idle timeout" {
		t.Fatalf("a: %s (%s)", got.State, got.Reason)
	}
	if got := e.state(b.ID); got.State != sandbox.Running {
		t.Fatalf("b: %s", got.State)
	}
	if _, _, err := e.exec("alice", b.ID, "true"); err != nil {
		t.Fatalf("exec after restart: %v", err)
	}
}

// gate holds a sandbox in `creating`: its build step prints a marker and
// sleeps until the create is cancelled. (Build sandboxes cannot reach the
// host's loopback, so the step cannot wait on a host server.)
type gate struct{}

func newGate(t *testing.T) *gate { return &gate{} }

const gateMarker = "techboss-gate-arrived"

func (g *gate) spec() sandbox.Spec {
	return sandbox.Spec{DockerfileCommands: []string{"RUN echo " + gateMarker + " && sleep 3600"}}
}

// wait returns the ID of owner's creating sandbox once its build step runs.
func (g *gate) wait(t *testing.T, e *env, owner string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var id string
	for id == "" {
		items, _, err := e.m.List(ctx, owner, sandbox.ListFilter{States: []sandbox.State{sandbox.Creating}})
		if err != nil {
			t.Fatal(err)
		}
		if len(items) > 0 {
			id = items[0].ID
		} else if ctx.Err() != nil {
			t.Fatal("no sandbox is creating")
		} else {
			runtime.Gosched()
		}
	}
	bl, _, err := e.m.BuildLog(ctx, owner, id)
	if err != nil {
		t.Fatal(err)
	}
	var seen []byte
	var from int64
	for {
		data, next, done, wake := bl.Read(from)
		seen, from = append(seen, data...), next
		if bytes.Contains(seen, []byte(gateMarker)) {
			return id
		}
		if done {
			t.Fatalf("the build ended before its gate: %s", seen)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatalf("the build never reached its gate: %s", seen)
		}
	}
}

func TestTerminateWhileCreating(t *testing.T) {
	e := newEnv(t, nil)
	g := newGate(t)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := e.m.Create(ctx, "alice", g.spec())
		done <- err
	}()
	g.wait(t, e, "alice")
	items, _, err := e.m.List(ctx, "alice", sandbox.ListFilter{States: []sandbox.State{sandbox.Creating}})
	if err != nil || len(items) != 1 {
		t.Fatalf("creating = %v, %v", items, err)
	}
	_, err = e.m.Terminate(ctx, "bob", items[0].ID)
	wantKind(t, err, errs.NotFound)
	got, err := e.m.Terminate(ctx, "alice", items[0].ID)
	if err != nil || got.State != sandbox.Failed || !strings.Contains(got.Reason, "terminated while creating") {
		t.Fatalf("Terminate while creating = %+v, %v", got, err)
	}
	wantKind(t, <-done, errs.Conflict)
	// Terminating (deleting) it again takes the failed record off the
	// active list, keeping its reason.
	if got, err := e.m.Terminate(ctx, "alice", items[0].ID); err != nil || got.State != sandbox.Terminated || !strings.Contains(got.Reason, "terminated while creating") {
		t.Fatalf("second Terminate = %+v, %v", got, err)
	}
}

func TestCreateTimeoutSettlesTheRecord(t *testing.T) {
	e := newEnv(t, func(e *env) { e.limits.CreateTimeout = 300 * time.Millisecond })
	g := newGate(t) // never released while the create runs: it cannot finish in time
	_, err := e.m.Create(context.Background(), "alice", g.spec())
	wantKind(t, err, errs.Unavailable)
	items, _ := e.db.ListSandboxes(context.Background(), sandbox.ListFilter{OwnerID: "alice"})
	if len(items) != 1 || items[0].State != sandbox.Failed || !strings.Contains(items[0].Reason, "did not finish within") {
		t.Fatalf("records %+v, want one failed for the timeout", items)
	}
}

// TestHostBoundSandboxesStayWithTheirHost: two servers on one database, on
// two hosts (data directories). A local sandbox belongs to its host's
// server: the other one's restart reconciliation and reaper leave it
// alone, and its exec and terminate are refused with a conflict naming the
// host, while a replica of that host renews itself. Once its host is gone
// past the timeout, it is lost.
func TestHostBoundSandboxesStayWithTheirHost(t *testing.T) {
	const timeout = time.Minute
	a := newEnv(t, func(e *env) { e.host, e.hostTimeout = "host_a", timeout })
	b := newEnv(t, func(e *env) { e.db, e.host, e.hostTimeout, e.clock = a.db, "host_b", timeout, a.clock })
	ctx := context.Background()
	alive := func() {
		t.Helper()
		if _, err := a.db.ReplicaAlive(ctx, "rep_a", "host_a", a.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	alive()
	sb := a.create("alice", sandbox.Spec{})
	if got := a.state(sb.ID).Host; got != "host_a" {
		t.Fatalf("sandbox host = %q, want host_a", got)
	}
	if err := b.m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.state(sb.ID).State; st != sandbox.Running {
		t.Fatalf("after the other host's reconcile: %s, want running", st)
	}
	_, _, err := b.exec("alice", sb.ID, "true")
	wantKind(t, err, errs.Conflict)
	if !strings.Contains(err.Error(), "host_a") {
		t.Errorf("exec on the other host: %v; want the host named", err)
	}
	_, err = b.m.Terminate(ctx, "alice", sb.ID)
	wantKind(t, err, errs.Conflict)
	// Past its idle timeout, but its host reaps it, not b.
	a.clock.Advance(a.limits.DefaultIdleTimeout + time.Second)
	alive()
	b.reap(0)
	if st := a.state(sb.ID).State; st != sandbox.Running {
		t.Fatalf("after the other host's reaper: %s, want running", st)
	}
	if _, _, err := a.exec("alice", sb.ID, "true"); err != nil {
		t.Fatalf("exec on its own host: %v", err)
	}
	// Host a stops renewing; past the timeout its sandbox is lost to b.
	a.clock.Advance(timeout + time.Second)
	_, _, err = b.exec("alice", sb.ID, "true")
	wantKind(t, err, errs.Conflict)
	if st := a.state(sb.ID).State; st != sandbox.Lost {
		t.Fatalf("after its host went away: %s (%v), want lost", st, err)
	}
}

// eventLog records the events the Manager emits (the webhooks service
// receives them in the server).
type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) Emit(_ context.Context, userID, typ string, data any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch f := data.(type) {
	case sandbox.FailedEvent:
		l.evs = append(l.evs, userID+" "+typ+" "+f.SandboxID+" "+f.Reason)
	case sandbox.SnapshotFailedEvent:
		l.evs = append(l.evs, fmt.Sprintf("%s %s %s final=%v %s", userID, typ, f.SandboxID, f.Final, f.Error))
	}
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.evs...)
}

// writeLog is a Repo over the real store that records the sandbox writes
// (the state each insert and update wrote).
type writeLog struct {
	sandbox.Repo
	mu     sync.Mutex
	writes map[string][]string
}

func (w *writeLog) note(id, what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writes == nil {
		w.writes = map[string][]string{}
	}
	w.writes[id] = append(w.writes[id], what)
}

func (w *writeLog) of(id string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes[id])
}

func (w *writeLog) CreateSandbox(ctx context.Context, sb *sandbox.Sandbox) error {
	w.note(sb.ID, "insert "+string(sb.State))
	return w.Repo.CreateSandbox(ctx, sb)
}

func (w *writeLog) UpdateSandbox(ctx context.Context, sb *sandbox.Sandbox) error {
	w.note(sb.ID, "update "+string(sb.State))
	return w.Repo.UpdateSandbox(ctx, sb)
}

// TestCreateFromWarmPool: a create the driver's warm pool serves is one
// database write (the record inserted as running, with its driver ref)
// rather than an insert as creating and an update to running, and the
// sandbox outlives a server restart like one the driver started.
func TestCreateFromWarmPool(t *testing.T) {
	w := &writeLog{}
	e := newEnv(t, func(e *env) {
		e.warm = 1
		e.drvReg = prometheus.NewRegistry()
		e.db = storetest.OpenSQLite(t)
		w.Repo = e.db
		e.repo = w
	})
	ctx := context.Background()
	first := e.create("alice", sandbox.Spec{})
	if got := w.of(first.ID); !slices.Equal(got, []string{"insert creating", "update running"}) {
		t.Fatalf("writes of a create the driver started: %v", got)
	}
	if _, err := e.m.Terminate(ctx, "alice", first.ID); err != nil {
		t.Fatal(err)
	}
	// The pool fills in the background: create until a create takes from it.
	var sb *sandbox.Sandbox
	for deadline := time.Now().Add(time.Minute); sb == nil; {
		c := e.create("alice", sandbox.Spec{})
		if strings.HasPrefix(string(c.Ref), "warm-") {
			sb = c
			break
		}
		if _, err := e.m.Terminate(ctx, "alice", c.ID); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no create took a sandbox from the warm pool within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := w.of(sb.ID); !slices.Equal(got, []string{"insert running"}) {
		t.Errorf("writes of a create from the warm pool: %v, want one insert as running", got)
	}
	if got := e.state(sb.ID); got.State != sandbox.Running || got.Ref != sb.Ref {
		t.Errorf("record after a create from the pool: %s %q, want running %q", got.State, got.Ref, sb.Ref)
	}
	blog, _, err := e.m.BuildLog(ctx, "alice", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if data, _, done, _ := blog.Read(0); !done || !strings.Contains(string(data), "taken from the warm pool") {
		t.Errorf("build log of a create from the pool: %q (done %v)", data, done)
	}
	if out, st, err := e.exec("alice", sb.ID, "sh", "-c", "echo kept > /tmp/marker"); err != nil || st.Code != 0 {
		t.Fatalf("exec: %q %+v %v", out, st, err)
	}

	// The replacement the exec started must be ready first: a sandbox the
	// old driver is still starting is not what a restart meets (that
	// driver's process is gone then).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if sandboxtest.WarmPoolReady(t, e.drvReg) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the warm pool did not refill within a minute")
		}
	}
	e.start() // a server restart: new driver and Manager, same DB and data dir
	if err := e.m.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := e.state(sb.ID); got.State != sandbox.Running {
		t.Fatalf("the sandbox from the pool after a restart: %s (%s), want running", got.State, got.Reason)
	}
	if out, st, err := e.exec("alice", sb.ID, "cat", "/tmp/marker"); err != nil || st.Code != 0 || out != "kept\n" {
		t.Fatalf("exec after restart = %q, %+v, %v", out, st, err)
	}
	if _, err := e.m.Terminate(ctx, "alice", sb.ID); err != nil {
		t.Fatal(err)
	}
}
