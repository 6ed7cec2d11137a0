package llm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	inline := `{"providers":[
		{"name":"claude","type":"anthropic","models":[{"id":"claude-sonnet-4-5","input_per_mtok":3,"output_per_mtok":15}]},
		{"name":"ollama","type":"openai","base_url":"http://127.0.0.1:11434/v1","any_model":true},
		{"name":"oai","type":"openai","api":"responses","api_key_env":"MY_OPENAI_KEY","models":[{"id":"gpt-x"}]},
		{"name":"aws","type":"bedrock","region":"eu-west-1","models":[{"id":"claude-on-aws","upstream_id":"eu.anthropic.claude-x-v1:0"}]}],
		"default_provider":"ollama","budget":{"monthly_usd":25,"requests_per_minute":30}}`
	cfg, err := llm.LoadConfig(env(map[string]string{"TECHBOSS_LLM_PROVIDERS": inline, "ANTHROPIC_API_KEY": "sk-ant-x", "MY_OPENAI_KEY": "sk-o", "OPENAI_API_KEY": "sk-unused"}))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, p := range cfg.Providers {
		keys[p.Name] = p.APIKey.Reveal()
	}
	if d := cmp.Diff(map[string]string{"claude": "sk-ant-x", "ollama": "", "oai": "sk-o", "aws": ""}, keys); d != "" {
		t.Errorf("keys (-want +got):\n%s", d)
	}
	if cfg.Budget != (llm.BudgetConfig{MonthlyUSD: 25, RequestsPerMinute: 30}) || cfg.DefaultProvider != "ollama" {
		t.Errorf("config: got %+v", cfg)
	}

	// The same from a file.
	path := filepath.Join(t.TempDir(), "llm.json")
	os.WriteFile(path, []byte(inline), 0o600)
	if _, err := llm.LoadConfig(env(map[string]string{"TECHBOSS_LLM_CONFIG": path})); err != nil {
		t.Fatal(err)
	}

	// Nothing configured: providers follow the keys present.
	cfg, err = llm.LoadConfig(env(map[string]string{"OPENAI_API_KEY": "sk-o"}))
	if err != nil || len(cfg.Providers) != 1 || cfg.Providers[0].Name != "openai" || !cfg.Providers[0].AnyModel || cfg.DefaultProvider != "openai" {
		t.Errorf("default config: got %+v, %v", cfg, err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	cases := map[string]string{
		`{"providers":[{"name":"a","type":"gemini","any_model":true}]}`:                                               `type "gemini"`,
		`{"providers":[{"name":"a","type":"openai","any_model":true},{"name":"a","type":"openai","any_model":true}]}`: "duplicate provider",
		`{"providers":[{"name":"a","type":"openai"}]}`:                                                                "list models or set any_model",
		`{"providers":[{"name":"a","type":"openai","any_model":true,"api_key":"sk-inline"}]}`:                         `unknown field "api_key"`,
		`{"providers":[{"name":"a","type":"openai","api":"assistants","any_model":true}]}`:                            `api "assistants"`,
		`{"providers":[],"default_provider":"x"}`:                                                                     `default_provider "x"`,
		`{"providers":[{"name":"a b","type":"openai","any_model":true}]}`:                                             "without spaces",
		`{"providers":[{"name":"a","type":"openai","models":[{"id":"m"},{"id":"m"}]}]}`:                               "duplicate model",
		`not json`: "TECHBOSS_LLM_PROVIDERS",
	}
	for in, want := range cases {
		_, err := llm.LoadConfig(env(map[string]string{"TECHBOSS_LLM_PROVIDERS": in}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", in, err, want)
		}
	}
	if _, err := llm.LoadConfig(env(map[string]string{"TECHBOSS_GATEWAY_UPSTREAM": "vertex"})); err == nil || !strings.Contains(err.Error(), "TECHBOSS_GATEWAY_UPSTREAM") {
		t.Errorf("bad gateway upstream: got %v", err)
	}
	if cfg, err := llm.LoadConfig(env(map[string]string{"TECHBOSS_GATEWAY_UPSTREAM": "bedrock", "OPENAI_API_KEY": "sk-o"})); err != nil ||
		cfg.Gateway.AnthropicUpstream != "bedrock" || cfg.Gateway.OpenAIKey.Reveal() != "sk-o" {
		t.Errorf("gateway config: got %+v, %v", cfg.Gateway, err)
	}
	if _, err := llm.LoadConfig(env(map[string]string{"TECHBOSS_LLM_CONFIG": "/nonexistent/llm.json"})); err == nil || !strings.Contains(err.Error(), "TECHBOSS_LLM_CONFIG") {
		t.Errorf("missing file: got %v", err)
	}
}

func TestSecretRedacts(t *testing.T) {
	const key = "sk-very-secret"
	pc := llm.ProviderConfig{Name: "p", APIKey: key}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "provider", pc, "key", pc.APIKey)
	j, _ := json.Marshal(pc)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", pc, pc, pc, pc.APIKey), logs.String(), string(j)} {
		if strings.Contains(s, key) {
			t.Errorf("key leaked: %s", s)
		}
	}
	if pc.APIKey.Reveal() != key {
		t.Error("Reveal lost the key")
	}
}

type stubProvider struct{ name string }

func (stubProvider) Stream(context.Context, *llm.Request) (llm.Stream, error) { return nil, nil }

func registry(t *testing.T) *llm.Registry {
	t.Helper()
	cfg := llm.Config{
		DefaultProvider: "compat",
		Prices:          map[string]llm.Price{"claude-sonnet-4": {InputPerMTok: 3}, "claude-sonnet-4-5": {InputPerMTok: 4}},
		Providers: []llm.ProviderConfig{
			{Name: "claude", Type: llm.TypeAnthropic, Models: []llm.ModelConfig{{ID: "sonnet", UpstreamID: "claude-sonnet-4-5-20250929", Price: llm.Price{InputPerMTok: 3, OutputPerMTok: 15}}}},
			{Name: "aws", Type: llm.TypeBedrock, Models: []llm.ModelConfig{{ID: "sonnet"}, {ID: "haiku"}}},
			{Name: "compat", Type: llm.TypeOpenAI, AnyModel: true},
		},
	}
	r, err := llm.NewRegistry(t.Context(), cfg, map[string]llm.Factory{
		llm.TypeAnthropic: func(_ context.Context, pc llm.ProviderConfig) (llm.Provider, error) {
			return stubProvider{pc.Name}, nil
		},
		llm.TypeBedrock: func(_ context.Context, pc llm.ProviderConfig) (llm.Provider, error) {
			return stubProvider{pc.Name}, nil
		},
		llm.TypeOpenAI: func(_ context.Context, pc llm.ProviderConfig) (llm.Provider, error) {
			return stubProvider{pc.Name}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistryResolve(t *testing.T) {
	r := registry(t)
	cases := []struct {
		provider, model      string
		wantProvider, wantUp string
		wantErrField         string
	}{
		{"", "sonnet", "claude", "claude-sonnet-4-5-20250929", ""}, // first provider listing it
		{"aws", "sonnet", "aws", "sonnet", ""},
		{"", "haiku", "aws", "haiku", ""},
		{"", "llama3", "compat", "llama3", ""}, // default provider takes any model
		{"claude", "haiku", "", "", "model"},
		{"nope", "sonnet", "", "", "provider"},
		{"", "", "", "", "model"},
	}
	for _, tc := range cases {
		rt, err := r.Resolve(tc.provider, tc.model)
		if tc.wantErrField != "" {
			e, ok := errs.Public(err)
			if !ok || e.Kind != errs.Invalid || e.Fields[0].Field != tc.wantErrField {
				t.Errorf("Resolve(%q, %q): got %v, want an error on %s", tc.provider, tc.model, err, tc.wantErrField)
			}
			continue
		}
		if err != nil || rt.Provider != tc.wantProvider || rt.UpstreamModel != tc.wantUp || rt.P == nil {
			t.Errorf("Resolve(%q, %q): got %+v, %v; want %s/%s", tc.provider, tc.model, rt, err, tc.wantProvider, tc.wantUp)
		}
	}
	models, provs := r.Models()
	if len(models) != 3 || len(provs) != 3 || !provs[2].Default || models[0].Price == nil || models[1].Price != nil {
		t.Errorf("Models: got %+v %+v", models, provs)
	}
}

func TestPrices(t *testing.T) {
	r := registry(t)
	for model, want := range map[string]float64{
		"claude-sonnet-4-5-20250929": 4, // longest prefix
		"claude-sonnet-4-20250514":   3,
		"sonnet":                     3, // from the provider's model list
		"unknown":                    0,
	} {
		p, _ := r.PriceOf(model)
		if p.InputPerMTok != want {
			t.Errorf("PriceOf(%s): got %v, want %v", model, p.InputPerMTok, want)
		}
	}
	// A fallback prices what nothing else does, e.g. through a chat route.
	fb, err := llm.NewRegistry(t.Context(), llm.Config{Providers: []llm.ProviderConfig{{Name: "x", Type: llm.TypeOpenAI, AnyModel: true}},
		FallbackPrice: func(m string) (llm.Price, bool) { return llm.Price{InputPerMTok: 7}, m == "claude-x" }},
		map[string]llm.Factory{llm.TypeOpenAI: func(context.Context, llm.ProviderConfig) (llm.Provider, error) { return stubProvider{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if rt, _ := fb.Resolve("x", "claude-x"); !rt.Priced || rt.Price.InputPerMTok != 7 {
		t.Errorf("fallback price: got %+v", rt)
	}
	u := llm.Usage{InputTokens: 1_000_000, OutputTokens: 2_000_000, CacheReadTokens: 1_000_000, CacheWriteTokens: 1_000_000}
	if got := (llm.Price{InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75}).Cost(u); got != 3+30+0.3+3.75 {
		t.Errorf("Cost: got %v", got)
	}
}

type ledger map[string]float64

func (l ledger) SpentUSD(_ context.Context, user string, since time.Time) (float64, error) {
	return l[user+"@"+since.Format("2006-01")], nil
}

type limits map[string]llm.BudgetConfig

func (l limits) UserLimits(_ context.Context, user string) (llm.BudgetConfig, bool, error) {
	b, ok := l[user]
	return b, ok, nil
}

func TestBudgets(t *testing.T) {
	now := time.Date(2026, 2, 28, 23, 59, 30, 0, time.UTC)
	spent := ledger{"ann@2026-02": 10, "bob@2026-02": 0.5}
	b := llm.NewBudgets(llm.BudgetConfig{MonthlyUSD: 5, RequestsPerMinute: 2}, spent, limits{"vip": {}}, func() time.Time { return now })
	ctx := t.Context()

	err := b.Check(ctx, "ann")
	e, ok := errs.Public(err)
	if !ok || e.Kind != errs.PaymentRequired || e.Message != "monthly LLM budget of $5.00 reached (spent $10.00 this month); it resets at 2026-03-01 00:00 UTC" {
		t.Fatalf("over budget: got %v", err)
	}
	if e.RetryAfter != 31 {
		t.Errorf("RetryAfter: got %d", e.RetryAfter)
	}
	for range 2 {
		if err := b.Check(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
	}
	e, ok = errs.Public(b.Check(ctx, "bob"))
	if !ok || e.Kind != errs.TooMany || e.RetryAfter != 30 || !strings.Contains(e.Message, "rate limit of 2 per minute reached; it resets at 00:00:00 UTC (in 30 s)") {
		t.Fatalf("rate: got %+v", e)
	}
	for range 5 { // no limits for this user
		if err := b.Check(ctx, "vip"); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(30 * time.Second) // a new month and a new minute
	if err := b.Check(ctx, "bob"); err != nil {
		t.Errorf("after the window: %v", err)
	}
	if err := b.Check(ctx, "ann"); err != nil {
		t.Errorf("after the month: %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]int{"": 0, "7": 7, "-3": 0, "soon": 0, "Thu, 01 Jan 2026 00:00:20 GMT": 20, "Wed, 31 Dec 2025 23:00:00 GMT": 0} {
		if got := llm.ParseRetryAfter(in, now); got != want {
			t.Errorf("ParseRetryAfter(%q): got %d, want %d", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	hot, cold := 3.0, 0.5
	cases := []struct {
		req   llm.Request
		field string
	}{
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}, Temperature: &cold}, ""},
		{llm.Request{Messages: []llm.Message{{Role: "user", Content: "hi"}}}, "model"},
		{llm.Request{Model: "m"}, "messages"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "tool", Content: "hi"}}}, "messages[0].role"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user"}}}, "messages[0].content"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", ToolCalls: []llm.ToolCall{{ID: "1", Name: "x"}}}}}, "messages[0].tool_calls"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "assistant", ToolCalls: []llm.ToolCall{{ID: "1", Name: "x", Input: json.RawMessage(`[1]`)}}}}}, "messages[0].tool_calls[0].input"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", ToolResults: []llm.ToolResult{{Content: "x"}}}}}, "messages[0].tool_results[0].tool_call_id"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}, Tools: []llm.Tool{{Name: ""}}}, "tools[0].name"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}, Temperature: &hot}, "temperature"},
		{llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}, MaxTokens: -1}, "max_tokens"},
	}
	for i, tc := range cases {
		err := tc.req.Validate()
		if tc.field == "" {
			if err != nil {
				t.Errorf("case %d: got %v, want valid", i, err)
			}
			continue
		}
		e, ok := errs.Public(err)
		if !ok || e.Kind != errs.Invalid || e.Fields[0].Field != tc.field {
			t.Errorf("case %d: got %v, want an error on %s", i, err, tc.field)
		}
	}
}

// FuzzRequest feeds arbitrary /v1/chat bodies through decoding and
// validation: no panic, and a valid request converts to every vendor's
// tool schema without error.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"1","name":"x","input":{"a":1}}]}],"tools":[{"name":"x","input_schema":{"type":"object"}}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","tool_results":[{"tool_call_id":"1","content":""}]}],"tools":[{"name":"x","input_schema":null}]}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":"\u0000"}],"temperature":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in struct {
			Model       string        `json:"model"`
			Messages    []llm.Message `json:"messages"`
			Tools       []llm.Tool    `json:"tools"`
			Temperature *float64      `json:"temperature"`
			MaxTokens   int           `json:"max_tokens"`
		}
		if json.Unmarshal(b, &in) != nil {
			return
		}
		req := llm.Request{Model: in.Model, Messages: in.Messages, Tools: in.Tools, Temperature: in.Temperature, MaxTokens: in.MaxTokens}
		if err := req.Validate(); err != nil {
			if _, ok := errs.Public(err); !ok {
				t.Fatalf("non-public validation error %v", err)
			}
			return
		}
		for _, tool := range req.Tools {
			if tool.SchemaObject()["type"] == nil {
				t.Fatal("schema without type")
			}
		}
		for _, m := range req.Messages {
			for _, tc := range m.ToolCalls {
				if !json.Valid(tc.InputObject()) {
					t.Fatalf("invalid tool input %q", tc.InputObject())
				}
			}
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "120", "-1", "Thu, 01 Jan 2026 00:00:20 GMT", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n := llm.ParseRetryAfter(s, time.Unix(0, 0)); n < 0 {
			t.Fatalf("negative %d", n)
		}
	})
}

// down is a store that cannot be reached (as the store reports it).
type down struct{}

func (down) SpentUSD(context.Context, string, time.Time) (float64, error) {
	return 0, errs.E(errs.Unavailable, "the database is unreachable; retry shortly")
}

func (down) UserLimits(context.Context, string) (llm.BudgetConfig, bool, error) {
	return llm.BudgetConfig{}, false, errs.E(errs.Unavailable, "the database is unreachable; retry shortly")
}

// switchable is a store that is up or down.
type switchable struct {
	up     bool
	ledger ledger
	limits limits
}

func (s *switchable) SpentUSD(ctx context.Context, user string, since time.Time) (float64, error) {
	if !s.up {
		return down{}.SpentUSD(ctx, user, since)
	}
	return s.ledger.SpentUSD(ctx, user, since)
}

func (s *switchable) UserLimits(ctx context.Context, user string) (llm.BudgetConfig, bool, error) {
	if !s.up {
		return down{}.UserLimits(ctx, user)
	}
	return s.limits.UserLimits(ctx, user)
}

// TestBudgetsThroughOutage: while the store is unreachable, Check goes by
// what it last read (agent runs go on through a database outage): a user
// over budget stays refused, one under it is admitted, one with a raised
// limit keeps it; other store errors still fail.
func TestBudgetsThroughOutage(t *testing.T) {
	now := time.Date(2026, 2, 10, 12, 0, 0, 0, time.UTC)
	st := &switchable{up: true, ledger: ledger{"ann@2026-02": 10, "bob@2026-02": 0.5, "vip@2026-02": 50}, limits: limits{"vip": {MonthlyUSD: 100}}}
	b := llm.NewBudgets(llm.BudgetConfig{MonthlyUSD: 5}, st, st, func() time.Time { return now })
	ctx := t.Context()
	check := func() map[string]error {
		return map[string]error{"ann": b.Check(ctx, "ann"), "bob": b.Check(ctx, "bob"), "vip": b.Check(ctx, "vip"), "new": b.Check(ctx, "new")}
	}
	before := check()
	st.up = false
	during := check()
	for _, u := range []string{"bob", "vip", "new"} {
		if before[u] != nil || during[u] != nil {
			t.Errorf("%s: before the outage %v, during it %v; want admitted", u, before[u], during[u])
		}
	}
	if errs.KindOf(during["ann"]) != errs.PaymentRequired {
		t.Errorf("ann (over budget) during the outage: %v, want payment required", during["ann"])
	}
	// A store that answers wrongly is not an outage.
	bad := llm.NewBudgets(llm.BudgetConfig{MonthlyUSD: 5}, ledgerErr{}, nil, nil)
	if err := bad.Check(ctx, "bob"); err == nil {
		t.Error("a failing ledger admitted the call")
	}
}

type ledgerErr struct{}

func (ledgerErr) SpentUSD(context.Context, string, time.Time) (float64, error) {
	return 0, errs.E(errs.Internal, "broken")
}
