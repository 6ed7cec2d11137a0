package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tokens is a fixed token table. The real resolver (agent.Service, backed
// by the store) is exercised end to end in internal/agent's CLI tests.
type tokens map[string]agent.Principal

func (t tokens) AuthenticateRunToken(_ context.Context, tok string) (agent.Principal, error) {
	if p, ok := t[tok]; ok {
		return p, nil
	}
	return agent.Principal{}, errs.E(errs.Unauthenticated, "invalid run token")
}

type recorder struct {
	mu    sync.Mutex
	recs  []agent.UsageRecord
	added chan struct{} // capacity 1: a record arrived since the last look
}

func (r *recorder) RecordUsage(_ context.Context, rec agent.UsageRecord) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	select {
	case r.added <- struct{}{}:
	default:
	}
	return nil
}

// wait returns the records once there are at least n: the gateway records
// usage after the last byte reached the client, so a test that has read
// the answer may look before the record exists.
func (r *recorder) wait(t *testing.T, n int) []agent.UsageRecord {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		if recs := r.all(); len(recs) >= n {
			return recs
		}
		select {
		case <-r.added:
		case <-timer.C:
			t.Fatalf("got %d usage records, want %d", len(r.all()), n)
		}
	}
}

func (r *recorder) all() []agent.UsageRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agent.UsageRecord(nil), r.recs...)
}

const upstreamKey = "sk-upstream-secret"

func setup(t *testing.T, script ...modeltest.Reply) (*modeltest.Server, *httptest.Server, *recorder) {
	t.Helper()
	ms := modeltest.New(t, script...)
	rec := &recorder{added: make(chan struct{}, 1)}
	g, err := gateway.New(gateway.Config{
		Upstream:  gateway.NewAnthropic(ms.URL, upstreamKey, nil),
		RunTokens: tokens{"tbr_run1": {UserID: "alice", SandboxID: "sb1", RunID: "run1"}},
		Users: func(_ context.Context, tok string) (string, error) {
			if tok == "tb_user_bob" {
				return "bob", nil
			}
			return "", errs.E(errs.Unauthenticated, "bad token")
		},
		Recorder: rec,
		Price: gateway.PriceTable(map[string]llm.Price{
			"claude-test": {InputPerMTok: 2, OutputPerMTok: 10, CacheReadPerMTok: 0.2, CacheWritePerMTok: 2.5},
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gateway.Prefix+"/", g)
	mux.Handle(gateway.Prefix, g)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return ms, srv, rec
}

func call(t *testing.T, ctx context.Context, url, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+gateway.Prefix+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("x-api-key", key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("anthropic-beta", "claude-code-20250219")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

const streamBody = `{"model":"claude-test","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

func TestPassthroughStreamAndMeter(t *testing.T) {
	ms, srv, rec := setup(t,
		modeltest.Text("hello there, this is a streamed answer").WithUsage(modeltest.Usage{InputTokens: 1000, OutputTokens: 200, CacheReadTokens: 300, CacheCreationTokens: 40}).Times(2),
		modeltest.Text("plain json").WithUsage(modeltest.Usage{InputTokens: 5, OutputTokens: 6}),
	)
	// Streaming: the bytes the client gets are exactly the upstream's.
	resp := call(t, t.Context(), srv.URL, "tbr_run1", streamBody)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	direct, err := http.Post(ms.URL+"/v1/messages", "application/json", strings.NewReader(streamBody)) // same reply, no gateway
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(direct.Body)
	direct.Body.Close()
	// Message IDs differ per request; everything else is byte-identical.
	norm := func(b []byte) string {
		return strings.NewReplacer("msg_test000001", "MSG", "msg_test000002", "MSG", "test000001", "ID", "test000002", "ID").Replace(string(b))
	}
	if d := cmp.Diff(norm(want), norm(got)); d != "" {
		t.Errorf("streamed body differs from upstream (-upstream +gateway):\n%s", d)
	}

	// Non-streaming by a user API token.
	resp = call(t, t.Context(), srv.URL, "tb_user_bob", `{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	var msg struct{ Content []struct{ Text string } }
	if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil || msg.Content[0].Text != "plain json" {
		t.Fatalf("non-streaming answer %+v, %v", msg, err)
	}

	// The upstream saw the server's key, never the client's token.
	for _, r := range ms.MessageRequests()[:1] {
		if k := r.Header.Get("x-api-key"); k != upstreamKey {
			t.Errorf("upstream got key %q", k)
		}
		if r.Header.Get("anthropic-beta") != "claude-code-20250219" || r.Query != "beta=true" {
			t.Errorf("headers/query not forwarded: %v %q", r.Header, r.Query)
		}
	}

	recs := rec.wait(t, 2)
	wantRecs := []agent.UsageRecord{
		{UserID: "alice", SandboxID: "sb1", RunID: "run1", Provider: "anthropic", Model: "claude-test", Status: 200,
			Usage: agent.Usage{InputTokens: 1000, OutputTokens: 200, CacheReadTokens: 300, CacheCreationTokens: 40},
			// 1000*2 + 200*10 + 300*0.2 + 40*2.5 = 4160 USD per 1e6 tokens
			CostNanoUSD: 4_160_000},
		{UserID: "bob", Provider: "anthropic", Model: "claude-test", Status: 200,
			Usage: agent.Usage{InputTokens: 5, OutputTokens: 6}, CostNanoUSD: 70_000},
	}
	if d := cmp.Diff(wantRecs, recs, cmpopts.IgnoreFields(agent.UsageRecord{}, "Latency")); d != "" {
		t.Errorf("usage records (-want +got):\n%s", d)
	}
	// What was recorded equals what the model server reported, minus the
	// direct (un-gatewayed) call made above for comparison.
	var sum agent.Usage
	for _, r := range recs {
		sum = sum.Add(r.Usage)
	}
	rep := ms.Reported()
	reported := agent.Usage{InputTokens: rep.InputTokens - 1000, OutputTokens: rep.OutputTokens - 200,
		CacheReadTokens: rep.CacheReadTokens - 300, CacheCreationTokens: rep.CacheCreationTokens - 40}
	if sum != reported {
		t.Errorf("recorded %+v, model server reported %+v", sum, reported)
	}
}

func TestAuthAndErrors(t *testing.T) {
	ms, srv, rec := setup(t, modeltest.HTTPError(529))
	for _, key := range []string{"", "tbr_unknown", "tb_user_nobody"} {
		resp := call(t, t.Context(), srv.URL, key, streamBody)
		var body struct {
			Type  string
			Error struct{ Type string }
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != 401 || body.Type != "error" || body.Error.Type != "authentication_error" {
			t.Errorf("key %q: got %d %+v, want 401 authentication_error", key, resp.StatusCode, body)
		}
	}
	if n := len(ms.Requests()); n != 0 {
		t.Errorf("unauthenticated calls reached the upstream: %d", n)
	}

	// Upstream errors pass through with their status and body.
	resp := call(t, t.Context(), srv.URL, "tbr_run1", streamBody)
	if resp.StatusCode != 529 {
		t.Errorf("got %d, want upstream 529", resp.StatusCode)
	}
	if recs := rec.wait(t, 1); len(recs) != 1 || recs[0].Status != 529 || !recs[0].Usage.IsZero() {
		t.Errorf("usage records %+v", recs)
	}

	// HEAD of the base URL (the CLI probes it), unknown paths.
	req, _ := http.NewRequest(http.MethodHead, srv.URL+gateway.Prefix, nil)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 200 {
		t.Errorf("HEAD base: %v %v", r, err)
	}
	if r, err := http.Get(srv.URL + gateway.Prefix + "/v1/models"); err != nil || r.StatusCode != 404 {
		t.Errorf("GET unknown path: %v %v", r, err)
	} else {
		r.Body.Close()
	}
}

// TestClientCancelCancelsUpstream: a client that goes away mid-stream ends
// the upstream request too.
func TestClientCancelCancelsUpstream(t *testing.T) {
	ms, srv, _ := setup(t, modeltest.Hang("first chunk then silence"))
	ctx, cancel := context.WithCancel(t.Context())
	resp := call(t, ctx, srv.URL, "tbr_run1", streamBody)
	br := bufio.NewReader(resp.Body)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(l, "text_delta") {
			break
		}
	}
	cancel()
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if err := ms.AwaitAnswers(wctx, 1); err != nil {
		t.Fatalf("upstream stream still open after the client left: %v", err)
	}
	if a := ms.Requests()[0].Answer; a != "sse:held" {
		t.Errorf("upstream answer %q, want sse:held (ended by disconnect)", a)
	}
}
