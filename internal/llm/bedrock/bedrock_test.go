package bedrock_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/bedrock"
	"github.com/techbossai/techboss/internal/llm/llmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const model = "anthropic.claude-test-v1:0"

func newProvider(srv *llmtest.Server, access, secret string) *bedrock.Provider {
	zero := 0
	awsCfg := aws.Config{Region: llmtest.BedrockRegion, Credentials: credentials.NewStaticCredentialsProvider(access, secret, "")}
	return bedrock.New(llm.ProviderConfig{Name: "bedrock", Type: llm.TypeBedrock, BaseURL: srv.URL, MaxRetries: &zero}, awsCfg)
}

func TestConverseStreamTextToolsUsage(t *testing.T) {
	srv := llmtest.NewBedrock(t)
	srv.Push(llmtest.Reply{
		Text:      []string{"It is ", "sunny."},
		ToolCalls: []llm.ToolCall{{ID: "tooluse_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon"}`)}},
		Usage:     llm.Usage{InputTokens: 20, OutputTokens: 8, CacheReadTokens: 4, CacheWriteTokens: 2},
	})
	temp := 0.25
	req := &llm.Request{
		Model: model, System: "be brief", Temperature: &temp, MaxTokens: 50,
		Tools: []llm.Tool{{Name: "get_weather", Description: "weather", InputSchema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)}},
		Messages: []llm.Message{
			{Role: llm.RoleUser, Content: "weather?"},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "tooluse_0", Name: "get_weather", Input: json.RawMessage(`{"city":"Paris"}`)}}},
			{Role: llm.RoleUser, ToolResults: []llm.ToolResult{{ToolCallID: "tooluse_0", Content: "sunny"}}},
		},
	}
	s, err := newProvider(srv, llmtest.BedrockAccessKey, llmtest.BedrockSecretKey).Stream(t.Context(), req)
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
		{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: "tooluse_1", Name: "get_weather", Input: json.RawMessage(`{"city":"Lyon"}`)}},
		{Type: llm.EventUsage, Usage: llm.Usage{InputTokens: 20, OutputTokens: 8, CacheReadTokens: 4, CacheWriteTokens: 2}},
		{Type: llm.EventDone, StopReason: llm.StopToolUse},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	last := srv.Last()
	if !strings.HasPrefix(last.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential="+llmtest.BedrockAccessKey+"/") {
		t.Errorf("authorization: got %q", last.Header.Get("Authorization"))
	}
	if last.Path != "/model/"+model+"/converse-stream" {
		t.Errorf("path: got %s", last.Path)
	}
	raw := string(last.Body)
	for _, w := range []string{`"system":[{"text":"be brief"}]`, `"maxTokens":50`, `"temperature":0.25`, `"toolUseId":"tooluse_0"`,
		`"input":{"city":"Paris"}`, `"toolResult"`, `"toolSpec"`, `"name":"get_weather"`} {
		if !strings.Contains(raw, w) {
			t.Errorf("request body lacks %s:\n%s", w, raw)
		}
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name       string
		reply      llmtest.Reply
		secret     string
		access     string
		kind       errs.Kind
		msg        string
		retryAfter int
		midStream  bool
	}{
		{name: "bad signature", secret: "wrong-secret", kind: errs.BadGateway, msg: "upstream bedrock rejected the configured key"},
		{name: "unknown key", access: "AKIDUNKNOWN", kind: errs.BadGateway, msg: "upstream bedrock rejected the configured key"},
		{name: "throttled", reply: llmtest.Reply{Status: 429, RetryAfter: "9"}, kind: errs.TooMany, msg: "rate limiting", retryAfter: 9},
		{name: "server error", reply: llmtest.Reply{Status: 500}, kind: errs.BadGateway, msg: "failed (HTTP 500)"},
		{name: "malformed stream", reply: llmtest.Reply{Text: []string{"a", "b"}, Malformed: true}, kind: errs.BadGateway, msg: "malformed", midStream: true},
		{name: "exception event", reply: llmtest.Reply{Text: []string{"a", "b"}, MidError: true}, kind: errs.TooMany, msg: "rate limiting", midStream: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := llmtest.NewBedrock(t)
			srv.Push(tc.reply)
			access, secret := llmtest.BedrockAccessKey, llmtest.BedrockSecretKey
			if tc.secret != "" {
				secret = tc.secret
			}
			if tc.access != "" {
				access = tc.access
			}
			s, err := newProvider(srv, access, secret).Stream(t.Context(), &llm.Request{Model: model, Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
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
			if strings.Contains(e.Message, secret) || strings.Contains(e.Message, access) {
				t.Errorf("public message leaks a credential: %q", e.Message)
			}
		})
	}
}

func TestCancelReachesUpstream(t *testing.T) {
	srv := llmtest.NewBedrock(t)
	srv.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithCancel(t.Context())
	s, err := newProvider(srv, llmtest.BedrockAccessKey, llmtest.BedrockSecretKey).Stream(ctx, &llm.Request{Model: model, Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
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
}

func TestTimeout(t *testing.T) {
	srv := llmtest.NewBedrock(t)
	srv.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	s, err := newProvider(srv, llmtest.BedrockAccessKey, llmtest.BedrockSecretKey).Stream(ctx, &llm.Request{Model: model, Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"}}})
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
