package agent_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// initBin is the sandbox helper, built once for the package's tests.
var initBin string

func TestMain(m *testing.M) { os.Exit(sandboxtest.Main(m, &initBin)) }

// need skips (or fails under TECHBOSS_REQUIRE_ALL=1) when a dependency is missing.
func need(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip("why: " + why)
}

// toolsMountTarget is where the CLI's npm prefix is mounted in sandboxes.
const toolsMountTarget = "/opt/techboss/claude"

// env is a whole run stack: SQLite store, the real local driver and
// sandbox Manager, the run service with the real Claude CLI, the gateway,
// and a scripted model server as the upstream.
type env struct {
	t       testing.TB
	db      *store.DB
	mgr     *sandbox.Manager
	drv     *local.Driver
	svc     *agent.Service
	gw      *gateway.Gateway
	model   *modeltest.Server
	prices  map[string]llm.Price
	reg     *prometheus.Registry
	secrets *secrets.Store
}

type envOpts struct {
	credentials    string
	grace          time.Duration
	extraEnv       map[string]string
	replicaTimeout time.Duration    // agent.Config.ReplicaTimeout
	pgURL          string           // "": SQLite in a temp dir
	durability     agent.Durability // agent.Config.Durability
	// afterRun builds agent.Deps.AfterRun from the env's parts.
	afterRun      func(e *env) func(context.Context, agent.Run) error
	snapshotRetry time.Duration // agent.Config.SnapshotRetry
	feed          bool          // connect the hub to other replicas (PostgreSQL LISTEN/NOTIFY)
	upstream      string        // the gateway's upstream base URL ("": the scripted model)
	mcpAllow      []netip.Prefix
	events        agent.EventSink // agent.Deps.Events
	// beforeTerminate builds the Manager's BeforeTerminate hook from the env's parts.
	beforeTerminate func(e *env) func(context.Context, *sandbox.Sandbox) error
}

func newEnv(t testing.TB, o envOpts, script ...modeltest.Reply) *env {
	t.Helper()
	prefix, rel := modeltest.ClaudeInstall(t)
	if os.Geteuid() != 0 {
		need(t, "the local sandbox driver needs root")
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		need(t, "bubblewrap (bwrap) is not installed")
	}
	ctx := context.Background()
	dir := t.TempDir()
	var db *store.DB
	if o.pgURL != "" {
		db = openPG(t, o.pgURL)
	} else {
		var err error
		if db, err = store.Open(ctx, filepath.Join(dir, "t.db")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	drv, err := local.New(local.Options{DataDir: filepath.Join(dir, "local"), InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	var beforeTerminate func(context.Context, *sandbox.Sandbox) error // set once e exists
	mgr, err := sandbox.NewManager(sandbox.Deps{
		Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local",
		Limits: sandbox.DefaultLimits(),
		Mounts: []sandbox.Mount{{Source: prefix, Target: toolsMountTarget, ReadOnly: true}},
		Hooks: sandbox.Hooks{BeforeTerminate: func(ctx context.Context, sb *sandbox.Sandbox) error {
			if beforeTerminate == nil {
				return nil
			}
			return beforeTerminate(ctx, sb)
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, mgr: mgr, drv: drv, model: modeltest.New(t, script...), reg: prometheus.NewRegistry(),
		prices: map[string]llm.Price{"claude-": {InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75}}}

	cliEnv := map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2"}
	for k, v := range o.extraEnv {
		cliEnv[k] = v
	}
	cfg := agent.Config{Credentials: o.credentials, Root: true, CancelGrace: o.grace, ReplicaTimeout: o.replicaTimeout, Durability: o.durability, SnapshotRetry: o.snapshotRetry, MCPAllow: o.mcpAllow}
	if o.credentials == agent.CredentialsDirect {
		// The CLI calls the model itself. A sandbox reaches no host
		// service, so tests forward this address in the sandbox's own
		// namespace to the model (forwardModel).
		cfg.UpstreamBaseURL, cfg.UpstreamAPIKey = "http://"+directModelAddr, "sk-direct"
	}
	var afterRun func(context.Context, agent.Run) error
	if o.afterRun != nil {
		afterRun = o.afterRun(e)
	}
	if o.beforeTerminate != nil {
		beforeTerminate = o.beforeTerminate(e)
	}
	var feed agent.Feed
	if o.feed {
		feed = db.RunFeed()
	}
	if e.secrets, err = secrets.New(db, bytes.Repeat([]byte{7}, 32)); err != nil {
		t.Fatal(err)
	}
	e.svc, err = agent.NewService(cfg, agent.Deps{
		Store: db, Sandboxes: mgr, AfterRun: afterRun, Metrics: e.reg, Feed: feed, Events: o.events,
		// As the server wires it: team secrets for the team's owners and members.
		Secrets: agent.RevealFunc(e.secrets.RevealRef(func(ctx context.Context, team, user string) (bool, error) {
			r, err := db.MemberRole(ctx, team, user)
			return r == teams.RoleOwner || r == teams.RoleMember, err
		})),
		CLI:    claude.New(claude.Config{Bin: filepath.Join(toolsMountTarget, rel), Env: cliEnv}),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.gw, err = gateway.New(gateway.Config{
		Upstream:  gateway.NewAnthropic(cmp.Or(o.upstream, e.model.URL), "sk-upstream-secret-key", nil),
		RunTokens: e.svc, Recorder: e.svc, Price: gateway.PriceTable(e.prices),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.SetGateway(e.gw)
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.svc.Run(runCtx); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		// Destroy every sandbox this env created.
		sbs, _, _ := mgr.List(context.Background(), "alice", sandbox.ListFilter{})
		more, _, _ := mgr.List(context.Background(), "bob", sandbox.ListFilter{})
		for _, sb := range append(sbs, more...) {
			_, _ = mgr.Terminate(context.Background(), sb.OwnerID, sb.ID)
		}
	})
	return e
}

func (e *env) sandbox(owner string) *sandbox.Sandbox {
	e.t.Helper()
	return e.sandboxWith(owner, sandbox.Spec{ImageBase: "host"})
}

func (e *env) sandboxWith(owner string, spec sandbox.Spec) *sandbox.Sandbox {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb, err := e.mgr.Create(ctx, owner, spec)
	if err != nil {
		e.t.Fatalf("create sandbox: %v", err)
	}
	return sb
}

// start starts a run and returns it.
func (e *env) start(owner, sbID, prompt string, o agent.Options) agent.Run {
	e.t.Helper()
	r, err := e.svc.Start(context.Background(), owner, sbID, prompt, o)
	if err != nil {
		e.t.Fatalf("start run: %v", err)
	}
	return r
}

// wait follows a run to its end and returns all its events.
func (e *env) wait(owner, runID string) (agent.Run, []agent.Event) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sub, err := e.svc.Subscribe(ctx, owner, runID, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer sub.Close()
	var evs []agent.Event
	for {
		more, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			e.t.Fatalf("run %s did not finish: %v", runID, err)
		}
		evs = append(evs, more...)
	}
	r, err := e.svc.Get(context.Background(), owner, runID)
	if err != nil {
		e.t.Fatal(err)
	}
	return r, evs
}

// do runs a prompt to its end.
func (e *env) do(owner, sbID, prompt string, o agent.Options) (agent.Run, []agent.Event) {
	e.t.Helper()
	r := e.start(owner, sbID, prompt, o)
	return e.wait(owner, r.ID)
}

// exec runs a command in the sandbox and returns its stdout.
func (e *env) exec(owner, sbID string, argv ...string) string {
	e.t.Helper()
	var out, errb bytes.Buffer
	st, err := e.mgr.Exec(context.Background(), owner, sbID, sandbox.ExecRequest{Argv: argv, Stdout: &out, Stderr: &errb})
	if err != nil || st.Code != 0 {
		e.t.Fatalf("exec %v: %v (exit %d)\n%s", argv, err, st.Code, errb.String())
	}
	return out.String()
}

func (e *env) readFile(owner, sbID, path string) (string, error) {
	var b bytes.Buffer
	_, err := e.mgr.ReadFile(context.Background(), owner, sbID, path, &b)
	return b.String(), err
}

func types(evs []agent.Event) []string {
	var ts []string
	for _, ev := range evs {
		ts = append(ts, ev.Type)
	}
	return ts
}

func decode[T any](t testing.TB, ev agent.Event) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(ev.Data, &v); err != nil {
		t.Fatalf("decode %s event: %v", ev.Type, err)
	}
	return v
}

func find(evs []agent.Event, typ string) []agent.Event {
	var out []agent.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func checkSeqs(t testing.TB, evs []agent.Event) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d, want %d (gap or reorder)", i, ev.Seq, i+1)
		}
	}
}

var _ = io.Discard

// directModelAddr is where direct-mode runs find the model inside a sandbox.
const directModelAddr = "127.0.0.1:18099"

// forwardModel serves directModelAddr inside the sandbox's network
// namespace, forwarding each connection to the model on the host: the
// stand-in for a model API on the internet, which sandboxes reach through
// their network and tests cannot.
func (e *env) forwardModel(sb *sandbox.Sandbox) {
	e.t.Helper()
	ln, err := e.drv.Listen(context.Background(), sb.Ref, directModelAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	target := strings.TrimPrefix(e.model.URL, "http://")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}
