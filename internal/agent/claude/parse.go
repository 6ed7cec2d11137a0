package claude

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/techbossai/techboss/internal/agent"
)

// Parser turns Claude Code stream-json lines into agent events. It
// follows the message being streamed (stream_event lines) to number its
// deltas; one Parser reads one run. The zero value is ready to use.
type Parser struct{ st streamState }

var _ agent.Parser = (*Parser)(nil)

// line is the union of the top-level fields the parser reads.
type line struct {
	Type      string          `json:"type"`
	Subtype   string          `json:"subtype"`
	SessionID string          `json:"session_id"`
	Model     string          `json:"model"`
	Cwd       string          `json:"cwd"`
	PermMode  string          `json:"permissionMode"`
	Version   string          `json:"claude_code_version"`
	Message   json.RawMessage `json:"message"`
	Error     json.RawMessage `json:"error"`
	Event     json.RawMessage `json:"event"` // stream_event

	// system/api_retry
	Attempt      int     `json:"attempt"`
	MaxRetries   int     `json:"max_retries"`
	RetryDelayMS float64 `json:"retry_delay_ms"`
	ErrorStatus  *int    `json:"error_status"`

	// result
	IsError        bool     `json:"is_error"`
	Result         string   `json:"result"`
	NumTurns       int      `json:"num_turns"`
	DurationMS     float64  `json:"duration_ms"`
	DurationAPIMS  float64  `json:"duration_api_ms"`
	TotalCostUSD   float64  `json:"total_cost_usd"`
	Usage          *usage   `json:"usage"`
	StopReason     *string  `json:"stop_reason"`
	TerminalReason string   `json:"terminal_reason"`
	APIErrorStatus *int     `json:"api_error_status"`
	Errors         []string `json:"errors"`
}

type usage struct {
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens"`
}

type message struct {
	ID      string          `json:"id"`
	Model   string          `json:"model"`
	Content json.RawMessage `json:"content"`
}

type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// maxRawError bounds how much of an unparseable line is echoed in the
// event data (the full line is still kept as Raw).
const maxRawError = 4096

// Parse returns the events of one stream-json line. Blank lines yield
// nothing; anything unparseable or unknown yields one TypeRaw event.
func (p *Parser) Parse(b []byte) []agent.Event {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil
	}
	raw := string(b)
	if !utf8.Valid(b) {
		raw = strings.ToValidUTF8(raw, "\uFFFD")
	}
	if b[0] != '{' || !json.Valid(b) {
		return []agent.Event{invalid(raw)}
	}
	var l line
	if json.Unmarshal(b, &l) != nil {
		// Valid JSON of an unexpected shape (a field of another type).
		return []agent.Event{passThrough(b, raw)}
	}
	var evs []agent.Event
	switch l.Type {
	case "system":
		switch l.Subtype {
		case "init":
			evs = append(evs, agent.NewEvent(agent.TypeStarted, agent.StartedData{
				SessionID: l.SessionID, Model: l.Model, Cwd: l.Cwd,
				PermissionMode: l.PermMode, Version: l.Version,
			}, raw))
		case "api_retry":
			d := agent.RetryData{Attempt: l.Attempt, MaxRetries: l.MaxRetries, RetryDelayMS: l.RetryDelayMS, Error: errString(l.Error)}
			if l.ErrorStatus != nil {
				d.ErrorStatus = *l.ErrorStatus
			}
			evs = append(evs, agent.NewEvent(agent.TypeRetry, d, raw))
		}
	case "assistant":
		evs = p.assistant(l, raw)
	case "user":
		evs = user(l, raw)
	case "result":
		evs = result(l, raw)
	case "stream_event":
		evs = p.stream(l.Event, raw)
	}
	if len(evs) == 0 {
		return []agent.Event{passThrough(b, raw)}
	}
	// The raw line is stored once, on the first event it produced.
	for i := 1; i < len(evs); i++ {
		evs[i].Raw = ""
	}
	return evs
}

func (p *Parser) assistant(l line, raw string) []agent.Event {
	var m message
	if json.Unmarshal(l.Message, &m) != nil {
		return nil
	}
	streamed := m.ID != "" && m.ID == p.st.msgID && p.st.streamedText()
	blocks := contentBlocks(m.Content)
	if errKind := errString(l.Error); errKind != "" {
		// A failed API call comes back as a synthetic assistant message
		// whose text is the error.
		var texts []string
		for _, bl := range blocks {
			if bl.Type == "text" {
				texts = append(texts, bl.Text)
			}
		}
		return []agent.Event{agent.NewEvent(agent.TypeError, agent.ErrorData{Message: strings.Join(texts, "\n"), Kind: errKind}, raw)}
	}
	var evs []agent.Event
	for _, bl := range blocks {
		switch bl.Type {
		case "text":
			evs = append(evs, agent.NewEvent(agent.TypeText, agent.TextData{Text: bl.Text, MessageID: m.ID, Streamed: streamed}, raw))
		case "tool_use":
			in := bl.Input
			if len(in) == 0 {
				in = json.RawMessage(`{}`)
			}
			evs = append(evs, agent.NewEvent(agent.TypeToolUse, agent.ToolUseData{ID: bl.ID, Name: bl.Name, Input: in}, raw))
		}
	}
	return evs
}

func user(l line, raw string) []agent.Event {
	var m message
	if json.Unmarshal(l.Message, &m) != nil {
		return nil
	}
	var evs []agent.Event
	for _, bl := range contentBlocks(m.Content) {
		if bl.Type == "tool_result" {
			evs = append(evs, agent.NewEvent(agent.TypeToolResult, agent.ToolResultData{
				ToolUseID: bl.ToolUseID, Content: blockText(bl.Content), IsError: bl.IsError,
			}, raw))
		}
	}
	return evs
}

func result(l line, raw string) []agent.Event {
	d := agent.ResultData{
		Subtype: l.Subtype, IsError: l.IsError, Result: l.Result, NumTurns: l.NumTurns,
		DurationMS: int64(l.DurationMS), DurationAPIMS: int64(l.DurationAPIMS),
		TotalCostUSD: l.TotalCostUSD, SessionID: l.SessionID,
		TerminalReason: l.TerminalReason, Errors: l.Errors,
	}
	if l.Usage != nil {
		d.Usage = agent.Usage(*l.Usage)
	}
	if l.StopReason != nil {
		d.StopReason = *l.StopReason
	}
	if l.APIErrorStatus != nil {
		d.APIErrorStatus = *l.APIErrorStatus
	}
	evs := []agent.Event{agent.NewEvent(agent.TypeResult, d, raw)}
	if !d.Usage.IsZero() || d.TotalCostUSD != 0 {
		evs = append(evs, agent.NewEvent(agent.TypeUsage, agent.UsageData{Source: "cli", Usage: d.Usage, CostUSD: d.TotalCostUSD}, ""))
	}
	return evs
}

// contentBlocks decodes message content, which is a string or a list of blocks.
func contentBlocks(c json.RawMessage) []block {
	var s string
	if json.Unmarshal(c, &s) == nil {
		return []block{{Type: "text", Text: s}}
	}
	var bs []block
	if json.Unmarshal(c, &bs) != nil {
		return nil
	}
	return bs
}

// blockText flattens a tool_result's content (a string or text blocks).
func blockText(c json.RawMessage) string {
	if len(c) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(c, &s) == nil {
		return s
	}
	var parts []string
	for _, bl := range contentBlocks(c) {
		if bl.Type == "text" {
			parts = append(parts, bl.Text)
		} else if bl.Type != "" {
			parts = append(parts, "["+bl.Type+"]")
		}
	}
	return strings.Join(parts, "\n")
}

// errString reads an "error" field that is a string or an object with a message/type.
func errString(e json.RawMessage) string {
	if len(e) == 0 || string(e) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(e, &s) == nil {
		return s
	}
	var o struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
	if json.Unmarshal(e, &o) == nil {
		if o.Message != "" {
			return o.Message
		}
		return o.Type
	}
	return string(e)
}

// passThrough keeps a valid JSON line the parser has no type for: its data
// is the line itself, so typed clients still see everything.
func passThrough(b []byte, raw string) agent.Event {
	if !json.Valid(b) || !utf8.Valid(b) {
		return invalid(raw)
	}
	return agent.Event{Type: agent.TypeRaw, Data: json.RawMessage(raw), Raw: raw}
}

func invalid(raw string) agent.Event {
	l := raw
	if len(l) > maxRawError {
		l = strings.ToValidUTF8(l[:maxRawError], "")
	}
	return agent.NewEvent(agent.TypeRaw, struct {
		Error string `json:"error"`
		Line  string `json:"line"`
	}{"invalid stream-json line", l}, raw)
}
