package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/llm/llmtest"
)

func setupBedrock(t *testing.T) (*llmtest.Server, sdk.Client, chanRecorder) {
	t.Helper()
	up := llmtest.NewBedrock(t)
	awsCfg := aws.Config{Region: llmtest.BedrockRegion, RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(llmtest.BedrockAccessKey, llmtest.BedrockSecretKey, "")}
	rec := make(chanRecorder, 16)
	g, err := gateway.New(gateway.Config{
		Upstream:  gateway.NewBedrockFromConfig(awsCfg, up.URL, map[string]string{"claude-test": "anthropic.claude-test-v1:0"}),
		RunTokens: tokens{"tbr_run1": {UserID: "alice", SandboxID: "sb1", RunID: "run1"}},
		Recorder:  rec,
		Price:     gateway.PriceTable(map[string]llm.Price{"claude-test": {InputPerMTok: 3, OutputPerMTok: 15}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gateway.Prefix+"/", g)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := sdk.NewClient(option.WithoutEnvironmentDefaults(), option.WithBaseURL(srv.URL+gateway.Prefix), option.WithAPIKey("tbr_run1"), option.WithMaxRetries(0))
	return up, client, rec
}

func TestBedrockUpstreamStreams(t *testing.T) {
	up, client, rec := setupBedrock(t)
	up.Push(llmtest.Reply{
		Text:      []string{"Hello ", "from Bedrock"},
		ToolCalls: []llm.ToolCall{{ID: "toolu_1", Name: "Bash", Input: json.RawMessage(`{"command":"ls"}`)}},
		Usage:     llm.Usage{InputTokens: 900, OutputTokens: 100, CacheReadTokens: 50},
	})
	s := client.Messages.NewStreaming(t.Context(), sdk.MessageNewParams{Model: "claude-test-20250101", MaxTokens: 64,
		Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
	var msg sdk.Message
	for s.Next() {
		if err := msg.Accumulate(s.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if len(msg.Content) != 2 || msg.Content[0].Text != "Hello from Bedrock" || msg.Content[1].Name != "Bash" || string(msg.Content[1].Input) != `{"command":"ls"}` {
		t.Errorf("message content: got %+v", msg.Content)
	}
	if msg.StopReason != sdk.StopReasonToolUse {
		t.Errorf("stop reason: got %q", msg.StopReason)
	}
	last := up.Last()
	if last.Path != "/model/anthropic.claude-test-v1:0/invoke-with-response-stream" {
		t.Errorf("bedrock path: got %s", last.Path)
	}
	body := last.JSON()
	if body["anthropic_version"] != "bedrock-2023-05-31" || body["model"] != nil || body["stream"] != nil || body["max_tokens"] != 64.0 {
		t.Errorf("bedrock body: got %s", last.Body)
	}
	r := rec.next(t)
	want := agent.Usage{InputTokens: 900, OutputTokens: 100, CacheReadTokens: 50}
	if d := cmp.Diff(want, r.Usage); d != "" || r.Provider != "bedrock" || r.RunID != "run1" || r.Status != 200 || r.CostNanoUSD != 4_200_000 {
		t.Errorf("record %+v; usage diff %s", r, d)
	}
}

func TestBedrockUpstreamJSON(t *testing.T) {
	up, client, rec := setupBedrock(t)
	up.Push(llmtest.Reply{Text: []string{"whole answer"}, Usage: llm.Usage{InputTokens: 10, OutputTokens: 3}})
	msg, err := client.Messages.New(t.Context(), sdk.MessageNewParams{Model: "claude-test", MaxTokens: 16,
		Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "whole answer" {
		t.Errorf("content: got %+v", msg.Content)
	}
	if got := up.Last().Path; got != "/model/anthropic.claude-test-v1:0/invoke" {
		t.Errorf("path: got %s", got)
	}
	if r := rec.next(t); r.Usage.InputTokens != 10 || r.Usage.OutputTokens != 3 {
		t.Errorf("usage: got %+v", r.Usage)
	}
}

func TestBedrockUpstreamErrors(t *testing.T) {
	up, client, _ := setupBedrock(t)
	params := sdk.MessageNewParams{Model: "claude-test", MaxTokens: 16, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}}

	up.Push(llmtest.Reply{Status: 429, RetryAfter: "5"})
	_, err := client.Messages.New(t.Context(), params)
	var ae *sdk.Error
	if !asAPIError(err, &ae) || ae.StatusCode != 429 || ae.Response.Header.Get("Retry-After") != "5" {
		t.Errorf("throttled: got %v", err)
	}

	up.Push(llmtest.Reply{Text: []string{"a", "b"}, MidError: true})
	s := client.Messages.NewStreaming(t.Context(), params)
	for s.Next() {
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "rate_limit_error") {
		t.Errorf("mid-stream exception: got %v", err)
	}
	s.Close()

	_, err = client.Messages.New(t.Context(), sdk.MessageNewParams{Model: "gpt-4o", MaxTokens: 16, Messages: params.Messages})
	if !asAPIError(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.RawJSON(), "no Bedrock mapping") {
		t.Errorf("unmapped model: got %v", err)
	}
}

func TestBedrockUpstreamCancel(t *testing.T) {
	up, client, _ := setupBedrock(t)
	up.Push(llmtest.Reply{Text: []string{"first", "never"}, Hold: true})
	ctx, cancel := context.WithCancel(t.Context())
	s := client.Messages.NewStreaming(ctx, sdk.MessageNewParams{Model: "claude-test", MaxTokens: 16, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
	for s.Next() {
		if ev := s.Current(); ev.Type == "content_block_delta" {
			break
		}
	}
	cancel()
	<-up.Cancelled
	s.Close()
}

func asAPIError(err error, target **sdk.Error) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*sdk.Error)
	if ok {
		*target = e
	}
	return ok
}

func TestUpstreamFromConfig(t *testing.T) {
	up, err := gateway.UpstreamFromConfig(t.Context(), llm.GatewayConfig{AnthropicUpstream: "bedrock", BedrockRegion: "eu-west-1",
		BedrockModels: map[string]string{"claude-sonnet-4-5": "eu.anthropic.claude-sonnet-4-5-v1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	b, ok := up.(*gateway.Bedrock)
	if !ok || b.Name() != "bedrock" {
		t.Fatalf("got %T", up)
	}
	for in, want := range map[string]string{"claude-sonnet-4-5-20250929": "eu.anthropic.claude-sonnet-4-5-v1:0", "us.anthropic.claude-x-v1:0": "us.anthropic.claude-x-v1:0", "gpt-4o": ""} {
		if got, _ := b.ModelID(in); got != want {
			t.Errorf("ModelID(%s): got %q, want %q", in, got, want)
		}
	}
	if up, err := gateway.UpstreamFromConfig(t.Context(), llm.GatewayConfig{}); err != nil || up.Name() != "anthropic" {
		t.Errorf("default upstream: got %v, %v", up, err)
	}
	if _, err := gateway.UpstreamFromConfig(t.Context(), llm.GatewayConfig{AnthropicUpstream: "vertex"}); err == nil {
		t.Error("unknown upstream accepted")
	}
}
