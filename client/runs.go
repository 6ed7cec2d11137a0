package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClaudeRequest is the body of POST /sandbox/{id}/claude (docs/run-events.md
// describes every field). Only Prompt is required.
type ClaudeRequest struct {
	Prompt             string            `json:"prompt"`
	Model              string            `json:"model,omitempty"`
	FallbackModel      string            `json:"fallback_model,omitempty"`
	MaxTurns           int               `json:"max_turns,omitempty"`
	PermissionMode     string            `json:"permission_mode,omitempty"`
	AllowedTools       []string          `json:"allowed_tools,omitempty"`
	DisallowedTools    []string          `json:"disallowed_tools,omitempty"`
	SystemPrompt       string            `json:"system_prompt,omitempty"`
	AppendSystemPrompt string            `json:"append_system_prompt,omitempty"`
	NewSession         bool              `json:"new_session,omitempty"`
	SessionID          string            `json:"session_id,omitempty"`
	ForkSession        bool              `json:"fork_session,omitempty"`
	Cwd                string            `json:"cwd,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	Settings           json.RawMessage   `json:"settings,omitempty"`
	// Permissions is an approval policy ({"allow": [...], "ask": [...],
	// "deny": [...], "timeout_seconds": N, "on_timeout": "deny"}).
	Permissions any `json:"permissions,omitempty"`
	// MCPServers maps a name to a server ({"type": "http", "url": ...} or
	// {"type": "stdio", "command": ...}).
	MCPServers map[string]any `json:"mcp_servers,omitempty"`
	// Attachments: [{"path": "shot.png"}] or [{"data": "<base64>",
	// "media_type": "application/pdf", "name": "spec.pdf"}].
	Attachments []map[string]any `json:"attachments,omitempty"`
}

// Usage is token usage.
type Usage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
}

// Run is an agent run's record.
type Run struct {
	ID            string          `json:"run_id"`
	SandboxID     string          `json:"sandbox_id"`
	OwnerID       string          `json:"owner_id"`
	Prompt        string          `json:"prompt"`
	Options       json.RawMessage `json:"options"`
	Status        string          `json:"status"`
	ResumedFrom   string          `json:"resumed_from,omitempty"`
	SessionID     string          `json:"session_id,omitempty"`
	Model         string          `json:"model,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
	StartedAt     time.Time       `json:"started_at,omitzero"`
	FinishedAt    time.Time       `json:"finished_at,omitzero"`
	Usage         Usage           `json:"usage"`
	CostUSD       float64         `json:"cost_usd"`
	DurationMS    int64           `json:"duration_ms"`
	NumTurns      int             `json:"num_turns"`
	ExitCode      *int            `json:"exit_code,omitempty"`
	Error         string          `json:"error,omitempty"`
	LastSeq       int64           `json:"last_seq"`
	SnapshotError string          `json:"snapshot_error,omitempty"`
}

// RunEvent is one event of a run (docs/run-events.md lists the types and
// their data).
type RunEvent struct {
	RunID string          `json:"run_id"`
	Seq   int64           `json:"seq"`
	Type  string          `json:"type"`
	Time  time.Time       `json:"time"`
	Data  json.RawMessage `json:"data"`
}

// Text is the text of a text_delta or text event ("" for other types).
func (e *RunEvent) Text() string {
	if e.Type != "text_delta" && e.Type != "text" {
		return ""
	}
	var d struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(e.Data, &d)
	return d.Text
}

// DoneData is the data of a run's last event.
type DoneData struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// PermissionRequest is the data of a permission_request event.
type PermissionRequest struct {
	RequestID string          `json:"request_id"`
	ToolName  string          `json:"tool_name"`
	Input     json.RawMessage `json:"input"`
	Summary   string          `json:"summary"`
	ExpiresAt time.Time       `json:"expires_at"`
	OnTimeout string          `json:"on_timeout"`
}

// Decision answers a permission request: Behavior is "allow" or "deny".
type Decision struct {
	Behavior     string          `json:"behavior"`
	Message      string          `json:"message,omitempty"`
	UpdatedInput json.RawMessage `json:"updated_input,omitempty"`
	// Remember "run" applies the answer to the tool for the rest of the run.
	Remember string `json:"remember,omitempty"`
}

// PermissionDecision is how a permission request was settled.
type PermissionDecision struct {
	RequestID    string          `json:"request_id,omitempty"`
	ToolName     string          `json:"tool_name"`
	ToolUseID    string          `json:"tool_use_id,omitempty"`
	Behavior     string          `json:"behavior"`
	Message      string          `json:"message,omitempty"`
	UpdatedInput json.RawMessage `json:"updated_input,omitempty"`
	Source       string          `json:"source"`
	DecidedBy    string          `json:"decided_by,omitempty"`
	Remember     string          `json:"remember,omitempty"`
}

// RunStream is a run's event stream. Next returns its events in order,
// each once: when the connection drops (or the server restarts and says
// so), the stream reconnects with Last-Event-ID and goes on after the
// last event it returned. It ends (io.EOF) after the done event.
type RunStream struct {
	// RunID names the run.
	RunID string

	c        *Client
	ctx      context.Context
	mu       sync.Mutex
	body     io.ReadCloser
	rd       *bufio.Reader
	last     int64
	done     bool
	closed   bool
	retries  int
	maxRetry int
	// Reconnects counts the reconnections so far.
	Reconnects int
}

// StreamOptions tunes a RunStream.
type StreamOptions struct {
	// After starts after this event sequence number (0 = from the start).
	After int64
	// MaxRetries bounds the reconnection attempts in a row without an
	// event in between (0 = 20). Attempts wait 100 ms doubling to 5 s.
	MaxRetries int
}

// Claude starts a Claude Code run in a sandbox and returns its typed
// event stream. The run goes on when the stream is closed; Cancel stops it.
func (c *Client) Claude(ctx context.Context, sandboxID string, req ClaudeRequest) (*RunStream, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/x-ndjson"}}
	res, err := c.Request(ctx, "POST", "/sandbox/"+url.PathEscape(sandboxID)+"/claude?format=ndjson", strings.NewReader(string(b)), hdr)
	if err != nil {
		return nil, err
	}
	id := res.Header.Get("X-Run-ID")
	if id == "" {
		res.Body.Close()
		return nil, errors.New("claude: the answer names no run (X-Run-ID)")
	}
	s := &RunStream{RunID: id, c: c, ctx: ctx, maxRetry: 20}
	s.body, s.rd = res.Body, bufio.NewReaderSize(res.Body, 64<<10)
	return s, nil
}

// RunEvents replays a run's events after o.After and follows it until it
// ends, reconnecting as RunStream describes.
func (c *Client) RunEvents(ctx context.Context, runID string, o StreamOptions) (*RunStream, error) {
	s := &RunStream{RunID: runID, c: c, ctx: ctx, last: o.After, maxRetry: o.MaxRetries}
	if s.maxRetry <= 0 {
		s.maxRetry = 20
	}
	if err := s.connect(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *RunStream) connect() error {
	hdr := http.Header{"Accept": {"application/x-ndjson"}}
	if s.last > 0 {
		hdr.Set("Last-Event-ID", strconv.FormatInt(s.last, 10))
	}
	res, err := s.c.Request(s.ctx, "GET", "/runs/"+url.PathEscape(s.RunID)+"/events?format=ndjson", nil, hdr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		res.Body.Close()
		return errors.New("run stream closed")
	}
	s.body, s.rd = res.Body, bufio.NewReaderSize(res.Body, 64<<10)
	return nil
}

// LastSeq is the sequence number of the last event Next returned.
func (s *RunStream) LastSeq() int64 { return s.last }

// Next returns the next event; io.EOF after the done event.
func (s *RunStream) Next() (*RunEvent, error) {
	for {
		if s.done {
			return nil, io.EOF
		}
		if s.rd == nil {
			if err := s.reconnect(); err != nil {
				return nil, err
			}
			continue
		}
		line, err := s.rd.ReadBytes('\n')
		if err != nil {
			if len(strings.TrimSpace(string(line))) == 0 || !json.Valid(line) {
				s.drop()
				if s.ctx.Err() != nil {
					return nil, s.ctx.Err()
				}
				if s.isClosed() {
					return nil, errors.New("run stream closed")
				}
				continue // reconnect
			}
		}
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var ev RunEvent
		if jerr := json.Unmarshal(line, &ev); jerr != nil {
			return nil, fmt.Errorf("decode run event: %w", jerr)
		}
		if ev.Type == "restarting" && ev.Seq == 0 {
			s.drop() // the server stops: resume (here or on another replica)
			continue
		}
		if ev.Seq != 0 && ev.Seq <= s.last {
			continue // already returned before a reconnection
		}
		s.last, s.retries = ev.Seq, 0
		if ev.Type == "done" {
			s.done = true
			s.drop()
		}
		return &ev, nil
	}
}

func (s *RunStream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *RunStream) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.body != nil {
		s.body.Close()
	}
	s.body, s.rd = nil, nil
}

func (s *RunStream) reconnect() error {
	for {
		if s.retries >= s.maxRetry {
			return fmt.Errorf("run %s: the event stream dropped %d times in a row", s.RunID, s.retries)
		}
		if s.retries > 0 {
			d := min(100*time.Millisecond<<(s.retries-1), 5*time.Second)
			t := time.NewTimer(d)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return s.ctx.Err()
			case <-t.C:
			}
		}
		s.retries++
		// A stream that ended without the done event, of a run that has
		// ended, past its last event (e.g. After beyond it): nothing follows.
		if r, err := s.c.Run(s.ctx, s.RunID); err == nil && r.Status != "queued" && r.Status != "running" && s.last >= r.LastSeq {
			s.done = true
			return io.EOF
		}
		err := s.connect()
		if err == nil {
			s.Reconnects++
			return nil
		}
		var ae *Error
		if errors.As(err, &ae) && ae.StatusCode < 500 && ae.StatusCode != http.StatusTooManyRequests {
			return err // 401, 404: reconnecting will not help
		}
		if s.ctx.Err() != nil || s.isClosed() {
			return err
		}
	}
}

// Close ends the stream (the run goes on).
func (s *RunStream) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.drop()
	return nil
}

// Wait reads the stream to its end and returns the run's final status.
func (s *RunStream) Wait() (*DoneData, error) {
	for {
		ev, err := s.Next()
		if err != nil {
			return nil, err
		}
		if ev.Type == "done" {
			var d DoneData
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return nil, fmt.Errorf("decode done event: %w", err)
			}
			return &d, nil
		}
	}
}

// Runs lists a sandbox's runs, newest first.
func (c *Client) Runs(ctx context.Context, sandboxID string) ([]Run, error) {
	var out []Run
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(sandboxID)+"/runs", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Run returns one run.
func (c *Client) Run(ctx context.Context, runID string) (*Run, error) {
	var out Run
	if err := c.Do(ctx, "GET", "/runs/"+url.PathEscape(runID), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Cancel cancels a run (409 once it has ended).
func (c *Client) Cancel(ctx context.Context, runID string) (*Run, error) {
	var out Run
	if err := c.Do(ctx, "POST", "/runs/"+url.PathEscape(runID)+"/cancel", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AnswerPermission answers a permission_request event of a run.
func (c *Client) AnswerPermission(ctx context.Context, runID, requestID string, d Decision) (*PermissionDecision, error) {
	var out PermissionDecision
	if err := c.Do(ctx, "POST", "/runs/"+url.PathEscape(runID)+"/permissions/"+url.PathEscape(requestID), d, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
