package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ChatMessage is one message of a /v1/chat conversation: Role is user,
// assistant or tool.
type ChatMessage struct {
	Role        string           `json:"role"`
	Content     string           `json:"content,omitempty"`
	ToolCalls   []ChatToolCall   `json:"tool_calls,omitempty"`
	ToolResults []ChatToolResult `json:"tool_results,omitempty"`
}

// ChatTool is a function the model may call (InputSchema: a JSON Schema).
type ChatTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
}

// ChatToolCall is the model asking for a tool to be run.
type ChatToolCall struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// ChatToolResult answers one ChatToolCall.
type ChatToolResult struct {
	ToolCallID string `json:"tool_call_id"`
	Content    string `json:"content"`
	IsError    bool   `json:"is_error,omitempty"`
}

// ChatRequest is the body of POST /v1/chat.
type ChatRequest struct {
	Provider    string        `json:"provider,omitempty"`
	Model       string        `json:"model"`
	System      string        `json:"system,omitempty"`
	Messages    []ChatMessage `json:"messages"`
	Tools       []ChatTool    `json:"tools,omitempty"`
	Temperature *float64      `json:"temperature,omitempty"`
	MaxTokens   int           `json:"max_tokens,omitempty"`
}

// ChatUsage is a chat answer's token usage.
type ChatUsage struct {
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
	CacheReadTokens  int64 `json:"cache_read_tokens"`
	CacheWriteTokens int64 `json:"cache_write_tokens"`
}

// ChatResponse is a whole chat answer.
type ChatResponse struct {
	Provider   string         `json:"provider"`
	Model      string         `json:"model"`
	Text       string         `json:"text"`
	ToolCalls  []ChatToolCall `json:"tool_calls,omitempty"`
	Usage      ChatUsage      `json:"usage"`
	CostUSD    float64        `json:"cost_usd"`
	StopReason string         `json:"stop_reason"`
}

// Chat asks a configured model and waits for the whole answer.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	body := struct {
		ChatRequest
		Stream bool `json:"stream"`
	}{req, false}
	var out ChatResponse
	if err := c.Do(ctx, "POST", "/v1/chat", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ChatEvent is one event of a streamed chat answer: Type "delta" (Text),
// "tool_call" (ToolCall), "usage" (Usage, CostUSD) or "done" (StopReason).
type ChatEvent struct {
	Type       string
	Text       string
	ToolCall   *ChatToolCall
	Usage      *ChatUsage
	CostUSD    float64
	StopReason string
}

// ChatStream asks a configured model and calls fn for each event of the
// answer as it streams. An error the provider reports mid-stream is
// returned as *Error.
func (c *Client) ChatStream(ctx context.Context, req ChatRequest, fn func(ChatEvent) error) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {"text/event-stream"}}
	res, err := c.Request(ctx, "POST", "/v1/chat", strings.NewReader(string(b)), hdr)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	done := false
	err = readEvents(res.Body, func(event string, data []byte) error {
		ev := ChatEvent{Type: event}
		switch event {
		case "delta":
			var d struct {
				Text string `json:"text"`
			}
			if err := json.Unmarshal(data, &d); err != nil {
				return fmt.Errorf("decode chat delta: %w", err)
			}
			ev.Text = d.Text
		case "tool_call":
			ev.ToolCall = &ChatToolCall{}
			if err := json.Unmarshal(data, ev.ToolCall); err != nil {
				return fmt.Errorf("decode chat tool call: %w", err)
			}
		case "usage":
			var d struct {
				ChatUsage
				CostUSD float64 `json:"cost_usd"`
			}
			if err := json.Unmarshal(data, &d); err != nil {
				return fmt.Errorf("decode chat usage: %w", err)
			}
			ev.Usage, ev.CostUSD = &d.ChatUsage, d.CostUSD
		case "done":
			var d struct {
				StopReason string `json:"stop_reason"`
			}
			_ = json.Unmarshal(data, &d)
			ev.StopReason, done = d.StopReason, true
		case "error":
			e := &Error{StatusCode: res.StatusCode}
			var d struct {
				Code       string `json:"code"`
				Message    string `json:"message"`
				RetryAfter int    `json:"retry_after"`
			}
			_ = json.Unmarshal(data, &d)
			e.Code, e.Message = d.Code, d.Message
			return e
		default:
			return nil // comments and event types this client does not know
		}
		return fn(ev)
	})
	if err != nil {
		return err
	}
	if !done {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// ModelPrice is a model's price in USD per million tokens.
type ModelPrice struct {
	InputPerMTok      float64 `json:"input_per_mtok,omitempty"`
	OutputPerMTok     float64 `json:"output_per_mtok,omitempty"`
	CacheReadPerMTok  float64 `json:"cache_read_per_mtok,omitempty"`
	CacheWritePerMTok float64 `json:"cache_write_per_mtok,omitempty"`
}

// ModelInfo is a model /v1/chat offers.
type ModelInfo struct {
	Provider string      `json:"provider"`
	Type     string      `json:"type"`
	ID       string      `json:"id"`
	Price    *ModelPrice `json:"price_per_mtok_usd,omitempty"`
}

// ProviderInfo is a configured LLM provider.
type ProviderInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	AnyModel bool   `json:"any_model"`
	Default  bool   `json:"default,omitempty"`
}

// Models lists the providers and models /v1/chat offers.
func (c *Client) Models(ctx context.Context) ([]ProviderInfo, []ModelInfo, error) {
	var out struct {
		Providers []ProviderInfo `json:"providers"`
		Models    []ModelInfo    `json:"models"`
	}
	if err := c.Do(ctx, "GET", "/v1/models", nil, &out); err != nil {
		return nil, nil, err
	}
	return out.Providers, out.Models, nil
}

// FollowSandboxLogs copies a sandbox's build and start log to w as it is
// written, until the sandbox runs or fails, and returns its status then
// ("running", "failed", ...) and the reason it gave.
func (c *Client) FollowSandboxLogs(ctx context.Context, id string, w io.Writer) (status, reason string, err error) {
	res, err := c.Request(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/logs?follow=true", nil, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	err = readEvents(res.Body, func(event string, data []byte) error {
		switch event {
		case "log":
			var ch struct {
				Data    *string `json:"data"`
				DataB64 string  `json:"data_b64"`
			}
			if err := json.Unmarshal(data, &ch); err != nil {
				return fmt.Errorf("decode log event: %w", err)
			}
			var text string
			if ch.Data != nil {
				text = *ch.Data
			}
			p, err := textOrB64(text, ch.DataB64)
			if err != nil {
				return err
			}
			_, err = w.Write(p)
			return err
		case "status":
			var st struct {
				Status string `json:"status"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(data, &st); err != nil {
				return fmt.Errorf("decode status event: %w", err)
			}
			status, reason = st.Status, st.Reason
		}
		return nil
	})
	if err == nil && status == "" {
		err = io.ErrUnexpectedEOF
	}
	return status, reason, err
}
