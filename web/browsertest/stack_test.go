package browsertest

import (
	"context"
	"crypto/rand"
	"github.com/techbossai/techboss/internal/audit"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/auth"
	blobfs "github.com/techbossai/techboss/internal/blob/fs"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/repo"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store"
)

// stack is a running server with real dependencies.
type stack struct {
	url   string
	db    *store.DB
	auth  *auth.Service
	model *modeltest.Server // nil without agent runs
	// snapshots reports whether the snapshot routes are served.
	snapshots bool
	// secrets is the secret store (repos only).
	secrets *secrets.Store
	// dropConnections cuts every open client connection (a network drop).
	dropConnections func()
}

// stackOptions choose which parts run. Every part that runs is the real one.
type stackOptions struct {
	sandboxes bool              // sandbox manager on the local (bubblewrap) driver
	agent     bool              // agent runs: real Claude Code CLI, gateway, scripted model
	script    []modeltest.Reply // the model's answers (agent only)
	dns       string            // the sandboxes' DNS upstream (default: the host's)
	dbURL     string            // the database (default: SQLite in a temp dir)
	// repos adds repositories (needs agent): the secret store, the git
	// credential broker on the sandboxes' gateway listener, clone at
	// create, the git API and run delivery. The broker may dial loopback
	// (the tests' git server).
	repos bool
}

// newStack starts the real HTTP server over a fresh SQLite database, with
// auth only.
func newStack(t *testing.T) *stack { return buildStack(t, stackOptions{}) }

// newSandboxStack adds a sandbox manager on the real local driver.
func newSandboxStack(t *testing.T) *stack { return buildStack(t, stackOptions{sandboxes: true}) }

// newAgentStack adds agent runs: the real CLI inside real local sandboxes,
// reaching the scripted model through the server's LLM gateway.
func newAgentStack(t *testing.T, script ...modeltest.Reply) *stack {
	return buildStack(t, stackOptions{sandboxes: true, agent: true, script: script})
}

func buildStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	var claudePrefix, claudeRel string
	if o.agent {
		claudePrefix, claudeRel = modeltest.ClaudeInstall(t)
	}
	ctx := context.Background()
	dbURL := o.dbURL
	if dbURL == "" {
		dbURL = filepath.Join(t.TempDir(), "techboss.db")
	}
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	a := auth.New(auth.Options{Store: db, Logger: logger, Hash: auth.TestHashParams})
	s := &stack{db: db, auth: a}
	deps := httpapi.Deps{Logger: logger, Store: db, Auth: a, Metrics: reg}
	// The audit log, as the server runs it (the Audit view reads it).
	al := audit.New(audit.Options{Repo: db, Logger: logger})
	auditCtx, stopAudit := context.WithCancel(context.Background())
	auditDone := make(chan struct{})
	go func() { defer close(auditDone); _ = al.Run(auditCtx) }()
	t.Cleanup(func() { stopAudit(); <-auditDone })
	deps.Audit = al

	var mounts []sandbox.Mount
	var repos *repo.Service // set once the agent service exists
	if o.agent {
		mounts = []sandbox.Mount{{Source: claudePrefix, Target: "/opt/techboss/claude", ReadOnly: true}}
	}
	if o.sandboxes {
		deps.Sandboxes, deps.Snapshots = sandboxManager(t, db, logger, reg, mounts, o.dns, func(ctx context.Context, sb *sandbox.Sandbox) error {
			if repos != nil {
				return repos.AfterCreate(ctx, sb)
			}
			return nil
		})
		s.snapshots = true
		// Share links to sandbox ports, signed with a test key.
		links, err := sandbox.NewPreviewLinks(deps.Sandboxes, db, []byte("a preview-link signing key of the browser tests"), time.Now)
		if err != nil {
			t.Fatalf("preview links: %v", err)
		}
		deps.PreviewLinks = links
	}
	if o.agent {
		s.model = modeltest.New(t, o.script...)
		// As the server does by default: snapshot the workspace after each run.
		mgr, snaps := deps.Sandboxes, deps.Snapshots
		afterRun := func(ctx context.Context, r agent.Run) error {
			sb, err := mgr.Get(ctx, r.OwnerID, r.SandboxID)
			if err != nil || sb.State != sandbox.Running {
				return agent.ErrSandboxGone
			}
			_, err = snaps.Take(ctx, sb, snapshot.TriggerRun, r.ID)
			return err
		}
		var deliver agent.DeliverFunc
		if o.repos {
			deliver = func(ctx context.Context, r agent.Run) (agent.DeliveryData, error) {
				d := r.Options.Deliver
				email := ""
				if u, err := db.UserByID(ctx, r.OwnerID); err == nil {
					email = u.Email
				}
				res, err := repos.Deliver(ctx, r.OwnerID, r.SandboxID, repo.DeliverRequest{
					Repo: d.Repo, Branch: d.Branch, PullRequest: d.PullRequest, Base: d.Base,
					Message: "TechBoss AI run " + r.ID, Title: r.Prompt, Body: "Run " + r.ID, AuthorEmail: email,
				})
				out := agent.DeliveryData{Branch: d.Branch}
				if res != nil {
					out.Commit, out.PullRequestURL, out.NothingChanged = res.Commit, res.PullRequestURL, res.NothingChanged
				}
				return out, err
			}
		}
		svc, err := agent.NewService(agent.Config{Root: true}, agent.Deps{
			Store: db, Sandboxes: deps.Sandboxes, Logger: logger, Metrics: reg, AfterRun: afterRun, Deliver: deliver,
			CLI: claude.New(claude.Config{Bin: filepath.Join("/opt/techboss/claude", claudeRel),
				Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2"}}),
		})
		if err != nil {
			t.Fatalf("agent service: %v", err)
		}
		prices := map[string]llm.Price{"claude-": {InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75}}
		gw, err := gateway.New(gateway.Config{
			Upstream:  gateway.NewAnthropic(s.model.URL, "sk-upstream-test-key", nil),
			RunTokens: svc, Recorder: svc, Price: gateway.PriceTable(prices), Logger: logger,
			Users: func(ctx context.Context, tok string) (string, error) {
				u, err := a.Authenticate(ctx, tok)
				if err != nil {
					return "", err
				}
				return u.ID, nil
			},
		})
		if err != nil {
			t.Fatalf("gateway: %v", err)
		}
		if o.repos {
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				t.Fatal(err)
			}
			sec, err := secrets.New(db, key)
			if err != nil {
				t.Fatalf("secrets: %v", err)
			}
			s.secrets, deps.Secrets = sec, sec
			broker, err := repo.NewBroker(repo.BrokerConfig{
				Lookup: db.GetSandbox, Reveal: sec.Reveal, Bound: agent.BoundSandbox, Key: key,
				Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Logger: logger,
			})
			if err != nil {
				t.Fatalf("git broker: %v", err)
			}
			mux := http.NewServeMux()
			mux.Handle("/", gw)
			mux.Handle(repo.BrokerPrefix, broker)
			svc.SetGateway(mux)
			repos = repo.NewService(repo.Deps{Broker: broker, Sandboxes: deps.Sandboxes, GatewayURL: svc.SandboxGatewayURL, Logger: logger})
			deps.Repos, deps.GitBroker = repos, broker
		} else {
			svc.SetGateway(gw)
		}
		runCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = svc.Run(runCtx) })
		t.Cleanup(func() { cancel(); wg.Wait() })
		deps.Runs, deps.Gateway = svc, gw
	}
	stopping, stop := context.WithCancel(context.Background())
	deps.Stopping = stopping
	api := httpapi.NewServer(deps)
	srv := httptest.NewUnstartedServer(api)
	// Event streams take their connections over from net/http, which then
	// no longer tracks them: keep them here, so a "network drop" cuts them
	// too.
	var (
		mu       sync.Mutex
		hijacked = map[net.Conn]struct{}{}
	)
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateHijacked {
			mu.Lock()
			hijacked[c] = struct{}{}
			mu.Unlock()
		}
	}
	srv.Start()
	// Registered last, so it runs first: streams end before the services stop.
	t.Cleanup(func() {
		stop()
		srv.Close()
		wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := api.WaitStreams(wctx); err != nil {
			t.Error(err)
		}
	})
	s.url = srv.URL
	s.dropConnections = func() {
		srv.CloseClientConnections()
		mu.Lock()
		defer mu.Unlock()
		for c := range hijacked {
			_ = c.Close()
			delete(hijacked, c)
		}
	}
	return s
}

// user creates a member account and returns its ID.
func (s *stack) user(t *testing.T, email, password string) string {
	t.Helper()
	u, err := s.auth.CreateUser(context.Background(), email, auth.Secret(password), auth.RoleMember)
	if err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
	return u.ID
}

// sandboxManager returns a Manager on the real local (bubblewrap) driver and
// the snapshot service over a filesystem blob store (hooked into the
// Manager: snapshot before terminate); sandboxes are destroyed at cleanup.
func sandboxManager(t *testing.T, db *store.DB, logger *slog.Logger, reg *prometheus.Registry, mounts []sandbox.Mount, dns string, afterCreate func(context.Context, *sandbox.Sandbox) error) (*sandbox.Manager, *snapshot.Service) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "the local sandbox driver needs root"
	} else if _, err := exec.LookPath("bwrap"); err != nil {
		why = "bubblewrap (bwrap) is not installed"
	}
	if why != "" {
		need(t, why)
	}
	initBin := filepath.Join(t.TempDir(), "techboss-sandbox-init")
	if err := sandboxtest.BuildInit(initBin); err != nil {
		t.Fatal(err)
	}
	o := local.Options{DataDir: t.TempDir(), InitBinary: initBin, Logger: logger}
	if dns != "" {
		o.DNSUpstreams = []string{dns}
	}
	drv, err := local.New(o)
	if err != nil {
		t.Fatalf("local driver: %v", err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	drivers := map[string]sandbox.Driver{"local": drv}
	blobs, err := blobfs.New(t.TempDir(), blobfs.Options{NoSync: true})
	if err != nil {
		t.Fatalf("blob store: %v", err)
	}
	snaps, err := snapshot.NewService(snapshot.ServiceDeps{
		Snapshotter: snapshot.New(snapshot.Config{Logger: logger, Metrics: snapshot.NewMetrics(reg)}),
		Index:       db, DefaultStore: blobs, Drivers: drivers, OnTerminate: true, Logger: logger,
	})
	if err != nil {
		t.Fatalf("snapshot service: %v", err)
	}
	hooks := snaps.Hooks()
	snapAfter := hooks.AfterCreate
	hooks.AfterCreate = func(ctx context.Context, sb *sandbox.Sandbox) error {
		if err := snapAfter(ctx, sb); err != nil {
			return err
		}
		return afterCreate(ctx, sb)
	}
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: db, Drivers: drivers, DefaultDriver: "local", Hooks: hooks,
		Limits: sandbox.DefaultLimits(), Logger: logger, Mounts: mounts,
	})
	if err != nil {
		t.Fatalf("sandbox manager: %v", err)
	}
	t.Cleanup(func() {
		all, _ := db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range all {
			_ = drv.Destroy(context.Background(), sb.Ref)
		}
	})
	return m, snaps
}

// testWriter sends server logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
