package openai_test

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
	"github.com/techbossai/techboss/internal/llm/llmtest"
	"github.com/techbossai/techboss/internal/llm/openai"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "sk-proj-test-key-0123456789"

var apis = []string{"chat", "responses"}

func newProvider(srv *llmtest.Server, api, k string) *openai.Provider {
	zero := 0
	return openai.New(llm.ProviderConfig{Name: "openai", Type: llm.TypeOpenAI, API: api, BaseURL: srv.URL + "/v1/",
		APIKey: llm.Secret(k), MaxRetries: &zero}, nil)
}

func request() *llm.Request {
	temp := 0.5
	return &llm.Request{
		Model:       "gpt-test",
		System:      "be brief",
		Temperature: &temp,
		MaxTokens:   64,
		Tools: []llm.Tool{{Name: "get_weather", Description: "weather for a city",
			InputSchema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)}},
		Messages: []llm.Message{
			{Role: llm.RoleUser, Content: "weather in Paris?"},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call_0", Name: "get_weather", Input: json.RawMessage(`{"city":"Paris"}`)}}},
			{Role: llm.RoleUser, ToolResults: []llm.ToolResult{{ToolCallID: "call_0", Content: "sunny"}}},
		},
	}
}

func TestStreamTextToolsUsage(t *testing.T) {
	for _, api := range apis {
		t.Run(api, func(t *testing.T) {
			srv := llmtest.NewOpenAI(t, key)
			srv.Push(llmtest.Reply{
				Text:      []string{"It is ", "sunny."},
				ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon"}`)}, {ID: "call_2", Name: "get_time", Input: json.RawMessage(`{"tz":"CET"}`)}},
				Usage:     llm.Usage{InputTokens: 30, OutputTokens: 9, CacheReadTokens: 64},
			})
			s, err := newProvider(srv, api, key).Stream(t.Context(), request())
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
				{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: "call_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon"}`)}},
				{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: "call_2", Name: "get_time", Input: json.RawMessage(`{"tz":"CET"}`)}},
				{Type: llm.EventUsage, Usage: llm.Usage{InputTokens: 30, OutputTokens: 9, CacheReadTokens: 64}},
				{Type: llm.EventDone, StopReason: llm.StopToolUse},
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			last := srv.Last()
			if got := last.Header.Get("Authorization"); got != "Bearer "+key {
				t.Errorf("authorization: got %q", got)
			}
			body := last.JSON()
			if body["stream"] != true || body["model"] != "gpt-test" || body["temperature"] != 0.5 {
				t.Errorf("body: got %v", body)
			}
			raw := string(last.Body)
			var wants []string
			if api == "chat" {
				if last.Path != "/v1/chat/completions" {
					t.Errorf("path: got %s", last.Path)
				}
				wants = []string{`"stream_options":{"include_usage":true}`, `"max_completion_tokens":64`,
					`{"content":"be brief","role":"system"}`, `"tool_call_id":"call_0"`, `"arguments":"{\"city\":\"Paris\"}"`,
					`"type":"function"`, `"name":"get_weather"`}
			} else {
				if last.Path != "/v1/responses" {
					t.Errorf("path: got %s", last.Path)
				}
				wants = []string{`"instructions":"be brief"`, `"max_output_tokens":64`, `"type":"function_call_output"`,
					`"call_id":"call_0"`, `"type":"function_call"`, `"name":"get_weather"`}
			}
			for _, w := range wants {
				if !strings.Contains(raw, w) {
					t.Errorf("request body lacks %s:\n%s", w, raw)
				}
			}
		})
	}
}

func TestStopReasons(t *testing.T) {
	for _, api := range apis {
		t.Run(api, func(t *testing.T) {
			srv := llmtest.NewOpenAI(t, key)
			srv.Push(llmtest.Reply{Text: []string{"ab"}, Stop: llm.StopMaxTokens, Usage: llm.Usage{InputTokens: 1, OutputTokens: 2}})
			resp, err := llm.Complete(t.Context(), newProvider(srv, api, key), &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
			if err != nil {
				t.Fatal(err)
			}
			want := &llm.Response{Text: "ab", Usage: llm.Usage{InputTokens: 1, OutputTokens: 2}, StopReason: llm.StopMaxTokens}
			if d := cmp.Diff(want, resp); d != "" {
				t.Errorf("response (-want +got):\n%s", d)
			}
		})
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
		{name: "bad key", key: "sk-proj-wrong", kind: errs.BadGateway, msg: "upstream openai rejected the configured key"},
		{name: "rate limited", reply: llmtest.Reply{Status: 429, RetryAfter: "3"}, kind: errs.TooMany, msg: "rate limiting", retryAfter: 3},
		{name: "server error", reply: llmtest.Reply{Status: 500}, kind: errs.BadGateway, msg: "failed (HTTP 500)"},
		{name: "malformed stream", reply: llmtest.Reply{Text: []string{"a", "b"}, Malformed: true}, kind: errs.BadGateway, msg: "malformed", midStream: true},
		{name: "error event", reply: llmtest.Reply{Text: []string{"a", "b"}, MidError: true}, kind: errs.BadGateway, msg: "mid-stream", midStream: true},
	}
	for _, api := range apis {
		for _, tc := range cases {
			t.Run(api+"/"+tc.name, func(t *testing.T) {
				srv := llmtest.NewOpenAI(t, key)
				srv.Push(tc.reply)
				k := key
				if tc.key != "" {
					k = tc.key
				}
				s, err := newProvider(srv, api, k).Stream(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
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
				if strings.Contains(e.Message, "sk-proj") {
					t.Errorf("public message leaks a key: %q", e.Message)
				}
			})
		}
	}
}

func TestCancelReachesUpstream(t *testing.T) {
	for _, api := range apis {
		t.Run(api, func(t *testing.T) {
			srv := llmtest.NewOpenAI(t, key)
			srv.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
			ctx, cancel := context.WithCancel(t.Context())
			s, err := newProvider(srv, api, key).Stream(ctx, &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !s.Next() || s.Event().Text != "first" {
				t.Fatalf("got %+v, want the first delta", s.Event())
			}
			cancel()
			<-srv.Cancelled
			for s.Next() {
			}
			if s.Err() == nil {
				t.Error("got no error after cancel")
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	srv := llmtest.NewOpenAI(t, key)
	srv.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	s, err := newProvider(srv, "chat", key).Stream(ctx, &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
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
