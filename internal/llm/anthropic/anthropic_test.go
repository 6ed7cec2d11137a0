package anthropic_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/anthropic"
	"github.com/techbossai/techboss/internal/llm/llmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "sk-ant-test-key-0123456789"

func newProvider(t *testing.T, srv *llmtest.Server, k string) *anthropic.Provider {
	zero := 0
	return anthropic.New(llm.ProviderConfig{Name: "anthropic", Type: llm.TypeAnthropic, BaseURL: srv.URL,
		APIKey: llm.Secret(k), MaxRetries: &zero}, nil)
}

func request() *llm.Request {
	temp := 0.2
	return &llm.Request{
		Model:       "claude-test",
		System:      "be brief",
		Temperature: &temp,
		MaxTokens:   100,
		Tools: []llm.Tool{{Name: "get_weather", Description: "weather for a city",
			InputSchema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}},
		Messages: []llm.Message{
			{Role: llm.RoleUser, Content: "weather in Paris?"},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "toolu_0", Name: "get_weather", Input: json.RawMessage(`{"city":"Paris"}`)}}},
			{Role: llm.RoleUser, ToolResults: []llm.ToolResult{{ToolCallID: "toolu_0", Content: "sunny"}}},
		},
	}
}

func TestStreamTextAndTools(t *testing.T) {
	srv := llmtest.NewAnthropic(t, key)
	srv.Push(llmtest.Reply{
		Text:      []string{"It is ", "sunny."},
		ToolCalls: []llm.ToolCall{{ID: "toolu_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon","days":[1,2]}`)}},
		Usage:     llm.Usage{InputTokens: 40, OutputTokens: 17, CacheReadTokens: 5, CacheWriteTokens: 3},
	})
	p := newProvider(t, srv, key)
	s, err := p.Stream(t.Context(), request())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []llm.Event
	for s.Next() {
		got = append(got, s.Event())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	want := []llm.Event{
		{Type: llm.EventDelta, Text: "It is "},
		{Type: llm.EventDelta, Text: "sunny."},
		{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: "toolu_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon","days":[1,2]}`)}},
		{Type: llm.EventUsage, Usage: llm.Usage{InputTokens: 40, OutputTokens: 17, CacheReadTokens: 5, CacheWriteTokens: 3}},
		{Type: llm.EventDone, StopReason: llm.StopToolUse},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}

	// What went over the wire is the Messages API shape.
	body := srv.Last().JSON()
	if body["stream"] != true || body["model"] != "claude-test" || body["max_tokens"] != 100.0 || body["temperature"] != 0.2 {
		t.Errorf("request body: got %v", body)
	}
	if sys, _ := json.Marshal(body["system"]); !strings.Contains(string(sys), "be brief") {
		t.Errorf("system: got %s", sys)
	}
	tools, _ := json.Marshal(body["tools"])
	if !strings.Contains(string(tools), `"input_schema":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}`) {
		t.Errorf("tools: got %s", tools)
	}
	var wantMsgs any
	json.Unmarshal([]byte(`[{"content":[{"text":"weather in Paris?","type":"text"}],"role":"user"},
		{"content":[{"id":"toolu_0","input":{"city":"Paris"},"name":"get_weather","type":"tool_use"}],"role":"assistant"},
		{"content":[{"content":[{"text":"sunny","type":"text"}],"is_error":false,"tool_use_id":"toolu_0","type":"tool_result"}],"role":"user"}]`), &wantMsgs)
	if d := cmp.Diff(wantMsgs, body["messages"]); d != "" {
		t.Errorf("messages (-want +got):\n%s", d)
	}
}

func TestComplete(t *testing.T) {
	srv := llmtest.NewAnthropic(t, key)
	resp, err := llm.Complete(t.Context(), newProvider(t, srv, key), &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := &llm.Response{Text: "Hello, world", Usage: llm.Usage{InputTokens: 12, OutputTokens: 5}, StopReason: llm.StopEnd}
	if d := cmp.Diff(want, resp); d != "" {
		t.Errorf("response (-want +got):\n%s", d)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name       string
		reply      llmtest.Reply
		key        string
		kind       errs.Kind
		msg        string
		retryAfter int
		midStream  bool
	}{
		{name: "bad key", key: "sk-ant-wrong-key", kind: errs.BadGateway, msg: "upstream anthropic rejected the configured key"},
		{name: "rate limited", reply: llmtest.Reply{Status: 429, RetryAfter: "7"}, kind: errs.TooMany, msg: "rate limiting", retryAfter: 7},
		{name: "server error", reply: llmtest.Reply{Status: 500}, kind: errs.BadGateway, msg: "failed (HTTP 500)"},
		{name: "overloaded", reply: llmtest.Reply{Status: 529}, kind: errs.Unavailable, msg: "overloaded"},
		{name: "malformed stream", reply: llmtest.Reply{Text: []string{"a", "b"}, Malformed: true}, kind: errs.BadGateway, msg: "malformed", midStream: true},
		{name: "error event", reply: llmtest.Reply{Text: []string{"a", "b"}, MidError: true}, kind: errs.Unavailable, msg: "overloaded", midStream: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := llmtest.NewAnthropic(t, key)
			srv.Push(tc.reply)
			k := key
			if tc.key != "" {
				k = tc.key
			}
			s, err := newProvider(t, srv, k).Stream(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
			if tc.midStream {
				if err != nil {
					t.Fatalf("got early error %v, want it mid-stream", err)
				}
				n := 0
				for s.Next() {
					n++
				}
				s.Close()
				if n != 1 {
					t.Errorf("got %d events before the failure, want 1", n)
				}
				err = s.Err()
			}
			e, ok := errs.Public(err)
			if !ok {
				t.Fatalf("got %v, want a public error", err)
			}
			if e.Kind != tc.kind || !strings.Contains(e.Message, tc.msg) || e.RetryAfter != tc.retryAfter {
				t.Errorf("got kind %v %q retry %d, want %v containing %q retry %d", e.Kind, e.Message, e.RetryAfter, tc.kind, tc.msg, tc.retryAfter)
			}
			if strings.Contains(e.Message, "sk-ant") {
				t.Errorf("public message leaks a key: %q", e.Message)
			}
		})
	}
}

func TestCancelReachesUpstream(t *testing.T) {
	srv := llmtest.NewAnthropic(t, key)
	srv.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithCancel(t.Context())
	s, err := newProvider(t, srv, key).Stream(ctx, &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Next() || s.Event().Text != "first" {
		t.Fatalf("got %+v, want the first delta", s.Event())
	}
	cancel()
	<-srv.Cancelled // the upstream saw its request context end
	for s.Next() {
	}
	if s.Err() == nil {
		t.Error("got no error after cancel")
	}
}

func TestTimeout(t *testing.T) {
	srv := llmtest.NewAnthropic(t, key)
	srv.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	s, err := newProvider(t, srv, key).Stream(ctx, &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for s.Next() {
	}
	e, ok := errs.Public(s.Err())
	if !ok || e.Kind != errs.Unavailable || !strings.Contains(e.Message, "timed out") {
		t.Errorf("got %v, want an unavailable error saying the upstream timed out", s.Err())
	}
	<-srv.Cancelled
}
