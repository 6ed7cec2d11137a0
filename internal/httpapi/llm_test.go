package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/anthropic"
	"github.com/techbossai/techboss/internal/llm/bedrock"
	"github.com/techbossai/techboss/internal/llm/llmtest"
	"github.com/techbossai/techboss/internal/llm/openai"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

const (
	llmAnthropicKey = "sk-ant-api03-HTTPAPI-SECRET-0001"
	llmOpenAIKey    = "sk-proj-HTTPAPI-SECRET-0002"
)

// dbRecorder stores chat usage records straight in the store (what
// agent.Service.RecordUsage does, minus run bookkeeping).
type dbRecorder struct{ db *store.DB }

func (r dbRecorder) RecordUsage(ctx context.Context, rec agent.UsageRecord) error {
	return r.db.InsertUsage(ctx, rec)
}

type llmHarness struct {
	*harness
	anth, oai, bed *llmtest.Server
	token          string
	user           *auth.User
}

func newLLMHarness(t *testing.T, budget llm.BudgetConfig) *llmHarness {
	t.Helper()
	h := &harness{
		t:     t,
		db:    storetest.OpenSQLite(t),
		clock: &fakeClock{now: time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)},
		logs:  newLogs(t),
		reg:   prometheus.NewRegistry(),
	}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.auth = auth.New(auth.Options{Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute})
	lh := &llmHarness{harness: h, anth: llmtest.NewAnthropic(t, llmAnthropicKey), oai: llmtest.NewOpenAI(t, llmOpenAIKey), bed: llmtest.NewBedrock(t)}
	zero := 0
	price := llm.Price{InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75}
	cfg := llm.Config{
		DefaultProvider: "anthropic",
		Budget:          budget,
		Providers: []llm.ProviderConfig{
			{Name: "anthropic", Type: llm.TypeAnthropic, BaseURL: lh.anth.URL, APIKey: llmAnthropicKey, MaxRetries: &zero,
				Models: []llm.ModelConfig{{ID: "claude-test", Price: price}}},
			{Name: "openai", Type: llm.TypeOpenAI, BaseURL: lh.oai.URL + "/v1/", APIKey: llmOpenAIKey, MaxRetries: &zero,
				Models: []llm.ModelConfig{{ID: "gpt-test", Price: llm.Price{InputPerMTok: 2, OutputPerMTok: 8}}}},
			{Name: "openai-responses", Type: llm.TypeOpenAI, API: "responses", BaseURL: lh.oai.URL + "/v1/", APIKey: llmOpenAIKey, MaxRetries: &zero,
				AnyModel: true},
			{Name: "bedrock", Type: llm.TypeBedrock, BaseURL: lh.bed.URL, MaxRetries: &zero,
				Models: []llm.ModelConfig{{ID: "claude-on-bedrock", UpstreamID: "anthropic.claude-test-v1:0", Price: price}}},
		},
	}
	awsCfg := aws.Config{Region: llmtest.BedrockRegion,
		Credentials: credentials.NewStaticCredentialsProvider(llmtest.BedrockAccessKey, llmtest.BedrockSecretKey, "")}
	reg, err := llm.NewRegistry(t.Context(), cfg, map[string]llm.Factory{
		llm.TypeAnthropic: anthropic.Factory(nil),
		llm.TypeOpenAI:    openai.Factory(nil),
		llm.TypeBedrock: func(_ context.Context, pc llm.ProviderConfig) (llm.Provider, error) {
			return bedrock.New(pc, awsCfg), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	deps := &LLMDeps{Registry: reg, Recorder: dbRecorder{h.db}, Budgets: llm.NewBudgets(budget, h.db, h.db, h.clock.Now)}
	h.srv = httptest.NewServer(validateResponses(t, NewServer(Deps{Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now,
		Version: "test", LLM: deps})))
	t.Cleanup(h.srv.Close)
	lh.user = h.createUser("chat@example.com", auth.RoleMember)
	_, tok, err := h.auth.CreateToken(t.Context(), lh.user.ID, "chat")
	if err != nil {
		t.Fatal(err)
	}
	lh.token = tok.Reveal()
	return lh
}

func (h *llmHarness) chat(body any) resp {
	h.t.Helper()
	return h.do(http.DefaultClient, "POST", "/v1/chat", body, "Authorization", "Bearer "+h.token)
}

type chatSSEEvent struct {
	Event string
	Data  string
}

func parseChatSSE(t *testing.T, b []byte) []chatSSEEvent {
	t.Helper()
	var (
		out []chatSSEEvent
		cur chatSSEEvent
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.Event != "" || cur.Data != "" {
				out = append(out, cur)
			}
			cur = chatSSEEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.Event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.Data += strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

func (h *llmHarness) usage() []agent.UsageRecord {
	h.t.Helper()
	recs, err := h.db.ListUsage(h.t.Context(), agent.UsageQuery{UserID: h.user.ID}, 100)
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}

func TestChatStreamsEveryProvider(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{})
	reply := llmtest.Reply{
		Text:      []string{"It is ", "sunny."},
		ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon"}`)}},
		Usage:     llm.Usage{InputTokens: 1000, OutputTokens: 200},
	}
	h.anth.Push(reply)
	h.oai.Push(reply, reply)
	h.bed.Push(reply)
	cases := []struct{ provider, model string }{
		{"", "claude-test"}, // found by model
		{"openai", "gpt-test"},
		{"openai-responses", "gpt-anything"},
		{"bedrock", "claude-on-bedrock"},
	}
	for _, tc := range cases {
		t.Run(tc.model, func(t *testing.T) {
			r := h.chat(map[string]any{"provider": tc.provider, "model": tc.model, "system": "be brief",
				"messages": []map[string]any{{"role": "user", "content": "weather in Lyon?"}},
				"tools":    []map[string]any{{"name": "get_weather", "input_schema": map[string]any{"type": "object"}}}})
			wantStatus(t, r, 200)
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("content type %q", ct)
			}
			var got []string
			for _, ev := range parseChatSSE(t, r.body) {
				got = append(got, ev.Event+" "+ev.Data)
			}
			want := []string{
				`delta {"text":"It is "}`,
				`delta {"text":"sunny."}`,
				`tool_call {"id":"call_1","name":"get_weather","input":{"city":"Lyon"}}`,
				`usage {"input_tokens":1000,"output_tokens":200,"cache_read_tokens":0,"cache_write_tokens":0,"cost_usd":` + map[string]string{"gpt-test": "0.0036", "gpt-anything": "0"}[tc.model] + `}`,
				`done {"stop_reason":"tool_use"}`,
			}
			if want[3] == `usage {"input_tokens":1000,"output_tokens":200,"cache_read_tokens":0,"cache_write_tokens":0,"cost_usd":}` {
				want[3] = strings.Replace(want[3], `:}`, `:0.006}`, 1)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
		})
	}
	if got := h.bed.Last().Path; got != "/model/anthropic.claude-test-v1:0/converse-stream" {
		t.Errorf("bedrock upstream model path: got %s", got)
	}
	recs := h.usage()
	if len(recs) != 4 {
		t.Fatalf("got %d usage records, want 4", len(recs))
	}
	byModel := map[string]agent.UsageRecord{}
	for _, rec := range recs {
		byModel[rec.Provider+"/"+rec.Model] = rec
	}
	for key, cost := range map[string]int64{"anthropic/claude-test": 6_000_000, "openai/gpt-test": 3_600_000,
		"openai-responses/gpt-anything": 0, "bedrock/claude-on-bedrock": 6_000_000} {
		rec, ok := byModel[key]
		if !ok {
			t.Errorf("no usage record for %s", key)
			continue
		}
		if rec.Usage.InputTokens != 1000 || rec.Usage.OutputTokens != 200 || rec.CostNanoUSD != cost || rec.Status != 200 || rec.UserID != h.user.ID {
			t.Errorf("%s record: got %+v, want 1000/200 tokens, cost %d nUSD, status 200", key, rec, cost)
		}
	}
}

func TestChatJSONAnswer(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{})
	r := h.chat(map[string]any{"model": "claude-test", "stream": false, "messages": []map[string]any{{"role": "user", "content": "hi"}}})
	wantStatus(t, r, 200)
	var got chatResponse
	r.data(t, &got)
	want := chatResponse{Provider: "anthropic", Model: "claude-test", Text: "Hello, world", Usage: llm.Usage{InputTokens: 12, OutputTokens: 5},
		CostUSD: (12*3 + 5*15) / 1e6, StopReason: llm.StopEnd}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("answer (-want +got):\n%s", d)
	}
}

func TestModels(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{})
	r := h.do(http.DefaultClient, "GET", "/v1/models", nil, "Authorization", "Bearer "+h.token)
	wantStatus(t, r, 200)
	var got modelsResponse
	r.data(t, &got)
	var ids []string
	for _, m := range got.Models {
		ids = append(ids, m.Provider+"/"+m.ID)
	}
	if d := cmp.Diff([]string{"anthropic/claude-test", "openai/gpt-test", "bedrock/claude-on-bedrock"}, ids); d != "" {
		t.Errorf("models (-want +got):\n%s", d)
	}
	if len(got.Providers) != 4 || !got.Providers[0].Default || !got.Providers[2].AnyModel {
		t.Errorf("providers: got %+v", got.Providers)
	}
	if r := h.do(http.DefaultClient, "GET", "/v1/models", nil); r.status != 401 {
		t.Errorf("unauthenticated /v1/models: got %d, want 401", r.status)
	}
}

func TestChatBadInput(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{})
	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"no model", map[string]any{"messages": []map[string]any{{"role": "user", "content": "hi"}}}, 422, "model"},
		{"no messages", map[string]any{"model": "claude-test"}, 422, "messages"},
		{"bad role", map[string]any{"model": "claude-test", "messages": []map[string]any{{"role": "system", "content": "hi"}}}, 422, "messages[0].role"},
		{"unknown provider", map[string]any{"provider": "nope", "model": "x", "messages": []map[string]any{{"role": "user", "content": "hi"}}}, 422, "provider"},
		{"unknown model", map[string]any{"provider": "openai", "model": "gpt-other", "messages": []map[string]any{{"role": "user", "content": "hi"}}}, 422, "model"},
		{"bad schema", map[string]any{"model": "claude-test", "messages": []map[string]any{{"role": "user", "content": "hi"}}, "tools": []map[string]any{{"name": "t", "input_schema": "x"}}}, 422, "tools[0].input_schema"},
		{"unknown field", map[string]any{"model": "claude-test", "bogus": 1}, 422, ""},
		{"not json", "{", 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.chat(tc.body)
			wantStatus(t, r, tc.status)
			e := r.errBody(t)
			if tc.field != "" && (len(e.Fields) == 0 || e.Fields[0].Field != tc.field) {
				t.Errorf("fields: got %+v, want %s", e.Fields, tc.field)
			}
		})
	}
	if n := len(h.anth.Requests()); n != 0 {
		t.Errorf("bad input reached the upstream %d times", n)
	}
	if r := h.do(http.DefaultClient, "POST", "/v1/chat", map[string]any{"model": "claude-test"}); r.status != 401 {
		t.Errorf("unauthenticated chat: got %d, want 401", r.status)
	}
}

func TestChatUpstreamErrors(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{})
	msgs := []map[string]any{{"role": "user", "content": "hi"}}

	// A key the upstream rejects: 502 that says so, without the upstream's text.
	h.anth.Key = "sk-ant-some-other-key"
	r := h.chat(map[string]any{"model": "claude-test", "messages": msgs})
	wantStatus(t, r, 502)
	if e := r.errBody(t); e.Code != "bad_gateway" || !strings.Contains(e.Message, "upstream anthropic rejected the configured key") {
		t.Errorf("error: got %+v", e)
	}
	h.anth.Key = llmAnthropicKey

	h.oai.Push(llmtest.Reply{Status: 429, RetryAfter: "17"})
	r = h.chat(map[string]any{"provider": "openai", "model": "gpt-test", "messages": msgs})
	wantStatus(t, r, 429)
	if got := r.header.Get("Retry-After"); got != "17" {
		t.Errorf("Retry-After: got %q, want 17", got)
	}

	h.bed.Push(llmtest.Reply{Status: 500})
	r = h.chat(map[string]any{"model": "claude-on-bedrock", "messages": msgs})
	wantStatus(t, r, 502)

	// Failing mid-stream: the SSE stream ends with an error event.
	h.anth.Push(llmtest.Reply{Text: []string{"a", "b"}, Malformed: true})
	r = h.chat(map[string]any{"model": "claude-test", "messages": msgs})
	wantStatus(t, r, 200)
	evs := parseChatSSE(t, r.body)
	if len(evs) != 2 || evs[0].Event != "delta" || evs[1].Event != "error" || !strings.Contains(evs[1].Data, `"code":"bad_gateway"`) {
		t.Errorf("events: got %+v", evs)
	}

	statuses := map[int]int{}
	for _, rec := range h.usage() {
		statuses[rec.Status]++
	}
	if d := cmp.Diff(map[int]int{502: 3, 429: 1}, statuses); d != "" {
		t.Errorf("recorded statuses (-want +got):\n%s", d)
	}
}

func TestChatBudgets(t *testing.T) {
	t.Run("monthly", func(t *testing.T) {
		h := newLLMHarness(t, llm.BudgetConfig{MonthlyUSD: 0.01})
		h.anth.SetDefault(llmtest.Reply{Text: []string{"ok"}, Usage: llm.Usage{InputTokens: 1000, OutputTokens: 1000}}) // $0.018
		msgs := []map[string]any{{"role": "user", "content": "hi"}}
		wantStatus(t, h.chat(map[string]any{"model": "claude-test", "messages": msgs}), 200)
		r := h.chat(map[string]any{"model": "claude-test", "messages": msgs})
		wantStatus(t, r, 402)
		e := r.errBody(t)
		want := "monthly LLM budget of $0.01 reached (spent $0.02 this month); it resets at 2026-04-01 00:00 UTC"
		if e.Code != "payment_required" || e.Message != want {
			t.Errorf("error: got %+v, want message %q", e, want)
		}
		if n := len(h.anth.Requests()); n != 1 {
			t.Errorf("upstream calls: got %d, want 1", n)
		}
		// A new month resets the budget.
		h.clock.Advance(18 * 24 * time.Hour)
		wantStatus(t, h.chat(map[string]any{"model": "claude-test", "messages": msgs}), 200)
	})
	t.Run("rate", func(t *testing.T) {
		h := newLLMHarness(t, llm.BudgetConfig{RequestsPerMinute: 2})
		msgs := []map[string]any{{"role": "user", "content": "hi"}}
		for range 2 {
			wantStatus(t, h.chat(map[string]any{"model": "claude-test", "messages": msgs}), 200)
		}
		h.clock.Advance(15 * time.Second)
		r := h.chat(map[string]any{"model": "claude-test", "messages": msgs})
		wantStatus(t, r, 429)
		if e := r.errBody(t); e.Message != "LLM request rate limit of 2 per minute reached; it resets at 12:01:00 UTC (in 45 s)" {
			t.Errorf("message: got %q", e.Message)
		}
		if got := r.header.Get("Retry-After"); got != "45" {
			t.Errorf("Retry-After: got %q, want 45", got)
		}
		h.clock.Advance(45 * time.Second)
		wantStatus(t, h.chat(map[string]any{"model": "claude-test", "messages": msgs}), 200)
	})
}

func TestChatClientGoneCancelsUpstream(t *testing.T) {
	for _, tc := range []struct {
		srv             func(h *llmHarness) *llmtest.Server
		provider, model string
	}{
		{func(h *llmHarness) *llmtest.Server { return h.anth }, "anthropic", "claude-test"},
		{func(h *llmHarness) *llmtest.Server { return h.oai }, "openai", "gpt-test"},
		{func(h *llmHarness) *llmtest.Server { return h.bed }, "bedrock", "claude-on-bedrock"},
	} {
		t.Run(tc.provider, func(t *testing.T) {
			h := newLLMHarness(t, llm.BudgetConfig{})
			up := tc.srv(h)
			up.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			body, _ := json.Marshal(map[string]any{"provider": tc.provider, "model": tc.model, "messages": []map[string]any{{"role": "user", "content": "hi"}}})
			req, _ := http.NewRequestWithContext(ctx, "POST", h.srv.URL+"/v1/chat", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+h.token)
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("stream ended before the first delta: %v", err)
				}
				if strings.HasPrefix(line, "data: ") && strings.Contains(line, "first") {
					break
				}
			}
			cancel()
			<-up.Cancelled // the upstream saw its request end
		})
	}
}

// TestChatNoKeyLeaks sends traffic that makes upstreams echo keys in their
// error bodies, then greps everything the server produced for the keys.
func TestChatNoKeyLeaks(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{})
	msgs := []map[string]any{{"role": "user", "content": "hi"}}
	var produced bytes.Buffer
	add := func(r resp) {
		produced.Write(r.body)
		fmt.Fprintf(&produced, "%v", r.header)
	}
	add(h.chat(map[string]any{"model": "claude-test", "messages": msgs}))
	add(h.chat(map[string]any{"provider": "openai", "model": "gpt-test", "messages": msgs, "stream": false}))
	add(h.chat(map[string]any{"model": "claude-on-bedrock", "messages": msgs}))
	// The test upstreams quote the key they received in their 401 bodies.
	h.anth.Key, h.oai.Key = "other", "other"
	add(h.chat(map[string]any{"model": "claude-test", "messages": msgs}))
	add(h.chat(map[string]any{"provider": "openai", "model": "gpt-test", "messages": msgs}))
	h.anth.Key = llmAnthropicKey
	h.anth.Push(llmtest.Reply{Text: []string{"a"}, MidError: true})
	add(h.chat(map[string]any{"model": "claude-test", "messages": msgs}))
	if !strings.Contains(h.anth.Requests()[0].Header.Get("x-api-key"), llmAnthropicKey) {
		t.Fatal("the upstream did not get the key: the test proves nothing")
	}

	// Every row of every table, as text.
	var db bytes.Buffer
	rows, err := h.db.SQL().QueryContext(t.Context(), `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	for _, tbl := range tables {
		rs, err := h.db.SQL().QueryContext(t.Context(), `SELECT * FROM "`+tbl+`"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rs.Columns()
		for rs.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rs.Scan(ptrs...)
			fmt.Fprintf(&db, "%s %v\n", tbl, vals)
		}
		rs.Close()
	}
	if !strings.Contains(db.String(), "usage_records") {
		t.Fatal("no usage rows found: the DB grep proves nothing")
	}
	for _, secret := range []string{llmAnthropicKey, llmOpenAIKey, llmtest.BedrockSecretKey, "HTTPAPI-SECRET"} {
		for what, text := range map[string]string{"responses": produced.String(), "logs": h.logs.String(), "database": db.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contain the key %q", what, secret)
			}
		}
	}
	if _, err := io.Discard.Write(nil); err != nil {
		t.Fatal(err)
	}
}

func TestBudgetOverrides(t *testing.T) {
	h := newLLMHarness(t, llm.BudgetConfig{MonthlyUSD: 100, RequestsPerMinute: 50})
	admin := h.createUser("admin@example.com", auth.RoleAdmin)
	_, adminTok, err := h.auth.CreateToken(t.Context(), admin.ID, "admin")
	if err != nil {
		t.Fatal(err)
	}
	asAdmin := []string{"Authorization", "Bearer " + adminTok.Reveal()}
	asUser := []string{"Authorization", "Bearer " + h.token}
	var st llm.BudgetStatus
	r := h.do(http.DefaultClient, "GET", "/v1/budget", nil, asUser...)
	wantStatus(t, r, 200)
	r.data(t, &st)
	if st.MonthlyUSD != 100 || st.RequestsPerMinute != 50 || st.Override || !st.MonthResetsAt.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("default status: got %+v", st)
	}

	// Only admins set budgets; bad values name the field.
	wantStatus(t, h.do(http.DefaultClient, "PUT", "/v1/budgets/"+h.user.ID, map[string]any{"monthly_usd": 1}, asUser...), 403)
	r = h.do(http.DefaultClient, "PUT", "/v1/budgets/"+h.user.ID, map[string]any{"monthly_usd": -1}, asAdmin...)
	wantStatus(t, r, 422)
	if e := r.errBody(t); len(e.Fields) != 1 || e.Fields[0].Field != "monthly_usd" {
		t.Errorf("fields: got %+v", e.Fields)
	}
	wantStatus(t, h.do(http.DefaultClient, "PUT", "/v1/budgets/usr_nobody", map[string]any{"monthly_usd": 1}, asAdmin...), 404)

	r = h.do(http.DefaultClient, "PUT", "/v1/budgets/"+h.user.ID, map[string]any{"monthly_usd": 0.01}, asAdmin...)
	wantStatus(t, r, 200)
	h.anth.SetDefault(llmtest.Reply{Text: []string{"ok"}, Usage: llm.Usage{InputTokens: 1000, OutputTokens: 1000}}) // $0.018
	msgs := []map[string]any{{"role": "user", "content": "hi"}}
	wantStatus(t, h.chat(map[string]any{"model": "claude-test", "messages": msgs}), 200)
	r = h.chat(map[string]any{"model": "claude-test", "messages": msgs})
	wantStatus(t, r, 402)
	if e := r.errBody(t); !strings.Contains(e.Message, "monthly LLM budget of $0.01 reached") {
		t.Errorf("402 message: got %q", e.Message)
	}
	r = h.do(http.DefaultClient, "GET", "/v1/budget", nil, asUser...)
	r.data(t, &st)
	if !st.Override || st.MonthlyUSD != 0.01 || st.RequestsPerMinute != 0 || st.SpentUSD != 0.018 {
		t.Errorf("override status: got %+v", st)
	}

	// Back to the default: the next call passes.
	wantStatus(t, h.do(http.DefaultClient, "DELETE", "/v1/budgets/"+h.user.ID, nil, asAdmin...), 200)
	wantStatus(t, h.chat(map[string]any{"model": "claude-test", "messages": msgs}), 200)
}
