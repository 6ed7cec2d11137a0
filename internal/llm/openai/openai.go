// Package openai is the llm.Provider for OpenAI and every server that
// speaks its API (Ollama, vLLM, llama.cpp server, OpenRouter), through the
// official openai-go SDK: Chat Completions streaming with
// stream_options.include_usage, or the Responses API, chosen per provider.
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// DefaultBaseURL is OpenAI's API root.
const DefaultBaseURL = "https://api.openai.com/v1/"

// Provider calls an OpenAI-protocol endpoint.
type Provider struct {
	name      string
	responses bool
	client    sdk.Client
}

var _ llm.Provider = (*Provider)(nil)

// New returns a Provider for cfg; hc may be nil. The base URL and key come
// only from cfg (explicit options override the SDK's environment defaults).
func New(cfg llm.ProviderConfig, hc *http.Client) *Provider {
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	opts := []option.RequestOption{
		option.WithBaseURL(base),
		option.WithAPIKey(cfg.APIKey.Reveal()),
		option.WithMaxRetries(cfg.Retries()),
		option.WithRequestTimeout(cfg.Timeout()),
		// Never forward an ambient organisation or project to another server.
		option.WithHeaderDel("OpenAI-Organization"),
		option.WithHeaderDel("OpenAI-Project"),
	}
	if hc != nil {
		opts = append(opts, option.WithHTTPClient(hc))
	}
	return &Provider{name: cfg.Name, responses: cfg.API == "responses", client: sdk.NewClient(opts...)}
}

// Factory adapts New to llm.Factory.
func Factory(hc *http.Client) llm.Factory {
	return func(_ context.Context, cfg llm.ProviderConfig) (llm.Provider, error) {
		return New(cfg, hc), nil
	}
}

// Stream starts a streaming call on the configured API.
func (p *Provider) Stream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	if p.responses {
		s := p.client.Responses.NewStreaming(ctx, ResponsesParams(req))
		st := &respStream{base: base{ctx: ctx, name: p.name}, s: s}
		if err := s.Err(); err != nil {
			s.Close()
			return nil, st.mapErr(err)
		}
		return st, nil
	}
	s := p.client.Chat.Completions.NewStreaming(ctx, ChatParams(req))
	st := &chatStream{base: base{ctx: ctx, name: p.name}, s: s, tools: map[int64]*toolAcc{}}
	if err := s.Err(); err != nil {
		s.Close()
		return nil, st.mapErr(err)
	}
	return st, nil
}

// ChatParams converts a request to Chat Completions parameters.
func ChatParams(req *llm.Request) sdk.ChatCompletionNewParams {
	p := sdk.ChatCompletionNewParams{
		Model:               shared.ChatModel(req.Model),
		MaxCompletionTokens: param.NewOpt(int64(req.MaxTokensOrDefault())),
		StreamOptions:       sdk.ChatCompletionStreamOptionsParam{IncludeUsage: param.NewOpt(true)},
	}
	if req.Temperature != nil {
		p.Temperature = param.NewOpt(*req.Temperature)
	}
	if req.System != "" {
		p.Messages = append(p.Messages, sdk.SystemMessage(req.System))
	}
	for _, m := range req.Messages {
		if m.Role == llm.RoleAssistant {
			a := sdk.ChatCompletionAssistantMessageParam{}
			if m.Content != "" {
				a.Content.OfString = param.NewOpt(m.Content)
			}
			for _, tc := range m.ToolCalls {
				a.ToolCalls = append(a.ToolCalls, sdk.ChatCompletionMessageToolCallUnionParam{
					OfFunction: &sdk.ChatCompletionMessageFunctionToolCallParam{ID: tc.ID,
						Function: sdk.ChatCompletionMessageFunctionToolCallFunctionParam{Name: tc.Name, Arguments: string(tc.InputObject())}},
				})
			}
			p.Messages = append(p.Messages, sdk.ChatCompletionMessageParamUnion{OfAssistant: &a})
			continue
		}
		// Tool results are their own "tool" messages, before the user's text.
		for _, tr := range m.ToolResults {
			p.Messages = append(p.Messages, sdk.ToolMessage(tr.Content, tr.ToolCallID))
		}
		if m.Content != "" {
			p.Messages = append(p.Messages, sdk.UserMessage(m.Content))
		}
	}
	for _, t := range req.Tools {
		fd := shared.FunctionDefinitionParam{Name: t.Name, Parameters: shared.FunctionParameters(t.SchemaObject())}
		if t.Description != "" {
			fd.Description = param.NewOpt(t.Description)
		}
		p.Tools = append(p.Tools, sdk.ChatCompletionFunctionTool(fd))
	}
	return p
}

// ResponsesParams converts a request to Responses API parameters.
func ResponsesParams(req *llm.Request) responses.ResponseNewParams {
	p := responses.ResponseNewParams{
		Model:           shared.ResponsesModel(req.Model),
		MaxOutputTokens: param.NewOpt(int64(req.MaxTokensOrDefault())),
		Store:           param.NewOpt(false),
	}
	if req.System != "" {
		p.Instructions = param.NewOpt(req.System)
	}
	if req.Temperature != nil {
		p.Temperature = param.NewOpt(*req.Temperature)
	}
	var in responses.ResponseInputParam
	for _, m := range req.Messages {
		if m.Role == llm.RoleAssistant {
			if m.Content != "" {
				in = append(in, responses.ResponseInputItemParamOfMessage(m.Content, responses.EasyInputMessageRoleAssistant))
			}
			for _, tc := range m.ToolCalls {
				in = append(in, responses.ResponseInputItemParamOfFunctionCall(string(tc.InputObject()), tc.ID, tc.Name))
			}
			continue
		}
		for _, tr := range m.ToolResults {
			item := responses.ResponseInputItemParamOfFunctionCallOutput(tr.Content)
			item.OfFunctionCallOutput.CallID = param.NewOpt(tr.ToolCallID)
			in = append(in, item)
		}
		if m.Content != "" {
			in = append(in, responses.ResponseInputItemParamOfMessage(m.Content, responses.EasyInputMessageRoleUser))
		}
	}
	p.Input = responses.ResponseNewParamsInputUnion{OfInputItemList: in}
	for _, t := range req.Tools {
		tp := responses.ToolParamOfFunction(t.Name, t.SchemaObject(), false)
		if t.Description != "" {
			tp.OfFunction.Description = param.NewOpt(t.Description)
		}
		p.Tools = append(p.Tools, tp)
	}
	return p
}

type base struct {
	ctx  context.Context
	name string
	llm.Queue
	done bool
	err  error
}

func (b *base) Err() error { return b.err }

func (b *base) mapErr(err error) error {
	var ae *sdk.Error
	if errors.As(err, &ae) {
		ra := ""
		if ae.Response != nil {
			ra = ae.Response.Header.Get("Retry-After")
		}
		// Only type and code: upstream messages may quote the key.
		return llm.UpstreamStatus(b.name, ae.StatusCode, ra, ae.Type+"/"+ae.Code)
	}
	var se *ssestream.StreamError
	if errors.As(err, &se) {
		return errs.Wrap(errs.BadGateway, errors.New("error event in stream"), fmt.Sprintf("upstream %s reported an error mid-stream", b.name))
	}
	return llm.TransportError(b.ctx, b.name, err)
}

type toolAcc struct {
	id, name string
	args     strings.Builder
}

type chatStream struct {
	base
	s      *ssestream.Stream[sdk.ChatCompletionChunk]
	tools  map[int64]*toolAcc
	order  []int64
	usage  *llm.Usage
	finish string
}

func (st *chatStream) Next() bool {
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
				return false
			}
			st.end()
			continue
		}
		st.handle(st.s.Current())
	}
}

func (st *chatStream) handle(c sdk.ChatCompletionChunk) {
	if c.JSON.Usage.Valid() {
		u := c.Usage
		cached := u.PromptTokensDetails.CachedTokens
		st.usage = &llm.Usage{InputTokens: u.PromptTokens - cached, OutputTokens: u.CompletionTokens, CacheReadTokens: cached}
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue
		}
		if ch.Delta.Content != "" {
			st.Push(llm.Event{Type: llm.EventDelta, Text: ch.Delta.Content})
		}
		for _, tc := range ch.Delta.ToolCalls {
			t := st.tools[tc.Index]
			if t == nil {
				t = &toolAcc{}
				st.tools[tc.Index] = t
				st.order = append(st.order, tc.Index)
			}
			if tc.ID != "" {
				t.id = tc.ID
			}
			if tc.Function.Name != "" {
				t.name = tc.Function.Name
			}
			t.args.WriteString(tc.Function.Arguments)
		}
		if ch.FinishReason != "" {
			st.finish = ch.FinishReason
		}
	}
}

// end runs at [DONE]: tool calls are complete only then, as OpenAI sends
// no per-call stop marker.
func (st *chatStream) end() {
	st.done = true
	if st.finish == "" {
		st.err = errs.E(errs.BadGateway, "upstream %s ended the stream without a finish reason", st.name)
		return
	}
	for _, i := range st.order {
		t := st.tools[i]
		in := json.RawMessage(t.args.String())
		if len(in) == 0 {
			in = json.RawMessage("{}")
		} else if !json.Valid(in) {
			st.err = errs.E(errs.BadGateway, "upstream %s sent invalid JSON arguments for tool %s", st.name, t.name)
			return
		}
		st.Push(llm.Event{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: t.id, Name: t.name, Input: in}})
	}
	var u llm.Usage
	if st.usage != nil {
		u = *st.usage
	}
	stop := llm.StopOther
	switch st.finish {
	case "stop":
		stop = llm.StopEnd
	case "tool_calls", "function_call":
		stop = llm.StopToolUse
	case "length":
		stop = llm.StopMaxTokens
	case "content_filter":
		stop = llm.StopRefusal
	}
	st.Push(llm.Event{Type: llm.EventUsage, Usage: u}, llm.Event{Type: llm.EventDone, StopReason: stop})
}

func (st *chatStream) Close() error { return st.s.Close() }

type respStream struct {
	base
	s         *ssestream.Stream[responses.ResponseStreamEventUnion]
	toolCalls bool
}

func (st *respStream) Next() bool {
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
				st.err = errs.E(errs.BadGateway, "upstream %s ended the stream before response.completed", st.name)
			}
			return false
		}
		st.handle(st.s.Current())
	}
}

func (st *respStream) handle(ev responses.ResponseStreamEventUnion) {
	switch ev.Type {
	case "response.output_text.delta":
		if ev.Delta != "" {
			st.Push(llm.Event{Type: llm.EventDelta, Text: ev.Delta})
		}
	case "response.output_item.done":
		if ev.Item.Type == "function_call" {
			fc := ev.Item.AsFunctionCall()
			in := json.RawMessage(fc.Arguments)
			if len(in) == 0 {
				in = json.RawMessage("{}")
			} else if !json.Valid(in) {
				st.err = errs.E(errs.BadGateway, "upstream %s sent invalid JSON arguments for tool %s", st.name, fc.Name)
				return
			}
			st.toolCalls = true
			st.Push(llm.Event{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: fc.CallID, Name: fc.Name, Input: in}})
		}
	case "response.completed", "response.incomplete":
		r := ev.Response
		cached := r.Usage.InputTokensDetails.CachedTokens
		u := llm.Usage{InputTokens: r.Usage.InputTokens - cached, OutputTokens: r.Usage.OutputTokens, CacheReadTokens: cached}
		stop := llm.StopEnd
		switch {
		case ev.Type == "response.incomplete" && r.IncompleteDetails.Reason == "max_output_tokens":
			stop = llm.StopMaxTokens
		case ev.Type == "response.incomplete" && r.IncompleteDetails.Reason == "content_filter":
			stop = llm.StopRefusal
		case ev.Type == "response.incomplete":
			stop = llm.StopOther
		case st.toolCalls:
			stop = llm.StopToolUse
		}
		st.Push(llm.Event{Type: llm.EventUsage, Usage: u}, llm.Event{Type: llm.EventDone, StopReason: stop})
		st.done = true
	case "response.failed":
		st.err = errs.E(errs.BadGateway, "upstream %s reported the response failed (%s)", st.name, ev.Response.Error.Code)
	case "error":
		st.err = errs.E(errs.BadGateway, "upstream %s reported an error mid-stream (%s)", st.name, ev.Code)
	}
}

func (st *respStream) Close() error { return st.s.Close() }
