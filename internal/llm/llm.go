// Package llm is the server's one seam to model providers: a small
// streaming Provider interface that the anthropic, openai and bedrock
// subpackages implement with each vendor's official SDK, a Registry of the
// configured providers and models, a price table, and per-user budgets.
//
// The package itself imports no SDK and no net/http; adapters import it.
package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Role is who wrote a message.
type Role string

// The roles a conversation message may have. The system prompt is a
// separate Request field, as every vendor treats it differently.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// Message is one turn of a conversation. A user message may carry tool
// results (answers to the assistant's previous tool calls); an assistant
// message may carry tool calls.
type Message struct {
	Role        Role         `json:"role"`
	Content     string       `json:"content,omitempty"`
	ToolCalls   []ToolCall   `json:"tool_calls,omitempty"`
	ToolResults []ToolResult `json:"tool_results,omitempty"`
}

// Tool describes a function the model may call. InputSchema is a JSON
// Schema object.
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
}

// ToolCall is the model asking for a tool to be run. Input is a JSON object.
type ToolCall struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// ToolResult answers one ToolCall.
type ToolResult struct {
	ToolCallID string `json:"tool_call_id"`
	Content    string `json:"content"`
	IsError    bool   `json:"is_error,omitempty"`
}

// Request is one chat call. Model is the upstream model ID.
type Request struct {
	Model       string
	System      string
	Messages    []Message
	Tools       []Tool
	Temperature *float64 // nil: the provider's default
	MaxTokens   int      // 0: DefaultMaxTokens
}

// DefaultMaxTokens is used when a Request leaves MaxTokens at zero; the
// Anthropic and Bedrock APIs require a value.
const DefaultMaxTokens = 4096

// MaxTokensOrDefault returns r.MaxTokens, or DefaultMaxTokens when unset.
func (r *Request) MaxTokensOrDefault() int {
	if r.MaxTokens > 0 {
		return r.MaxTokens
	}
	return DefaultMaxTokens
}

// Usage counts tokens of one call. CacheRead and CacheWrite are prompt
// tokens served from or written to the provider's prompt cache; InputTokens
// excludes them (Anthropic's convention; OpenAI's counts are converted).
type Usage struct {
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
	CacheReadTokens  int64 `json:"cache_read_tokens"`
	CacheWriteTokens int64 `json:"cache_write_tokens"`
}

// Add adds o to u.
func (u *Usage) Add(o Usage) {
	u.InputTokens += o.InputTokens
	u.OutputTokens += o.OutputTokens
	u.CacheReadTokens += o.CacheReadTokens
	u.CacheWriteTokens += o.CacheWriteTokens
}

// StopReason says why the model stopped.
type StopReason string

// The normalised stop reasons.
const (
	StopEnd       StopReason = "end_turn"
	StopToolUse   StopReason = "tool_use"
	StopMaxTokens StopReason = "max_tokens"
	StopSequence  StopReason = "stop_sequence"
	StopRefusal   StopReason = "refusal"
	StopOther     StopReason = "other"
)

// EventType names a stream event.
type EventType string

// The stream events, in the order a stream produces them: any number of
// deltas and tool calls, then exactly one usage and one done.
const (
	EventDelta    EventType = "delta"
	EventToolCall EventType = "tool_call"
	EventUsage    EventType = "usage"
	EventDone     EventType = "done"
)

// Event is one item of a Stream. Which field is set depends on Type.
type Event struct {
	Type       EventType
	Text       string     // EventDelta
	ToolCall   *ToolCall  // EventToolCall: complete, with the whole input
	Usage      Usage      // EventUsage
	StopReason StopReason // EventDone
}

// Stream is a pull iterator over a response, in the style of the SDKs:
//
//	for s.Next() { ev := s.Event() }
//	if err := s.Err(); err != nil { ... }
//
// Close releases the upstream connection; it is safe to call more than
// once and must be called.
type Stream interface {
	Next() bool
	Event() Event
	Err() error
	Close() error
}

// Queue holds the events a provider's stream decoded from one upstream
// message and hands them out one at a time; providers embed it for their
// Stream's Event.
type Queue struct {
	pending []Event
	cur     Event
}

// Push queues evs.
func (q *Queue) Push(evs ...Event) { q.pending = append(q.pending, evs...) }

// Pop makes the next queued event current; false when none is queued.
func (q *Queue) Pop() bool {
	if len(q.pending) == 0 {
		return false
	}
	q.cur = q.pending[0]
	q.pending = q.pending[1:]
	return true
}

// Event is the current event.
func (q *Queue) Event() Event { return q.cur }

// Provider is one configured upstream.
type Provider interface {
	// Stream starts a call. An error before the first event (bad key,
	// rate limit, unreachable) is returned here or from the stream's Err.
	// Errors are *errs.Error with a kind that tells the caller what happened.
	Stream(ctx context.Context, req *Request) (Stream, error)
}

// Response is a whole answer, collected from a Stream.
type Response struct {
	Text       string     `json:"text"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	Usage      Usage      `json:"usage"`
	StopReason StopReason `json:"stop_reason"`
}

// Complete calls p and collects the whole answer: the non-streaming
// convenience over Provider.Stream.
func Complete(ctx context.Context, p Provider, req *Request) (*Response, error) {
	s, err := p.Stream(ctx, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return Collect(s)
}

// Collect drains s into a Response.
func Collect(s Stream) (*Response, error) {
	var (
		resp Response
		text strings.Builder
	)
	for s.Next() {
		ev := s.Event()
		switch ev.Type {
		case EventDelta:
			text.WriteString(ev.Text)
		case EventToolCall:
			resp.ToolCalls = append(resp.ToolCalls, *ev.ToolCall)
		case EventUsage:
			resp.Usage = ev.Usage
		case EventDone:
			resp.StopReason = ev.StopReason
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	resp.Text = text.String()
	return &resp, nil
}

// Validate checks a request before it is sent anywhere, returning an
// errs.Invalid naming the field.
func (r *Request) Validate() error {
	var fs []fieldErr
	if strings.TrimSpace(r.Model) == "" {
		fs = append(fs, fieldErr{"model", "is required"})
	}
	if len(r.Messages) == 0 {
		fs = append(fs, fieldErr{"messages", "at least one message is required"})
	}
	for i, m := range r.Messages {
		switch m.Role {
		case RoleUser, RoleAssistant:
		default:
			fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].role", i), `must be "user" or "assistant"`})
		}
		if m.Content == "" && len(m.ToolCalls) == 0 && len(m.ToolResults) == 0 {
			fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].content", i), "is empty"})
		}
		if m.Role == RoleUser && len(m.ToolCalls) > 0 {
			fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].tool_calls", i), "only assistant messages carry tool calls"})
		}
		if m.Role == RoleAssistant && len(m.ToolResults) > 0 {
			fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].tool_results", i), "only user messages carry tool results"})
		}
		for j, tc := range m.ToolCalls {
			if tc.ID == "" || tc.Name == "" {
				fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].tool_calls[%d]", i, j), "id and name are required"})
			}
			if len(tc.Input) > 0 && !isJSONObject(tc.Input) {
				fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].tool_calls[%d].input", i, j), "must be a JSON object"})
			}
		}
		for j, tr := range m.ToolResults {
			if tr.ToolCallID == "" {
				fs = append(fs, fieldErr{fmt.Sprintf("messages[%d].tool_results[%d].tool_call_id", i, j), "is required"})
			}
		}
	}
	for i, t := range r.Tools {
		if t.Name == "" {
			fs = append(fs, fieldErr{fmt.Sprintf("tools[%d].name", i), "is required"})
		}
		if len(t.InputSchema) > 0 && !isJSONObject(t.InputSchema) {
			fs = append(fs, fieldErr{fmt.Sprintf("tools[%d].input_schema", i), "must be a JSON object"})
		}
	}
	if r.Temperature != nil && (*r.Temperature < 0 || *r.Temperature > 2) {
		fs = append(fs, fieldErr{"temperature", "must be between 0 and 2"})
	}
	if r.MaxTokens < 0 || r.MaxTokens > 1_000_000 {
		fs = append(fs, fieldErr{"max_tokens", "must be between 1 and 1000000"})
	}
	return invalid(fs)
}

func isJSONObject(b json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// InputObject returns tc.Input, or "{}" when empty, so SDKs that need an
// object always get one.
func (tc ToolCall) InputObject() json.RawMessage {
	if len(tc.Input) == 0 {
		return json.RawMessage("{}")
	}
	return tc.Input
}

// SchemaObject returns the tool's input schema decoded, or a minimal
// object schema when none was given.
func (t Tool) SchemaObject() map[string]any {
	m := map[string]any{}
	if len(t.InputSchema) > 0 {
		_ = json.Unmarshal(t.InputSchema, &m) // validated by Request.Validate
	}
	if _, ok := m["type"]; !ok {
		m["type"] = "object"
	}
	return m
}

// ErrStreamClosed is returned by Next after Close.
var ErrStreamClosed = errors.New("llm: stream closed")
