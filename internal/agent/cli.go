package agent

import "encoding/json"

// CommandRequest is what a CLI adapter needs to build one run's command.
type CommandRequest struct {
	Prompt        string
	Options       Options
	ResumeSession string // "" = start a new session
	// BaseURL and APIKey are the model API endpoint and credential the CLI
	// uses: the gateway and a run-scoped token, or (direct mode) the real ones.
	BaseURL string
	APIKey  string
	// Root reports that the command runs as root in an isolated sandbox.
	Root bool
	// MCPConfig is the --mcp-config of the run's MCP servers (the
	// approval server among them when Ask).
	MCPConfig string
	// Ask: tool calls wait for the approval server (ApprovalTool).
	Ask bool
	// StreamInput: the prompt (with its attachments) arrives on stdin as
	// a stream-json user message, not as an argument.
	StreamInput bool
}

// CLI adapts one agent CLI (Claude Code) to the run service.
type CLI interface {
	// Command returns the argv and environment of one run. The command
	// runs with cwd /workspace.
	Command(req CommandRequest) (argv []string, env map[string]string)
	// NewParser returns a parser for one run's output.
	NewParser() Parser
}

// Parser turns the CLI's output lines into events. It never fails: a line
// it cannot understand becomes a TypeRaw event.
type Parser interface {
	// Parse returns the events of one line (without its newline). Seq,
	// Time and RunID are filled in by the event log.
	Parse(line []byte) []Event
}

// StartedData is the data of a TypeStarted event.
type StartedData struct {
	SessionID      string `json:"session_id"`
	Model          string `json:"model"`
	Cwd            string `json:"cwd,omitempty"`
	PermissionMode string `json:"permission_mode,omitempty"`
	Version        string `json:"claude_code_version,omitempty"`
}

// TextData is the data of a TypeText event.
type TextData struct {
	Text      string `json:"text"`
	MessageID string `json:"message_id,omitempty"`
	// Streamed: text_delta events carried this text before it (a reader
	// that showed them has it already).
	Streamed bool `json:"streamed,omitempty"`
}

// DeltaData is the data of a TypeTextDelta, TypeThinkingDelta or
// TypeToolInputDelta event: a piece of one content block of a message
// while the model streams it. Offset is where Text starts in the block (in
// bytes of its text, thinking or input JSON), so a client that missed
// nothing appends, and one that resumes mid-block knows what it lacks.
// The block arrives whole afterwards as a text or tool_use event.
type DeltaData struct {
	MessageID string `json:"message_id"`
	Index     int    `json:"index"`
	Offset    int    `json:"offset"`
	Text      string `json:"text"`
	// ToolUseID and Name name the tool call of a tool_input_delta.
	ToolUseID string `json:"tool_use_id,omitempty"`
	Name      string `json:"name,omitempty"`
}

// ToolUseData is the data of a TypeToolUse event.
type ToolUseData struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// ToolResultData is the data of a TypeToolResult event. Content is the
// text of the result (text blocks joined).
type ToolResultData struct {
	ToolUseID string `json:"tool_use_id"`
	Content   string `json:"content"`
	IsError   bool   `json:"is_error"`
}

// RetryData is the data of a TypeRetry event.
type RetryData struct {
	Attempt      int     `json:"attempt"`
	MaxRetries   int     `json:"max_retries"`
	RetryDelayMS float64 `json:"retry_delay_ms"`
	ErrorStatus  int     `json:"error_status,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// ErrorData is the data of a TypeError event.
type ErrorData struct {
	Message string `json:"message"`
	Kind    string `json:"kind,omitempty"` // e.g. server_error, authentication_failed, stderr
}

// ResultData is the data of a TypeResult event.
type ResultData struct {
	Subtype        string   `json:"subtype"`
	IsError        bool     `json:"is_error"`
	Result         string   `json:"result,omitempty"`
	NumTurns       int      `json:"num_turns"`
	DurationMS     int64    `json:"duration_ms"`
	DurationAPIMS  int64    `json:"duration_api_ms"`
	TotalCostUSD   float64  `json:"total_cost_usd"`
	Usage          Usage    `json:"usage"`
	SessionID      string   `json:"session_id,omitempty"`
	StopReason     string   `json:"stop_reason,omitempty"`
	TerminalReason string   `json:"terminal_reason,omitempty"`
	APIErrorStatus int      `json:"api_error_status,omitempty"`
	Errors         []string `json:"errors,omitempty"`
}

// UsageData is the data of a TypeUsage event.
type UsageData struct {
	Source  string  `json:"source"` // gateway (one API call) | cli (the CLI's run totals)
	Model   string  `json:"model,omitempty"`
	Usage   Usage   `json:"usage"`
	CostUSD float64 `json:"cost_usd"`
}

// DoneData is the data of the final TypeDone event.
type DoneData struct {
	Status   Status `json:"status"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`
}

// NewEvent builds an unsequenced event with data marshalled from v.
func NewEvent(typ string, v any, raw string) Event {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{}`)
	}
	return Event{Type: typ, Data: b, Raw: raw}
}
