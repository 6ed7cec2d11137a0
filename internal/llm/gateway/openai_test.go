package gateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/llm/llmtest"
)

const openaiUpstreamKey = "sk-proj-gateway-upstream-SECRET"

// chanRecorder hands each record to the test as it is stored: the gateway
// records after the answer's last byte, so tests wait for it.
type chanRecorder chan agent.UsageRecord

func (c chanRecorder) RecordUsage(_ context.Context, rec agent.UsageRecord) error {
	c <- rec
	return nil
}

func (c chanRecorder) next(t *testing.T) agent.UsageRecord {
	t.Helper()
	return <-c
}

func setupOpenAI(t *testing.T) (*llmtest.Server, *httptest.Server, chanRecorder) {
	t.Helper()
	return setupOpenAILogged(t, io.Discard)
}

func setupOpenAILogged(t *testing.T, logs io.Writer) (*llmtest.Server, *httptest.Server, chanRecorder) {
	t.Helper()
	up := llmtest.NewOpenAI(t, openaiUpstreamKey)
	rec := make(chanRecorder, 16)
	g, err := gateway.New(gateway.Config{
		Upstream:  gateway.NewAnthropic("http://127.0.0.1:1", "unused", nil),
		RunTokens: tokens{"tbr_run1": {UserID: "alice", SandboxID: "sb1", RunID: "run1"}},
		Users: func(_ context.Context, tok string) (string, error) {
			if tok == "tb_user_bob" {
				return "bob", nil
			}
			return "", errs.E(errs.Unauthenticated, "bad token")
		},
		Recorder: rec,
		Price:    gateway.PriceTable(map[string]llm.Price{"gpt-test": {InputPerMTok: 2, OutputPerMTok: 8, CacheReadPerMTok: 0.5}}),
		Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gateway.OpenAIPrefix+"/", gateway.NewOpenAI(g, "openai", up.URL+"/v1", openaiUpstreamKey, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return up, srv, rec
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func post(t *testing.T, ctx context.Context, url, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestOpenAIPassthroughIsByteFaithful(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/responses", `{"model":"gpt-test","stream":true,"input":"hi"}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			up, srv, rec := setupOpenAI(t)
			up.Push(llmtest.Reply{Text: []string{"Hel", "lo ", "there"}, Usage: llm.Usage{InputTokens: 1000, OutputTokens: 300, CacheReadTokens: 200}})
			resp := post(t, t.Context(), srv.URL+gateway.OpenAIPrefix+tc.path, "tbr_run1", tc.body)
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			sent := up.Sent()
			if len(sent) != 1 || !bytes.Equal(got, sent[0]) {
				t.Fatalf("client got %d bytes, upstream sent %v: not byte-identical", len(got), len(sent))
			}
			last := up.Last()
			if last.Header.Get("Authorization") != "Bearer "+openaiUpstreamKey {
				t.Errorf("upstream authorization: got %q", last.Header.Get("Authorization"))
			}
			if last.Path != tc.path {
				t.Errorf("upstream path: got %s", last.Path)
			}
			if tc.path == "/v1/chat/completions" && !strings.Contains(string(last.Body), `"stream_options":{"include_usage":true}`) {
				t.Errorf("the gateway did not ask for usage: %s", last.Body)
			}
			r := rec.next(t)
			want := agent.Usage{InputTokens: 1000, OutputTokens: 300, CacheReadTokens: 200}
			if d := cmp.Diff(want, r.Usage); d != "" || r.Provider != "openai" || r.Model != "gpt-test" || r.RunID != "run1" || r.UserID != "alice" || r.Status != 200 {
				t.Errorf("record %+v; usage diff %s", r, d)
			}
			if r.CostNanoUSD != 4_500_000 { // (1000*2 + 300*8 + 200*0.5) USD per million tokens
				t.Errorf("cost: got %d nUSD, want 4500000", r.CostNanoUSD)
			}
		})
	}
}

func TestOpenAISDKThroughGateway(t *testing.T) {
	up, srv, rec := setupOpenAI(t)
	client := sdk.NewClient(option.WithBaseURL(srv.URL+gateway.OpenAIPrefix+"/v1/"), option.WithAPIKey("tb_user_bob"), option.WithMaxRetries(0))
	up.Push(llmtest.Reply{Text: []string{"chat ", "answer"}, Usage: llm.Usage{InputTokens: 7, OutputTokens: 2}})
	s := client.Chat.Completions.NewStreaming(t.Context(), sdk.ChatCompletionNewParams{Model: "gpt-test", Messages: []sdk.ChatCompletionMessageParamUnion{sdk.UserMessage("hi")}})
	var text strings.Builder
	for s.Next() {
		for _, c := range s.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	up.Push(llmtest.Reply{Text: []string{"responses ", "answer"}, Usage: llm.Usage{InputTokens: 9, OutputTokens: 3}})
	rs := client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "gpt-test", Input: responses.ResponseNewParamsInputUnion{OfString: sdk.String("hi")}})
	for rs.Next() {
		if ev := rs.Current(); ev.Type == "response.output_text.delta" {
			text.WriteString(ev.Delta)
		}
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	rs.Close()
	if got := text.String(); got != "chat answerresponses answer" {
		t.Errorf("text: got %q", got)
	}
	var got []agent.Usage
	for _, r := range []agent.UsageRecord{rec.next(t), rec.next(t)} {
		if r.UserID != "bob" {
			t.Errorf("user: got %q", r.UserID)
		}
		got = append(got, r.Usage)
	}
	// The first call records after its client has read the end, so the
	// two records may arrive in either order.
	sort.Slice(got, func(i, j int) bool { return got[i].InputTokens < got[j].InputTokens })
	if d := cmp.Diff([]agent.Usage{{InputTokens: 7, OutputTokens: 2}, {InputTokens: 9, OutputTokens: 3}}, got); d != "" {
		t.Errorf("usage (-want +got):\n%s", d)
	}
}

func TestOpenAIGatewayErrors(t *testing.T) {
	var logs syncBuf
	up, srv, rec := setupOpenAILogged(t, &logs)
	defer func() {
		if strings.Contains(logs.String(), openaiUpstreamKey) || strings.Contains(logs.String(), "SECRET") {
			t.Errorf("logs contain the upstream key:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "rejected the configured key") {
			t.Error("the rejected key was not logged at all: the grep proves nothing")
		}
	}()
	body := `{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	url := srv.URL + gateway.OpenAIPrefix + "/v1/chat/completions"

	resp := post(t, t.Context(), url, "not-a-token", body)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || !strings.Contains(string(b), `"invalid API key"`) {
		t.Errorf("bad client token: got %d %s", resp.StatusCode, b)
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("an unauthenticated call reached the upstream %d times", n)
	}

	// The upstream rejects the server's key and quotes it: the client gets a
	// 502 of our own, without the quote.
	up.Key = "sk-proj-something-else"
	resp = post(t, t.Context(), url, "tbr_run1", body)
	b, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 502 || !strings.Contains(string(b), "upstream openai rejected the configured key") || strings.Contains(string(b), "SECRET") {
		t.Errorf("upstream 401: got %d %s", resp.StatusCode, b)
	}
	up.Key = openaiUpstreamKey

	up.Push(llmtest.Reply{Status: 429, RetryAfter: "11"})
	resp = post(t, t.Context(), url, "tbr_run1", body)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "11" {
		t.Errorf("upstream 429: got %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	statuses := []int{rec.next(t).Status, rec.next(t).Status} // in either order
	sort.Ints(statuses)
	if d := cmp.Diff([]int{401, 429}, statuses); d != "" {
		t.Errorf("recorded upstream statuses (-want +got):\n%s", d)
	}

	resp = post(t, t.Context(), srv.URL+gateway.OpenAIPrefix+"/v1/embeddings", "tbr_run1", body)
	if resp.StatusCode != 404 {
		t.Errorf("unknown path: got %d", resp.StatusCode)
	}
}

func TestOpenAIClientGoneCancelsUpstream(t *testing.T) {
	up, srv, _ := setupOpenAI(t)
	up.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithCancel(t.Context())
	resp := post(t, ctx, srv.URL+gateway.OpenAIPrefix+"/v1/responses", "tbr_run1", `{"model":"gpt-test","stream":true,"input":"hi"}`)
	buf := make([]byte, 1)
	for !bytes.Contains(buf, []byte("first")) {
		chunk := make([]byte, 4096)
		n, err := resp.Body.Read(chunk)
		if err != nil {
			t.Fatalf("stream ended before the first delta: %v", err)
		}
		buf = append(buf, chunk[:n]...)
	}
	cancel()
	<-up.Cancelled
}
