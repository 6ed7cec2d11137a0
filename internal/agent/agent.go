// Package agent runs coding agents (the Claude Code CLI) inside sandboxes:
// the Run record, the typed Event model, the durable per-run event log,
// the fan-out Hub that serves replay + live events to any number of
// subscribers, usage totals, and the Service that starts, follows,
// cancels and recovers runs.
package agent

import (
	"context"
	"encoding/json"
	"time"
)

// Status is a run's lifecycle state.
type Status string

// The run states. Queued and Running are active; the rest are final.
const (
	Queued      Status = "queued"
	Running     Status = "running"
	Succeeded   Status = "succeeded"
	Failed      Status = "failed"
	Cancelled   Status = "cancelled"
	Interrupted Status = "interrupted"
)

// Active reports whether a run in this state may still produce events.
func (s Status) Active() bool { return s == Queued || s == Running }

// Event types. Every stream-json line of the CLI becomes one or more of
// these; lines the parser does not know become TypeRaw, never dropped.
const (
	TypeStarted        = "run.started"      // system/init: session_id, model
	TypeText           = "text"             // assistant text
	TypeTextDelta      = "text_delta"       // a piece of text while the model streams it (DeltaData)
	TypeThinkingDelta  = "thinking_delta"   // a piece of thinking while the model streams it
	TypeToolInputDelta = "tool_input_delta" // a piece of a tool call's input JSON while it streams
	TypeToolUse        = "tool_use"         // the model calls a tool
	TypeToolResult     = "tool_result"      // the tool's answer
	TypeRetry          = "retry"            // the CLI retries a failed API call
	TypeUsage          = "usage"            // tokens and cost (gateway per call; CLI totals)
	TypeError          = "error"            // an API or process error
	TypeResult         = "result"           // the CLI's final result line
	TypeDone           = "done"             // the run ended; data has the final status
	TypeSnapshotError  = "snapshot_error"   // the after-run snapshot failed (retried in the background)
	TypeDelivery       = "delivery"         // the deliver option's commit, push and pull request (or why not)
	TypeRaw            = "raw"              // anything else, passed through
)

// Usage counts tokens.
type Usage struct {
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens"`
}

// Add returns u + o.
func (u Usage) Add(o Usage) Usage {
	return Usage{
		InputTokens:         u.InputTokens + o.InputTokens,
		OutputTokens:        u.OutputTokens + o.OutputTokens,
		CacheReadTokens:     u.CacheReadTokens + o.CacheReadTokens,
		CacheCreationTokens: u.CacheCreationTokens + o.CacheCreationTokens,
	}
}

// IsZero reports whether no tokens were counted.
func (u Usage) IsZero() bool { return u == Usage{} }

// Options are the per-run choices a caller may make (the request body of
// POST /sandbox/{id}/claude minus the prompt).
type Options struct {
	Model              string   `json:"model,omitempty"`
	FallbackModel      string   `json:"fallback_model,omitempty"`
	MaxTurns           int      `json:"max_turns,omitempty"`
	PermissionMode     string   `json:"permission_mode,omitempty"`
	AllowedTools       []string `json:"allowed_tools,omitempty"`
	DisallowedTools    []string `json:"disallowed_tools,omitempty"`
	SystemPrompt       string   `json:"system_prompt,omitempty"`
	AppendSystemPrompt string   `json:"append_system_prompt,omitempty"`
	// NewSession starts a new session instead of resuming the sandbox's
	// last one; SessionID resumes that session instead (one of this
	// sandbox's runs must have reported it), and ForkSession resumes it
	// under a new session id.
	NewSession  bool   `json:"new_session,omitempty"`
	SessionID   string `json:"session_id,omitempty"`
	ForkSession bool   `json:"fork_session,omitempty"`
	// Cwd is the CLI's working directory, /workspace or inside it
	// (sessions resume only from the directory they were started in).
	Cwd string `json:"cwd,omitempty"`
	// Env is added to the CLI's environment. Its values may be secrets:
	// they are not stored (EnvKeys records the names) and are redacted
	// from the run's events.
	Env     map[string]string `json:"-"`
	EnvKeys []string          `json:"env_keys,omitempty"`
	// Settings is a Claude Code settings object (--settings), hooks
	// included. Not stored: it may hold secrets (its env).
	Settings json.RawMessage `json:"-"`
	// Permissions settles tool calls by name and asks about the rest
	// (approvals.go); with it, or with PermissionMode "ask", the run's
	// tool calls wait for an answer.
	Permissions *PermissionPolicy `json:"permissions,omitempty"`
	// MCPServers are the run's MCP servers (mcpservers.go). Not stored:
	// MCPServerNames records their names.
	MCPServers     map[string]MCPServer `json:"-"`
	MCPServerNames []string             `json:"mcp_servers,omitempty"`
	// Attachments go to the model with the prompt (attachments.go). Not
	// stored: AttachmentNames records their names.
	Attachments     []Attachment `json:"-"`
	AttachmentNames []string     `json:"attachments,omitempty"`
	// Deliver commits the run's changes to a branch, pushes it through
	// the credential broker and opens a pull request when the run
	// succeeds (deliver.go).
	Deliver *Deliver `json:"deliver,omitempty"`
	// StartedBy and StartedByEmail name the user who sent the prompt (the
	// sandbox's owner, or someone it is shared with); set by the server,
	// never by the request.
	StartedBy      string `json:"started_by,omitempty"`
	StartedByEmail string `json:"started_by_email,omitempty"`
}

// Run is the persisted record of one agent run.
type Run struct {
	ID        string  `json:"run_id"`
	SandboxID string  `json:"sandbox_id"`
	OwnerID   string  `json:"owner_id"`
	Prompt    string  `json:"prompt"`
	Options   Options `json:"options"`
	Status    Status  `json:"status"`
	// ResumedFrom is the session the run was asked to resume ("" = new).
	ResumedFrom string    `json:"resumed_from,omitempty"`
	SessionID   string    `json:"session_id,omitempty"`
	Model       string    `json:"model,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Usage       Usage     `json:"usage"`
	// CostNanoUSD is the cost in billionths of a US dollar (exact integer sums).
	CostNanoUSD int64  `json:"-"`
	NumTurns    int    `json:"num_turns"`
	ExitCode    *int   `json:"exit_code,omitempty"`
	Error       string `json:"error,omitempty"`
	LastSeq     int64  `json:"last_seq"`
	// SnapshotError says why the workspace snapshot after the run failed;
	// the server retries it and clears this once one is stored.
	SnapshotError string `json:"snapshot_error,omitempty"`
	// Replica is the server process executing the run (see Store.ReplicaAlive).
	Replica string `json:"-"`
}

// CostUSD is the run's cost in US dollars.
func (r Run) CostUSD() float64 { return float64(r.CostNanoUSD) / 1e9 }

// MarshalJSON adds cost_usd and duration_ms to the stored fields.
func (r Run) MarshalJSON() ([]byte, error) {
	type plain Run
	var dur int64
	if !r.StartedAt.IsZero() && !r.FinishedAt.IsZero() {
		dur = r.FinishedAt.Sub(r.StartedAt).Milliseconds()
	}
	return json.Marshal(struct {
		plain
		CostUSD    float64 `json:"cost_usd"`
		DurationMS int64   `json:"duration_ms,omitempty"`
	}{plain(r), r.CostUSD(), dur})
}

// Event is one entry of a run's durable event log. Seq starts at 1 and has
// no gaps; it is the SSE id, so a client resumes with Last-Event-ID.
type Event struct {
	RunID string          `json:"run_id"`
	Seq   int64           `json:"seq"`
	Type  string          `json:"type"`
	Time  time.Time       `json:"time"`
	Data  json.RawMessage `json:"data"`
	// Raw is the CLI line the event came from ("" for service events).
	Raw string `json:"-"`
}

// RunToken is the stored (hashed) form of a run-scoped gateway token.
type RunToken struct {
	Hash      string
	RunID     string
	SandboxID string
	UserID    string
	CreatedAt time.Time
}

// Principal is who a gateway credential belongs to.
type Principal struct {
	UserID    string
	SandboxID string // "" for user API tokens
	RunID     string // "" for user API tokens
}

// UsageRecord is one metered LLM call (one gateway request).
type UsageRecord struct {
	ID          string        `json:"id"`
	Time        time.Time     `json:"time"`
	UserID      string        `json:"user_id"`
	SandboxID   string        `json:"sandbox_id,omitempty"`
	RunID       string        `json:"run_id,omitempty"`
	Provider    string        `json:"provider"`
	Model       string        `json:"model"`
	Usage       Usage         `json:"usage"`
	CostNanoUSD int64         `json:"-"`
	Latency     time.Duration `json:"-"`
	Status      int           `json:"status"` // upstream HTTP status
}

// UsageGroup is one row of a usage summary.
type UsageGroup struct {
	Key string `json:"key"` // the day (YYYY-MM-DD), model, sandbox ID or user ID
	// Label names the key for people where the ID does not: the user's
	// email (group_by=user).
	Label       string `json:"label,omitempty"`
	Requests    int64  `json:"requests"`
	Usage       Usage  `json:"usage"`
	CostNanoUSD int64  `json:"-"`
}

// MarshalJSON adds cost_usd.
func (g UsageGroup) MarshalJSON() ([]byte, error) {
	type plain UsageGroup
	return json.Marshal(struct {
		plain
		CostUSD float64 `json:"cost_usd"`
	}{plain(g), float64(g.CostNanoUSD) / 1e9})
}

// UsageQuery selects usage records for a summary.
type UsageQuery struct {
	UserID string // "" = every user (admins only)
	// TeamMemberID, with GroupBy "team", keeps the teams this user is a
	// member of (any role); "" = every team.
	TeamMemberID string
	From         time.Time
	To           time.Time
	GroupBy      string // one of UsageGroupBys
}

// UsageGroupBys are the groupings of a usage summary. A new one is one
// more name here and one more key in the store's summary.
var UsageGroupBys = []string{"day", "model", "sandbox", "user", "team"}

// Store is the persistence the agent package consumes (internal/store
// implements it on SQLite and PostgreSQL).
type Store interface {
	// CreateRun inserts a queued run. If the sandbox already has an active
	// run it returns an errs.Conflict error.
	CreateRun(ctx context.Context, r Run) error
	GetRun(ctx context.Context, id string) (Run, error)
	// ActiveRun returns the sandbox's queued or running run, or an error
	// wrapping errs.ErrNotFound.
	ActiveRun(ctx context.Context, sandboxID string) (Run, error)
	ListRuns(ctx context.Context, sandboxID string, limit int) ([]Run, error)
	// UpdateRun writes the mutable fields (status, session, model, timings,
	// usage, cost, turns, exit code, error) of an active run; a run that
	// has ended already (e.g. interrupted by another replica) is an
	// errs.Conflict error and stays as it is.
	UpdateRun(ctx context.Context, r Run) error
	// LastSessionID is the session of the sandbox's most recent run that
	// reported one ("" if none).
	LastSessionID(ctx context.Context, sandboxID string) (string, error)
	// HasSession reports whether one of the sandbox's runs reported session.
	HasSession(ctx context.Context, sandboxID, session string) (bool, error)
	// AppendRunEvent persists ev (RunID, Seq unique) and advances last_seq.
	AppendRunEvent(ctx context.Context, ev Event) error
	// RunEvents returns events with Seq > after in order, at most limit (0 = all).
	RunEvents(ctx context.Context, runID string, after int64, limit int) ([]Event, error)
	// ReplicaAlive records that server process id, on host, is alive at
	// `at`; renewed is false when it was not registered (the first call, or
	// after another replica took it for dead).
	ReplicaAlive(ctx context.Context, id, host string, at time.Time) (renewed bool, err error)
	// RemoveReplica forgets a server process that stopped cleanly.
	RemoveReplica(ctx context.Context, id string) error
	// InterruptOrphanedRuns marks interrupted the active runs whose
	// replica is neither self nor seen at or after staleBefore, and returns
	// them; each run is returned to one caller only.
	InterruptOrphanedRuns(ctx context.Context, self string, staleBefore, at time.Time, reason string) ([]Run, error)
	// SetRunSnapshotError records why the run's after-run snapshot failed
	// ("" clears it), whatever the run's state.
	SetRunSnapshotError(ctx context.Context, runID, msg string) error
	// AddRunUsage adds tokens and cost to a run's totals.
	AddRunUsage(ctx context.Context, runID string, u Usage, costNanoUSD int64) error
	CreateRunToken(ctx context.Context, t RunToken) error
	RunToken(ctx context.Context, hash string) (RunToken, error)
	DeleteRunTokens(ctx context.Context, runID string) error
	InsertUsage(ctx context.Context, rec UsageRecord) error
	// StoreUsage inserts rec and adds it to its run's totals (if any) in
	// one transaction; a record already stored (same ID) is not added again.
	StoreUsage(ctx context.Context, rec UsageRecord) error
	UsageSummary(ctx context.Context, q UsageQuery) ([]UsageGroup, error)
	ListUsage(ctx context.Context, q UsageQuery, limit int) ([]UsageRecord, error)
}
