// Package anthropic is the llm.Provider for Anthropic's Messages API,
// through the official anthropic-sdk-go, always streaming (SSE with
// tool_use blocks assembled from input_json_delta fragments).
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/anthropics/anthropic-sdk-go/packages/param"
	"github.com/anthropics/anthropic-sdk-go/packages/ssestream"
	"github.com/anthropics/anthropic-sdk-go/shared"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// Provider calls the Anthropic Messages API.
type Provider struct {
	name   string
	client sdk.Client
}

var _ llm.Provider = (*Provider)(nil)

// New returns a Provider for cfg. hc may be nil for the SDK's default
// client. The SDK reads nothing from the environment: the key and base
// URL come from cfg only.
func New(cfg llm.ProviderConfig, hc *http.Client) *Provider {
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithAPIKey(cfg.APIKey.Reveal()),
		option.WithMaxRetries(cfg.Retries()),
		option.WithRequestTimeout(cfg.Timeout()),
	}
	if cfg.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(cfg.BaseURL))
	}
	if hc != nil {
		opts = append(opts, option.WithHTTPClient(hc))
	}
	return &Provider{name: cfg.Name, client: sdk.NewClient(opts...)}
}

// Factory adapts New to llm.Factory.
func Factory(hc *http.Client) llm.Factory {
	return func(_ context.Context, cfg llm.ProviderConfig) (llm.Provider, error) {
		return New(cfg, hc), nil
	}
}

// Params converts a request to the SDK's parameters.
func Params(req *llm.Request) sdk.MessageNewParams {
	p := sdk.MessageNewParams{
		Model:     sdk.Model(req.Model),
		MaxTokens: int64(req.MaxTokensOrDefault()),
	}
	if req.System != "" {
		p.System = []sdk.TextBlockParam{{Text: req.System}}
	}
	if req.Temperature != nil {
		p.Temperature = param.NewOpt(*req.Temperature)
	}
	for _, m := range req.Messages {
		var blocks []sdk.ContentBlockParamUnion
		for _, tr := range m.ToolResults {
			blocks = append(blocks, sdk.NewToolResultBlock(tr.ToolCallID, tr.Content, tr.IsError))
		}
		if m.Content != "" {
			blocks = append(blocks, sdk.NewTextBlock(m.Content))
		}
		for _, tc := range m.ToolCalls {
			blocks = append(blocks, sdk.NewToolUseBlock(tc.ID, tc.InputObject(), tc.Name))
		}
		if m.Role == llm.RoleAssistant {
			p.Messages = append(p.Messages, sdk.NewAssistantMessage(blocks...))
		} else {
			p.Messages = append(p.Messages, sdk.NewUserMessage(blocks...))
		}
	}
	for _, t := range req.Tools {
		schema := t.SchemaObject()
		in := sdk.ToolInputSchemaParam{Properties: schema["properties"], ExtraFields: map[string]any{}}
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				if s, ok := r.(string); ok {
					in.Required = append(in.Required, s)
				}
			}
		}
		for k, v := range schema {
			if k != "type" && k != "properties" && k != "required" {
				in.ExtraFields[k] = v
			}
		}
		tp := &sdk.ToolParam{Name: t.Name, InputSchema: in}
		if t.Description != "" {
			tp.Description = param.NewOpt(t.Description)
		}
		p.Tools = append(p.Tools, sdk.ToolUnionParam{OfTool: tp})
	}
	return p
}

// Stream starts a streaming Messages call.
func (p *Provider) Stream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	s := p.client.Messages.NewStreaming(ctx, Params(req))
	st := &stream{ctx: ctx, name: p.name, s: s, tools: map[int64]*toolAcc{}}
	// The SDK reports a non-2xx answer as an already-failed stream; surface
	// it now so callers can answer with a status before streaming anything.
	if err := s.Err(); err != nil {
		s.Close()
		return nil, st.mapErr(err)
	}
	return st, nil
}

type toolAcc struct {
	id, name string
	input    strings.Builder
}

type stream struct {
	ctx   context.Context
	name  string
	s     *ssestream.Stream[sdk.MessageStreamEventUnion]
	tools map[int64]*toolAcc
	usage llm.Usage
	stop  llm.StopReason
	llm.Queue
	done bool
	err  error
}

func (st *stream) Next() bool {
	for {
		if st.Pop() {
			return true
		}
		if st.done || st.err != nil {
			return false
		}
		if !st.s.Next() {
			if err := st.s.Err(); err != nil {
				st.err = st.mapErr(err)
			} else {
				st.err = errs.E(errs.BadGateway, "upstream %s ended the stream before message_stop", st.name)
			}
			return false
		}
		st.handle(st.s.Current())
	}
}

func (st *stream) handle(ev sdk.MessageStreamEventUnion) {
	switch ev.Type {
	case "message_start":
		u := ev.Message.Usage
		st.usage = llm.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
			CacheReadTokens: u.CacheReadInputTokens, CacheWriteTokens: u.CacheCreationInputTokens}
	case "content_block_start":
		if ev.ContentBlock.Type == "tool_use" {
			st.tools[ev.Index] = &toolAcc{id: ev.ContentBlock.ID, name: ev.ContentBlock.Name}
		}
	case "content_block_delta":
		switch ev.Delta.Type {
		case "text_delta":
			if ev.Delta.Text != "" {
				st.Push(llm.Event{Type: llm.EventDelta, Text: ev.Delta.Text})
			}
		case "input_json_delta":
			if t := st.tools[ev.Index]; t != nil {
				t.input.WriteString(ev.Delta.PartialJSON)
			}
		}
	case "content_block_stop":
		if t := st.tools[ev.Index]; t != nil {
			delete(st.tools, ev.Index)
			in := json.RawMessage(t.input.String())
			if len(in) == 0 {
				in = json.RawMessage("{}")
			} else if !json.Valid(in) {
				st.err = errs.E(errs.BadGateway, "upstream %s sent invalid JSON input for tool %s", st.name, t.name)
				return
			}
			st.Push(llm.Event{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: t.id, Name: t.name, Input: in}})
		}
	case "message_delta":
		st.stop = stopReason(ev.Delta.StopReason)
		u := ev.Usage
		// message_delta usage is cumulative; later values win.
		if u.OutputTokens > 0 {
			st.usage.OutputTokens = u.OutputTokens
		}
		if u.InputTokens > 0 {
			st.usage.InputTokens = u.InputTokens
		}
		if u.CacheReadInputTokens > 0 {
			st.usage.CacheReadTokens = u.CacheReadInputTokens
		}
		if u.CacheCreationInputTokens > 0 {
			st.usage.CacheWriteTokens = u.CacheCreationInputTokens
		}
	case "message_stop":
		if st.stop == "" {
			st.stop = llm.StopEnd
		}
		st.Push(
			llm.Event{Type: llm.EventUsage, Usage: st.usage},
			llm.Event{Type: llm.EventDone, StopReason: st.stop})
		st.done = true
	}
}

func stopReason(r sdk.StopReason) llm.StopReason {
	switch r {
	case sdk.StopReasonEndTurn, sdk.StopReasonPauseTurn:
		return llm.StopEnd
	case sdk.StopReasonToolUse:
		return llm.StopToolUse
	case sdk.StopReasonMaxTokens, sdk.StopReasonModelContextWindowExceeded:
		return llm.StopMaxTokens
	case sdk.StopReasonStopSequence:
		return llm.StopSequence
	case sdk.StopReasonRefusal:
		return llm.StopRefusal
	case "":
		return ""
	default:
		return llm.StopOther
	}
}

func (st *stream) mapErr(err error) error {
	var ae *sdk.Error
	if errors.As(err, &ae) {
		// Only the error type and request ID are kept: upstream messages
		// may quote the key.
		detail := fmt.Sprintf("%s (request %s)", ae.Type(), ae.RequestID)
		if ae.StatusCode >= 200 && ae.StatusCode < 300 {
			// An "error" event inside a 200 stream.
			if ae.Type() == shared.ErrorTypeOverloadedError {
				return errs.Wrap(errs.Unavailable, errors.New(detail), fmt.Sprintf("upstream %s is overloaded", st.name))
			}
			return errs.Wrap(errs.BadGateway, errors.New(detail), fmt.Sprintf("upstream %s reported an error mid-stream (%s)", st.name, ae.Type()))
		}
		ra := ""
		if ae.Response != nil {
			ra = ae.Response.Header.Get("Retry-After")
		}
		return llm.UpstreamStatus(st.name, ae.StatusCode, ra, detail)
	}
	return llm.TransportError(st.ctx, st.name, err)
}

func (st *stream) Err() error   { return st.err }
func (st *stream) Close() error { return st.s.Close() }
