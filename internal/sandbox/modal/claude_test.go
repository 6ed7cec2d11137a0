package modal_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/sandbox/modal/modaltest"
	"github.com/techbossai/techboss/internal/store"
)

// toolsTarget is where the test server shows the host's Claude CLI install
// inside sandboxes (on real Modal the image installs it on PATH).
const toolsTarget = "/opt/techboss/claude"

// TestClaudeRunThroughModal runs the real Claude CLI in a Modal sandbox
// (the loopback Modal server, real SDK, real gRPC) through the sandbox
// Manager and the run service in gateway mode (TECHBOSS_PUBLIC_URL), with
// the scripted model upstream, and checks the same events as the local
// driver's scenarios.
func TestClaudeRunThroughModal(t *testing.T) {
	prefix, rel := modeltest.ClaudeInstall(t)
	srv := startServer(t, modaltest.Options{HostBinds: []modaltest.Bind{{Source: prefix, Target: toolsTarget}}})
	drv := newDriver(t, modal.Options{})
	ctx := context.Background()

	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	limits := sandbox.DefaultLimits()
	limits.AllowFullNetwork = true
	mgr, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"modal": drv}, DefaultDriver: "modal", Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	model := modeltest.New(t, modeltest.Text("Hello from the scripted model.\nSecond line."))

	// The gateway is served on loopback as the server's public URL.
	var svc *agent.Service
	gwHandler := &lateHandler{}
	public := httptest.NewServer(gwHandler)
	t.Cleanup(public.Close)
	svc, err = agent.NewService(agent.Config{Credentials: agent.CredentialsGateway, PublicURL: public.URL, Root: true}, agent.Deps{
		Store: db, Sandboxes: mgr,
		CLI:    claude.New(claude.Config{Bin: filepath.Join(toolsTarget, rel), Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2"}}),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{
		Upstream:  gateway.NewAnthropic(model.URL, "sk-upstream-secret-key", nil),
		RunTokens: svc, Recorder: svc,
		Price: gateway.PriceTable(map[string]llm.Price{"claude-": {InputPerMTok: 3, OutputPerMTok: 15}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	gwHandler.set(gw)
	svc.SetGateway(gw)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := svc.Run(runCtx); err != nil {
			t.Errorf("service: %v", err)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })

	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sb, err := mgr.Create(cctx, "alice", sandbox.Spec{ImageBase: "host", Network: sandbox.Network{Mode: "full"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = mgr.Terminate(context.Background(), "alice", sb.ID) })

	t.Run("text", func(t *testing.T) {
		r, evs := runToEnd(t, svc, "alice", sb.ID, "say hello")
		// The gateway's usage events arrive when the answer has streamed,
		// so where they fall among the CLI's lines is a race: compare the
		// CLI's sequence, and count the usage events.
		var got []string
		usage := 0
		for _, typ := range evTypes(evs) {
			if typ == "usage" {
				usage++
				continue
			}
			if typ == agent.TypeTextDelta || typ == agent.TypeRaw {
				continue // token deltas and the model stream's framing lines
			}
			got = append(got, typ)
		}
		want := []string{"run.started", "text", "result", "done"}
		if d := cmp.Diff(want, got); d != "" || usage != 2 {
			t.Errorf("events (-want +got):\n%s\nusage events: got %d, want 2", d, usage)
		}
		if r.Status != agent.Succeeded || r.SessionID == "" || r.ExitCode == nil || *r.ExitCode != 0 {
			t.Errorf("run = %+v", r)
		}
		for _, ev := range evs {
			if ev.Type == agent.TypeText && !strings.Contains(string(ev.Data), "Hello from the scripted model.") {
				t.Errorf("text event = %s", ev.Data)
			}
		}
	})
	t.Run("bash tool runs in the modal sandbox", func(t *testing.T) {
		model.Reset(modeltest.Bash("echo bash-ran-here > /workspace/bash-proof.txt"), modeltest.Text("Done."))
		r, evs := runToEnd(t, svc, "alice", sb.ID, "run a command")
		if r.Status != agent.Succeeded {
			t.Fatalf("run = %+v events %v", r, evTypes(evs))
		}
		var b bytes.Buffer
		if _, err := mgr.ReadFile(ctx, "alice", sb.ID, "/workspace/bash-proof.txt", &b); err != nil || b.String() != "bash-ran-here\n" {
			t.Errorf("bash-proof.txt = %q, %v", b.String(), err)
		}
	})
	// The CLI ran through the Modal exec API.
	var sawClaude bool
	for _, e := range srv.Execs() {
		sawClaude = sawClaude || strings.Contains(strings.Join(e.Argv, " "), filepath.Join(toolsTarget, rel))
	}
	if !sawClaude {
		t.Errorf("no exec of the Claude CLI reached the Modal server")
	}
}

// lateHandler serves the gateway once it exists (it needs the service,
// which needs the URL the gateway is served on).
type lateHandler struct {
	mu sync.Mutex
	h  *gateway.Gateway
}

func (l *lateHandler) set(h *gateway.Gateway) { l.mu.Lock(); l.h = h; l.mu.Unlock() }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	h := l.h
	l.mu.Unlock()
	h.ServeHTTP(w, r)
}

func runToEnd(t *testing.T, svc *agent.Service, owner, sbID, prompt string) (agent.Run, []agent.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := svc.Start(ctx, owner, sbID, prompt, agent.Options{NewSession: true})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := svc.Subscribe(ctx, owner, r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var evs []agent.Event
	for {
		more, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("run %s did not finish: %v (events %v)", r.ID, err, evTypes(evs))
		}
		evs = append(evs, more...)
	}
	got, err := svc.Get(context.Background(), owner, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got, evs
}

func evTypes(evs []agent.Event) []string {
	var ts []string
	for _, ev := range evs {
		ts = append(ts, ev.Type)
	}
	return ts
}

// TestClaudeDirectKeyFromModalSecret: direct mode with the key in a Modal
// secret (TECHBOSS_MODAL_SECRETS) and none on the server: the CLI calls the
// model with the sandbox's key, and a tool printing it shows
// [REDACTED] in the run's events.
func TestClaudeDirectKeyFromModalSecret(t *testing.T) {
	const key = "sk-ant-from-modal-secret-0123456789"
	prefix, rel := modeltest.ClaudeInstall(t)
	startServer(t, modaltest.Options{HostBinds: []modaltest.Bind{{Source: prefix, Target: toolsTarget}},
		Secrets: map[string]map[string]string{"anthropic-api-key": {"ANTHROPIC_API_KEY": key}}})
	drv := newDriver(t, modal.Options{Secrets: []string{"anthropic-api-key"}})
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	limits := sandbox.DefaultLimits()
	limits.AllowFullNetwork = true
	mgr, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"modal": drv}, DefaultDriver: "modal", Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	model := modeltest.New(t, modeltest.Bash("printenv ANTHROPIC_API_KEY"), modeltest.Text("Done."))
	if _, err := agent.NewService(agent.Config{Credentials: agent.CredentialsDirect, UpstreamBaseURL: model.URL}, agent.Deps{Store: db, Sandboxes: mgr,
		CLI: claude.New(claude.Config{Bin: "claude"}), Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Fatal("direct mode without a key anywhere: want a configuration error")
	}
	svc, err := agent.NewService(agent.Config{Credentials: agent.CredentialsDirect, UpstreamBaseURL: model.URL, KeyInSandbox: true, Root: true}, agent.Deps{
		Store: db, Sandboxes: mgr,
		CLI:    claude.New(claude.Config{Bin: filepath.Join(toolsTarget, rel), Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "0"}}),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sb, err := mgr.Create(cctx, "alice", sandbox.Spec{ImageBase: "host", Network: sandbox.Network{Mode: "full"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = mgr.Terminate(context.Background(), "alice", sb.ID) })
	r, evs := runToEnd(t, svc, "alice", sb.ID, "show the key")
	if r.Status != agent.Succeeded {
		t.Fatalf("run = %+v events %v", r, evTypes(evs))
	}
	reqs := model.MessageRequests()
	if len(reqs) == 0 || reqs[0].Header.Get("X-Api-Key") != key {
		t.Fatalf("the model was not called with the sandbox's key (%d requests)", len(reqs))
	}
	sawRedacted := false
	for _, ev := range evs {
		if strings.Contains(string(ev.Data)+ev.Raw, key) {
			t.Fatalf("event %s shows the key: %s", ev.Type, ev.Data)
		}
		sawRedacted = sawRedacted || strings.Contains(string(ev.Data), "[REDACTED]")
	}
	if !sawRedacted {
		t.Fatal("the tool's output of the key was not in the events as [REDACTED]")
	}
}
