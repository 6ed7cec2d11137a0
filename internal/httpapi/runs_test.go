package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
	"github.com/techbossai/techboss/internal/webhooks"
)

const upstreamSecret = "sk-upstream-SECRET-0123456789"

type runHarness struct {
	*harness
	m          *sandbox.Manager
	svc        *agent.Service
	model      *modeltest.Server
	alice, bob *http.Client
	prices     map[string]llm.Price
	// hooks delivers webhooks; 127.0.0.0/8 is allowed so receivers in
	// tests are reachable.
	hooks *webhooks.Service
	audit *audit.Log
	deps  Deps // the API's, for a second replica (replica)
}

// replica serves the same services through a second API server, as
// another replica of the deployment would (its own open streams, its own
// revokes); it returns the server's URL.
func (h *runHarness) replica() string {
	h.t.Helper()
	api := NewServer(h.deps)
	srv := httptest.NewServer(api)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = api.RunPresence(ctx) })
	h.t.Cleanup(func() {
		srv.Close()
		cancel()
		wg.Wait()
	})
	return srv.URL
}

// newRunHarness is the whole server with agent runs: the real CLI in real
// local sandboxes, the gateway (in-sandbox listeners and /llm/anthropic),
// and the scripted model server as the upstream.
func newRunHarness(t *testing.T, script ...modeltest.Reply) *runHarness {
	t.Helper()
	return newRunHarnessDB(t, store.SQLite, script...)
}

// newRunHarnessDB is newRunHarness on the given database.
func newRunHarnessDB(t *testing.T, d store.Dialect, script ...modeltest.Reply) *runHarness {
	t.Helper()
	prefix, rel := modeltest.ClaudeInstall(t)
	requireSandboxHost(t)
	h := &harness{
		t: t, db: storetest.Open(t, d), logs: newLogs(t), reg: prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	log := h.logger()
	h.auth = auth.New(auth.Options{
		Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute,
	})
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: buildInit(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	hooks, err := webhooks.New(h.db, bytes.Repeat([]byte{5}, 32), webhooks.Options{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, RetryBase: 10 * time.Millisecond, Poll: 100 * time.Millisecond,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: h.db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local",
		Limits: sandbox.DefaultLimits(),
		Mounts: []sandbox.Mount{{Source: prefix, Target: "/opt/techboss/claude", ReadOnly: true}},
		Events: hooks,
	})
	if err != nil {
		t.Fatal(err)
	}
	rh := &runHarness{harness: h, m: m, model: modeltest.New(t, script...), hooks: hooks,
		prices: map[string]llm.Price{"claude-": {InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75}}}
	rh.svc, err = agent.NewService(agent.Config{Root: true}, agent.Deps{
		Store: h.db, Sandboxes: m, Logger: log, Metrics: h.reg, Events: hooks,
		CLI: claude.New(claude.Config{Bin: filepath.Join("/opt/techboss/claude", rel), Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2"}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{
		Upstream: gateway.NewAnthropic(rh.model.URL, upstreamSecret, nil), RunTokens: rh.svc, Recorder: rh.svc,
		Price: gateway.PriceTable(rh.prices), Logger: log,
		Users: func(ctx context.Context, tok string) (string, error) {
			u, err := h.auth.Authenticate(ctx, tok)
			if err != nil {
				return "", err
			}
			return u.ID, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rh.svc.SetGateway(gw)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rh.svc.Run(ctx) })
	wg.Go(func() { _ = hooks.Run(ctx) })
	rh.audit = audit.New(audit.Options{Repo: h.db, Logger: log, Clock: h.clock.Now})
	wg.Go(func() { _ = rh.audit.Run(ctx) })
	stopping, stop := context.WithCancel(context.Background())
	rh.deps = Deps{
		Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test",
		Sandboxes: m, Runs: rh.svc, Gateway: gw, Stopping: stopping, Webhooks: hooks, Audit: rh.audit,
		PresenceBoard: h.db.PresenceBoard(), PresencePoll: 50 * time.Millisecond,
	}
	api := NewServer(rh.deps)
	wg.Go(func() { _ = api.RunPresence(ctx) })
	h.srv = httptest.NewServer(validateResponses(t, api))
	t.Cleanup(func() {
		stop()
		h.srv.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		if err := api.WaitStreams(wctx); err != nil {
			t.Error(err)
		}
		cancel()
		wg.Wait()
		items, _ := h.db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range items {
			_ = drv.Destroy(context.Background(), sb.Ref)
		}
	})
	h.createUser("alice@example.com", auth.RoleMember)
	h.createUser("bob@example.com", auth.RoleMember)
	h.createUser("admin@example.com", auth.RoleAdmin)
	rh.alice, rh.bob = h.mustLogin("alice@example.com"), h.mustLogin("bob@example.com")
	return rh
}

func (h *runHarness) newSandbox(c *http.Client) string {
	h.t.Helper()
	r := h.do(c, "POST", "/sandbox", map[string]any{"image_base": "host"})
	wantStatus(h.t, r, http.StatusOK)
	var out createSandboxResponse
	r.data(h.t, &out)
	return out.SandboxID
}

// open starts a streaming request and returns the response (caller closes).
func (h *runHarness) open(c *http.Client, method, path string, body any, hdr ...string) *http.Response {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

// typedEvent is one SSE event of the typed form.
type typedEvent struct {
	id    int64
	event string
	data  string
}

// readTyped reads events until the stream ends or stop returns true.
func readTyped(t *testing.T, br *bufio.Reader, stop func(typedEvent) bool) []typedEvent {
	t.Helper()
	var (
		out  []typedEvent
		cur  typedEvent
		data []string
	)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return out
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if cur.event != "" || data != nil {
				cur.data = strings.Join(data, "\n")
				out = append(out, cur)
				if stop != nil && stop(cur) {
					return out
				}
			}
			cur, data = typedEvent{}, nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			cur.id, _ = strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}

func (h *runHarness) storedEvents(runID string) []agent.Event {
	h.t.Helper()
	evs, err := h.db.RunEvents(context.Background(), runID, 0, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

// TestClaudePlainSSE checks the original design's plain form byte for byte.
func TestClaudePlainSSE(t *testing.T) {
	h := newRunHarness(t, modeltest.Text("Hello from the model.\nSecond line of the answer."))
	sb := h.newSandbox(h.alice)
	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude", map[string]any{"prompt": "say hello"})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d type %q body %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	runID := resp.Header.Get("X-Run-ID")
	// The first line goes out with the delta that completes it, the rest
	// of the text with the text event.
	var lineSeq, textSeq, doneSeq int64
	streamed := ""
	for _, ev := range h.storedEvents(runID) {
		switch ev.Type {
		case agent.TypeTextDelta:
			var d agent.DeltaData
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			streamed += d.Text
			if lineSeq == 0 && strings.Contains(streamed, "\n") {
				lineSeq = ev.Seq
			}
		case agent.TypeText:
			textSeq = ev.Seq
		case agent.TypeDone:
			doneSeq = ev.Seq
		}
	}
	if lineSeq == 0 {
		t.Fatalf("no text_delta completed the first line (deltas %q)", streamed)
	}
	want := fmt.Sprintf("id: %d\ndata: Hello from the model.\n\nid: %d\ndata: Second line of the answer.\n\nid: %d\ndata: [DONE]\n\n", lineSeq, textSeq, doneSeq)
	if d := cmp.Diff(want, string(body)); d != "" {
		t.Errorf("plain SSE body (-want +got):\n%s", d)
	}

	// The run record.
	r := h.do(h.alice, "GET", "/runs/"+runID, nil)
	wantStatus(t, r, 200)
	var run struct {
		Status    string  `json:"status"`
		SessionID string  `json:"session_id"`
		CostUSD   float64 `json:"cost_usd"`
		Usage     agent.Usage
		ExitCode  *int `json:"exit_code"`
	}
	r.data(t, &run)
	// 100 input at $3/MTok + 20 output at $15/MTok.
	if run.Status != "succeeded" || run.SessionID == "" || run.ExitCode == nil || run.CostUSD != 0.0006 ||
		run.Usage != (agent.Usage{InputTokens: 100, OutputTokens: 20}) {
		t.Errorf("run %+v", run)
	}
	wantStatus(t, h.do(h.bob, "GET", "/runs/"+runID, nil), 404)
	r = h.do(h.alice, "GET", "/sandbox/"+sb+"/runs", nil)
	var list []agent.Run
	r.data(t, &list)
	if len(list) != 1 || list[0].ID != runID {
		t.Errorf("runs list %+v", list)
	}
	wantStatus(t, h.do(h.bob, "GET", "/sandbox/"+sb+"/runs", nil), 404)
}

// TestRunReconnect: a client that disconnects mid-run and reconnects with
// Last-Event-ID gets every later event exactly once, in order; the run
// itself is not affected by the disconnect.
func TestRunReconnect(t *testing.T) {
	h := newRunHarness(t,
		modeltest.Bash("echo step-one"),
		modeltest.Slow(strings.Repeat("slowly streamed words ", 30), 20*time.Millisecond))
	sb := h.newSandbox(h.alice)
	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "work"})
	runID := resp.Header.Get("X-Run-ID")
	first := readTyped(t, bufio.NewReader(resp.Body), func(e typedEvent) bool { return e.event == "tool_result" })
	resp.Body.Close() // disconnect mid-run
	if len(first) == 0 || first[len(first)-1].event != "tool_result" {
		t.Fatalf("first connection got %+v", first)
	}
	last := first[len(first)-1].id

	resp = h.open(h.alice, "GET", "/runs/"+runID+"/events", nil, "Last-Event-ID", strconv.FormatInt(last, 10))
	rest := readTyped(t, bufio.NewReader(resp.Body), nil)
	resp.Body.Close()
	got := append(first, rest...)
	// presence events are not stored: the first connection may leave
	// after the second joined, and the second then hears of it.
	got = slices.DeleteFunc(got, func(e typedEvent) bool { return e.event == "presence" })
	stored := h.storedEvents(runID)
	if len(got) != len(stored) {
		t.Fatalf("got %d events over two connections, stored %d", len(got), len(stored))
	}
	for i, ev := range stored {
		if got[i].id != ev.Seq || got[i].event != ev.Type || got[i].data != string(ev.Data) {
			t.Fatalf("event %d: got %+v, want seq %d %s %s", i, got[i], ev.Seq, ev.Type, ev.Data)
		}
	}
	if got[len(got)-1].event != "done" || !strings.Contains(got[len(got)-1].data, `"succeeded"`) {
		t.Errorf("last event %+v", got[len(got)-1])
	}
	// ?after= works too, and a finished run replays and ends.
	r := h.do(h.alice, "GET", fmt.Sprintf("/runs/%s/events?after=%d", runID, len(stored)-1), nil)
	if !strings.HasPrefix(string(r.body), fmt.Sprintf("id: %d\nevent: done\n", len(stored))) {
		t.Errorf("after= replay %q", r.body)
	}
	wantField(t, h.do(h.alice, "GET", "/runs/"+runID+"/events", nil, "Last-Event-ID", "x1"), 422, "Last-Event-ID")
	wantStatus(t, h.do(h.bob, "GET", "/runs/"+runID+"/events", nil), 404)
}

// TestRunConflictCancelAndValidation covers 409 for a second run, cancel
// over HTTP, and 422s for bad bodies.
func TestRunConflictCancelAndValidation(t *testing.T) {
	h := newRunHarness(t, modeltest.Hang("thinking"))
	sb := h.newSandbox(h.alice)
	for _, tt := range []struct {
		body  any
		field string
	}{
		{map[string]any{"prompt": ""}, "prompt"},
		{map[string]any{"prompt": "x", "max_turns": -1}, "max_turns"},
		{map[string]any{"prompt": "x", "permission_mode": "yolo"}, "permission_mode"},
		{map[string]any{"prompt": "x", "allowed_tools": []string{"a,b"}}, "allowed_tools[0]"},
		{map[string]any{"prompt": "x", "bogus": 1}, "bogus"},
	} {
		wantField(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/claude", tt.body), 422, tt.field)
	}
	wantStatus(t, h.do(h.bob, "POST", "/sandbox/"+sb+"/claude", map[string]any{"prompt": "x"}), 404)

	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "long task"})
	defer resp.Body.Close()
	runID := resp.Header.Get("X-Run-ID")
	br := bufio.NewReader(resp.Body)
	readTyped(t, br, func(e typedEvent) bool { return e.event == "run.started" })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.model.AwaitMessageRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	r := h.do(h.alice, "POST", "/sandbox/"+sb+"/claude", map[string]any{"prompt": "again"})
	wantStatus(t, r, 409)
	if e := r.errBody(t); !strings.Contains(e.Message, runID) {
		t.Errorf("conflict message %q does not name %s", e.Message, runID)
	}
	wantStatus(t, h.do(h.bob, "POST", "/runs/"+runID+"/cancel", nil), 404)
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), 202)
	rest := readTyped(t, br, nil)
	if len(rest) == 0 || rest[len(rest)-1].event != "done" || !strings.Contains(rest[len(rest)-1].data, `"cancelled"`) {
		t.Fatalf("after cancel: %+v", rest)
	}
	// Whether the CLI writes a final result on SIGINT depends on how far
	// its answer had got (agent.TestCancel pins the mid-stream case); if it
	// wrote one, it is kept, before done (the gateway's usage event may
	// land after it: usage is recorded once the answer has streamed).
	for _, ev := range rest {
		if ev.event == "result" && !strings.Contains(ev.data, "error_during_execution") {
			t.Errorf("after cancel the CLI's result is %s, want error_during_execution", ev.data)
		}
	}
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), 409)
}

// TestGatewayCredentials: the sandbox never sees the upstream key; the run
// token works only for its own sandbox and only while its run lasts; a
// user API token works on the server's /llm/anthropic; usage matches what
// the model server reported and is priced from the table.
func TestGatewayCredentials(t *testing.T) {
	h := newRunHarness(t)
	sbA, sbB := h.newSandbox(h.alice), h.newSandbox(h.bob)

	// Bob's run records its env (opening bob's in-sandbox gateway listener).
	h.model.Reset(modeltest.Bash("env > /workspace/env.txt"), modeltest.Text("ok"))
	body := h.do(h.bob, "POST", "/sandbox/"+sbB+"/claude", map[string]any{"prompt": "env"})
	wantStatus(t, body, 200)
	bobEnv := h.readFile(h.bob, sbB, "env.txt")

	// Alice's run records its env, then its model call hangs: the run is active.
	h.model.Reset(modeltest.Bash("env > /workspace/env.txt"), modeltest.Hang("hold"))
	resp := h.open(h.alice, "POST", "/sandbox/"+sbA+"/claude?format=events", map[string]any{"prompt": "env"})
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readTyped(t, br, func(e typedEvent) bool { return e.event == "tool_result" })
	aliceEnv := h.readFile(h.alice, sbA, "env.txt")

	for who, env := range map[string]string{"alice": aliceEnv, "bob": bobEnv} {
		if strings.Contains(env, upstreamSecret) || strings.Contains(env, "sk-upstream") {
			t.Fatalf("%s's sandbox env contains the upstream key", who)
		}
		if !strings.Contains(env, "ANTHROPIC_API_KEY=tbr_") || !strings.Contains(env, "ANTHROPIC_BASE_URL=http://127.0.0.1:") {
			t.Errorf("%s's env lacks the run token or gateway URL:\n%s", who, env)
		}
	}
	aliceTok, aliceURL := envValue(aliceEnv, "ANTHROPIC_API_KEY"), envValue(aliceEnv, "ANTHROPIC_BASE_URL")
	bobURL := envValue(bobEnv, "ANTHROPIC_BASE_URL")

	// From inside bob's sandbox, alice's live token is refused; from inside
	// alice's, it works.
	probe := func(owner *http.Client, sb, url, tok string) string {
		script := `import sys,urllib.request,urllib.error
req=urllib.request.Request(sys.argv[1]+"/v1/messages",data=b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}',headers={"x-api-key":sys.argv[2],"content-type":"application/json","anthropic-version":"2023-06-01"})
try:
  print(urllib.request.urlopen(req).status)
except urllib.error.HTTPError as e:
  print(e.code)`
		r := h.do(owner, "POST", "/sandbox/"+sb+"/exec?wait=true", map[string]any{"command": []string{"python3", "-c", script, url, tok}})
		wantStatus(t, r, 200)
		var out struct{ Stdout string }
		r.data(t, &out)
		return strings.TrimSpace(out.Stdout)
	}
	// The run's call after the tool result must hold the Hang before the
	// probe's answer is scripted: a probe first in line would take the
	// Hang, and the run the probe's answer, and end (the run's cancel
	// below then found it finished).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.model.AwaitScriptTaken(ctx); err != nil {
		t.Fatal(err)
	}
	h.model.Script(modeltest.Text("probe answer"))
	if got := probe(h.alice, sbA, aliceURL, aliceTok); got != "200" {
		t.Errorf("alice's token in alice's sandbox: %s, want 200", got)
	}
	if got := probe(h.bob, sbB, bobURL, aliceTok); got != "401" {
		t.Errorf("alice's token in bob's sandbox: %s, want 401", got)
	}

	// After the run ends the token is dead everywhere.
	runID := resp.Header.Get("X-Run-ID")
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), 202)
	readTyped(t, br, nil)
	if got := probe(h.alice, sbA, aliceURL, aliceTok); got != "401" {
		t.Errorf("alice's token after her run ended: %s, want 401", got)
	}
	r := h.do(h.client(), "POST", "/llm/anthropic/v1/messages", `{"model":"claude-x","max_tokens":5,"messages":[]}`, "x-api-key", aliceTok)
	wantStatus(t, r, 401)

	// A user API token works on the server's own gateway route.
	tok := h.newToken(h.alice, "sdk")
	h.model.Script(modeltest.Text("via api token"))
	r = h.do(h.client(), "POST", "/llm/anthropic/v1/messages", `{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer "+tok.Token, "anthropic-version", "2023-06-01")
	wantStatus(t, r, 200)

	// Usage: what was recorded equals what the model server reported.
	var total agent.Usage
	var cost float64
	for _, c := range []*http.Client{h.alice, h.bob} {
		r := h.do(c, "GET", "/usage?from=2020-01-01&to=2100-01-01&group_by=model", nil)
		wantStatus(t, r, 200)
		var u struct {
			Total struct {
				Usage   agent.Usage `json:"usage"`
				CostUSD float64     `json:"cost_usd"`
			} `json:"total"`
		}
		r.data(t, &u)
		total = total.Add(u.Total.Usage)
		cost += u.Total.CostUSD * 1e9
	}
	rep := h.model.Reported()
	want := agent.Usage{InputTokens: rep.InputTokens, OutputTokens: rep.OutputTokens, CacheReadTokens: rep.CacheReadTokens, CacheCreationTokens: rep.CacheCreationTokens}
	if total != want {
		t.Errorf("recorded usage %+v, model server reported %+v", total, want)
	}
	p := h.prices["claude-"]
	wantCost := (float64(want.InputTokens)*p.InputPerMTok + float64(want.OutputTokens)*p.OutputPerMTok) * 1000
	if math.Abs(cost-wantCost) > 0.5 || wantCost == 0 {
		t.Errorf("recorded cost %v nano-USD, want %v from the price table", cost, wantCost)
	}
	wantStatus(t, h.do(h.alice, "GET", "/usage?user=", nil), 403)
	wantField(t, h.do(h.alice, "GET", "/usage?group_by=week", nil), 422, "group_by")
	admin := h.mustLogin("admin@example.com")
	r = h.do(admin, "GET", "/usage?from=2020-01-01&to=2100-01-01&group_by=sandbox&user=", nil)
	var all usageResponse
	r.data(t, &all)
	if all.Total.Usage != want {
		t.Errorf("admin all-users total %+v, want %+v", all.Total.Usage, want)
	}

	// By user: an admin sees every user, labelled by email; a member only
	// themselves.
	byUser := func(c *http.Client) usageResponse {
		t.Helper()
		r := h.do(c, "GET", "/usage?from=2020-01-01&to=2100-01-01&group_by=user", nil)
		wantStatus(t, r, 200)
		var u usageResponse
		r.data(t, &u)
		return u
	}
	users := byUser(admin)
	var labels []string
	var sum agent.Usage
	for _, g := range users.Groups {
		labels = append(labels, g.Label)
		sum = sum.Add(g.Usage)
	}
	slices.Sort(labels)
	if !slices.Equal(labels, []string{"alice@example.com", "bob@example.com"}) || sum != want || users.Total.Usage != want {
		t.Errorf("admin by user: labels %v, sum %+v, total %+v; want alice and bob summing to %+v", labels, sum, users.Total.Usage, want)
	}
	if own := byUser(h.bob); len(own.Groups) != 1 || own.Groups[0].Label != "bob@example.com" {
		t.Errorf("bob by user: %+v, want bob alone", own.Groups)
	}
}

func (h *runHarness) readFile(c *http.Client, sb, name string) string {
	h.t.Helper()
	r := h.do(c, "GET", "/sandbox/"+sb+"/files/"+name, nil)
	wantStatus(h.t, r, 200)
	return string(r.body)
}

func envValue(env, key string) string {
	for _, l := range strings.Split(env, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

func FuzzLastEventID(f *testing.F) {
	for _, s := range []string{"0", "17", "-1", " 5 ", "9223372036854775807", "9223372036854775808", "1e3", "", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := parseSeq("Last-Event-ID", v)
		if err == nil && n < 0 {
			t.Fatalf("accepted negative %d", n)
		}
	})
}

// emitCLI stands in for the agent program in the latency benchmark: a
// script in the real sandbox that prints stream-json text lines carrying
// the wall-clock time they were written (the sandbox shares the host's
// clock), parsed by the real Claude parser.
type emitCLI struct {
	lines    int
	deltaGap time.Duration // > 0: text deltas this far apart instead of text lines
}

const emitScript = `import sys,time,json
for i in range(int(sys.argv[1])):
    sys.stdout.write(json.dumps({"type":"assistant","message":{"id":"m","content":[{"type":"text","text":str(time.time_ns())}]}})+"\n")
    sys.stdout.flush()
    time.sleep(0.002)
print(json.dumps({"type":"result","subtype":"success","is_error":False,"num_turns":1,"result":"ok"}))
`

// emitDeltaScript writes text deltas as the CLI does with
// --include-partial-messages, each carrying its send time, gap seconds
// apart (more than the service's 50 ms delta window: each is the first
// of its window, sent at once).
const emitDeltaScript = `import sys,time,json
def w(ev):
    sys.stdout.write(json.dumps({"type":"stream_event","event":ev})+"\n"); sys.stdout.flush()
w({"type":"message_start","message":{"id":"m"}})
w({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})
for i in range(int(sys.argv[1])):
    w({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":str(time.time_ns())+" "}})
    time.sleep(float(sys.argv[2]))
print(json.dumps({"type":"result","subtype":"success","is_error":False,"num_turns":1,"result":"ok"}))
`

func (c emitCLI) Command(agent.CommandRequest) ([]string, map[string]string) {
	if c.deltaGap > 0 {
		return []string{"python3", "-c", emitDeltaScript, strconv.Itoa(c.lines), strconv.FormatFloat(c.deltaGap.Seconds(), 'f', 3, 64)}, nil
	}
	return []string{"python3", "-c", emitScript, strconv.Itoa(c.lines)}, nil
}

func (emitCLI) NewParser() agent.Parser { return &claude.Parser{} }
