package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/presence"
)

// defaultStreamDrain is Deps.StreamDrain's default.
const defaultStreamDrain = 5 * time.Second

// restartingData is the data of the event that ends a run's stream when
// the server stops before the run did.
type restartingData struct {
	Type        string `json:"type"`
	Message     string `json:"message"`
	LastEventID int64  `json:"last_event_id"`
}

// writeRestarting ends a stream of a run that goes on: the server stops,
// and the client resumes (here or on another replica) with Last-Event-ID.
// The event has no id, so it does not move the client's Last-Event-ID.
func writeRestarting(out eventWriter, format string, lastID int64) error {
	b, _ := json.Marshal(restartingData{Type: "restarting", Message: "server restarting, resume with Last-Event-ID", LastEventID: lastID})
	if format == "ndjson" {
		return out.Event("", "", b)
	}
	return out.Event("", "restarting", b)
}

// runEventSchemas documents the data of each typed run event.
var runEventSchemas = map[string]any{
	agent.TypeStarted: agent.StartedData{}, agent.TypeText: agent.TextData{},
	agent.TypeTextDelta: agent.DeltaData{}, agent.TypeThinkingDelta: agent.DeltaData{}, agent.TypeToolInputDelta: agent.DeltaData{},
	agent.TypeToolUse: agent.ToolUseData{}, agent.TypeToolResult: agent.ToolResultData{},
	agent.TypePermissionRequest: agent.PermissionRequestData{}, agent.TypePermissionDecision: agent.PermissionDecisionData{},
	agent.TypeRetry: agent.RetryData{}, agent.TypeUsage: agent.UsageData{}, agent.TypeError: agent.ErrorData{},
	agent.TypeResult: agent.ResultData{}, agent.TypeSnapshotError: agent.SnapshotErrorData{}, agent.TypeDone: agent.DoneData{},
	"restarting": restartingData{}, "presence": presenceResponse{},
}

// runOps documents the agent run and usage routes.
var runOps = []apiOp{
	{Method: "POST", Path: "/sandbox/{id}/claude", Summary: "Start a Claude Code run and stream it: by default the original plain form (`data: <text line>`, tool activity lines, `data: [DONE]`); `?format=events` gives typed events (`event: <type>`, JSON data); every event has `id:` for Last-Event-ID. The run outlives the request; X-Run-ID names it. When the server stops before the run ends, the stream ends with an `event: restarting` (no id; JSON data with last_event_id): reconnect to GET /runs/{id}/events with Last-Event-ID", Request: claudeRequest{}, Stream: true, Errors: []int{402, 409, 429}, Events: runEventSchemas,
		Example: map[string]any{"prompt": "list the files and summarise the README"}},
	{Method: "GET", Path: "/sandbox/{id}/runs", Summary: "The sandbox's runs, newest first", Response: []agent.Run{}},
	{Method: "GET", Path: "/runs/{id}", Summary: "One run: status, prompt, session, timings, usage, cost, exit code, and snapshot_error while its after-run snapshot has failed and is being retried", Response: agent.Run{}},
	{Method: "GET", Path: "/runs/{id}/events", Summary: "Replay and follow a run's events after Last-Event-ID (or ?after=); typed by default, `?format=plain` for the plain form. Event types (docs/run-events.md): run.started, text_delta, thinking_delta, tool_input_delta, text, tool_use, permission_request, permission_decision, tool_result, retry, usage, error, result, snapshot_error (the after-run snapshot failed; the server retries it and clears the run's snapshot_error once one is stored), done. A stream the server stops before the run ends ends with `event: restarting` (no id): resume with Last-Event-ID", Stream: true, Events: runEventSchemas},
	{Method: "POST", Path: "/runs/{id}/cancel", Summary: "Cancel a run: SIGINT, then SIGKILL after a grace period; it ends cancelled", Response: agent.Run{}, Errors: []int{409}},
	{Method: "POST", Path: "/runs/{id}/permissions/{request_id}", Summary: "Answer a pending tool approval (a permission_request event of a run started with permission_mode \"ask\" or permissions): allow (optionally with updated_input replacing the tool's input) or deny (with a message the agent reads); remember \"run\" applies the answer to the tool for the rest of the run. The first answer wins: a later one is 409. Recorded as a permission_decision event naming who answered. On a replica other than the run's, the answer is passed on (202) and the event says whether it was the first", Request: agent.Decision{}, Response: agent.PermissionDecisionData{}, Errors: []int{409}},
	{Method: "GET", Path: "/usage", Summary: "Your LLM usage (tokens, cost) in [from, to) grouped by day, model, sandbox, user (each group's label is the user's email) or team (every call from the team's sandboxes, whoever made it, labelled by the team's name: an admin sees every team, anyone else the teams they are a member of); admins may pass user (empty: every user), and group_by=user without user gives an admin every user's usage, a member their own", Response: usageResponse{}},
}

type claudeRequest struct {
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
	// Permissions: approvals (docs/run-events.md).
	Permissions *agent.PermissionPolicy `json:"permissions,omitempty"`
	// MCPServers: stdio servers run in the sandbox, http ones through
	// the server's proxy; values may name secrets, "${secret:NAME}" (the caller's)
	// or "${secret:team:NAME}" (the sandbox's team's).
	MCPServers map[string]agent.MCPServer `json:"mcp_servers,omitempty"`
	// Attachments: images, PDFs or text files for the model, each a
	// sandbox path or base64 data (with media_type).
	Attachments []agent.Attachment `json:"attachments,omitempty"`
	// Deliver: on success, commit to a branch, push it and open a pull
	// request (docs/repositories.md).
	Deliver *agent.Deliver `json:"deliver,omitempty"`
}

type usageResponse struct {
	From    time.Time          `json:"from"`
	To      time.Time          `json:"to"`
	GroupBy string             `json:"group_by"`
	UserID  string             `json:"user_id,omitempty"`
	Groups  []agent.UsageGroup `json:"groups"`
	Total   agent.UsageGroup   `json:"total"`
}

func (s *server) mountRuns(r chi.Router) {
	r.Post("/sandbox/{id}/claude", s.api(s.handleClaude))
	r.Get("/sandbox/{id}/runs", s.api(s.handleListRuns))
	r.Get("/runs/{id}", s.api(s.handleGetRun))
	r.Get("/runs/{id}/events", s.api(s.handleRunEvents))
	r.Post("/runs/{id}/cancel", s.api(s.handleCancelRun))
	r.Post("/runs/{id}/permissions/{request_id}", s.api(s.handleDecide))
	r.Get("/usage", s.api(s.handleUsage))
}

// mountGateway mounts the LLM gateway, which authenticates its own
// callers (run tokens or API tokens in x-api-key / Bearer) and so sits
// outside session auth and CSRF checks.
func (s *server) mountGateway(r chi.Router) {
	gw := s.deps.Gateway
	if gw == nil {
		gw = s.api(func(w http.ResponseWriter, r *http.Request) error {
			return errs.E(errs.Unavailable, "the LLM gateway is not configured on this server")
		})
	}
	for _, op := range gatewayOps {
		r.Method(op.Method, op.Path, gw)
	}
}

// gatewayOps are the gateway's routes. They authenticate their callers
// themselves (a run-scoped token or an API token in x-api-key or
// Authorization: Bearer), so they are public to the session middleware.
var gatewayOps = []apiOp{
	{Method: "HEAD", Path: "/llm/anthropic", Summary: "Gateway probe (Claude Code sends HEAD to its base URL)", Public: true, NoDatabase: true},
	{Method: "POST", Path: "/llm/anthropic/v1/messages", Summary: "Anthropic Messages API passthrough (streaming and not): the server adds the real key, streams the answer through unchanged and meters usage; authenticate with a run-scoped or API token as x-api-key", Public: true, Stream: true, ProviderErrors: true, Errors: []int{401, 402, 429, 502}},
	{Method: "POST", Path: "/llm/anthropic/v1/messages/count_tokens", Summary: "Anthropic token counting passthrough", Public: true, ProviderErrors: true, Errors: []int{401, 402, 429, 502}},
	{Method: "POST", Path: "/llm/openai/v1/chat/completions", Summary: "OpenAI Chat Completions passthrough, byte-faithful, metered; Bearer run-scoped or API token", Public: true, Stream: true, ProviderErrors: true, Errors: []int{401, 402, 429, 502}},
	{Method: "POST", Path: "/llm/openai/v1/responses", Summary: "OpenAI Responses passthrough, byte-faithful, metered; Bearer run-scoped or API token", Public: true, Stream: true, ProviderErrors: true, Errors: []int{401, 402, 429, 502}},
	{Method: "GET", Path: "/llm/openai/v1/models", Summary: "OpenAI model list passthrough", Public: true, ProviderErrors: true, Errors: []int{401, 402, 429, 502}},
	{Method: "POST", Path: "/llm/mcp", Summary: "The approval MCP server (streamable HTTP, stateless) that runs with permission_mode \"ask\" or permissions call as their permission prompt tool; Bearer run-scoped token", Public: true, Stream: true, ProviderErrors: true, Errors: []int{401}},
	{Method: "POST", Path: "/llm/mcp-proxy/{name}", Summary: "A run's remote MCP server, proxied: the server adds the configured headers (with the secrets they name) and forwards to the server's URL, so the credentials never enter the sandbox; Bearer run-scoped token", Public: true, Stream: true, ProviderErrors: true, Errors: []int{401}},
	{Method: "GET", Path: "/llm/mcp-proxy/{name}", Summary: "A run's remote MCP server, proxied (the streamable HTTP GET stream)", Public: true, Stream: true, ProviderErrors: true, Errors: []int{401}},
	{Method: "DELETE", Path: "/llm/mcp-proxy/{name}", Summary: "A run's remote MCP server, proxied (session end)", Public: true, ProviderErrors: true, Errors: []int{401}},
}

func (s *server) runs() (*agent.Service, error) {
	if s.deps.Runs == nil {
		return nil, errs.E(errs.Unavailable, "agent runs are not configured on this server")
	}
	return s.deps.Runs, nil
}

func (s *server) handleClaude(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	var req claudeRequest
	if err := decodeJSONLimit(r, &req, s.deps.MaxJSONBody); err != nil {
		return err
	}
	if req.PermissionMode != "" && !slices.Contains(claude.PermissionModes, req.PermissionMode) {
		return errs.Field("permission_mode", "must be one of "+strings.Join(claude.PermissionModes, ", "))
	}
	format, err := streamFormat(r, "plain")
	if err != nil {
		return err
	}
	run, err := svc.Start(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), req.Prompt, agent.Options{
		Model: req.Model, FallbackModel: req.FallbackModel, MaxTurns: req.MaxTurns, PermissionMode: req.PermissionMode,
		AllowedTools: req.AllowedTools, DisallowedTools: req.DisallowedTools,
		SystemPrompt: req.SystemPrompt, AppendSystemPrompt: req.AppendSystemPrompt,
		NewSession: req.NewSession, SessionID: req.SessionID, ForkSession: req.ForkSession,
		Cwd: req.Cwd, Env: req.Env, Settings: req.Settings, Permissions: req.Permissions, MCPServers: req.MCPServers, Attachments: req.Attachments,
		Deliver: req.Deliver, StartedBy: currentUser(r).ID, StartedByEmail: currentUser(r).Email,
	})
	if err != nil {
		return err
	}
	w.Header().Set("X-Run-ID", run.ID)
	w.Header().Set("Location", "/runs/"+run.ID)
	return s.streamRun(w, r, svc, run.ID, run.SandboxID, 0, format)
}

// streamFormat picks plain | events | ndjson from ?format= and Accept.
func streamFormat(r *http.Request, def string) (string, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "":
		if strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
			return "ndjson", nil
		}
		return def, nil
	case "plain", "events", "ndjson":
		return f, nil
	default:
		return "", errs.Field("format", "must be plain, events or ndjson")
	}
}

// parseAfter reads the resume position: Last-Event-ID wins over ?after=.
func parseAfter(r *http.Request) (int64, error) {
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		return parseSeq("Last-Event-ID", v)
	}
	if v := r.URL.Query().Get("after"); v != "" {
		return parseSeq("after", v)
	}
	return 0, nil
}

func parseSeq(field, v string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, errs.Field(field, "must be a non-negative event id")
	}
	return n, nil
}

func (s *server) handleRunEvents(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	after, err := parseAfter(r)
	if err != nil {
		return err
	}
	format, err := streamFormat(r, "events")
	if err != nil {
		return err
	}
	return s.streamRun(w, r, svc, chi.URLParam(r, "id"), "", after, format)
}

// streamRun writes a run's events after `after` and follows it until it
// is done, the client leaves or the server stops (the client then
// reconnects with Last-Event-ID and loses nothing). A client that reads
// slowly only falls behind: it catches up from the store. The stream
// counts as watching the run's sandbox (sandboxID, looked up when ""), and
// the typed form gets a presence event when the sandbox's viewers change.
func (s *server) streamRun(w http.ResponseWriter, r *http.Request, svc *agent.Service, runID, sandboxID string, after int64, format string) error {
	s.streams.add()
	defer s.streams.done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sub, err := svc.Subscribe(ctx, sandboxOwner(r), runID, after)
	if err != nil {
		return err
	}
	defer sub.Close()
	if a := accessOf(r); sandboxID == "" && a != nil {
		sandboxID = a.SandboxID // the authorization gate resolved the run's sandbox
	}
	if sandboxID == "" {
		run, err := svc.Get(ctx, sandboxOwner(r), runID)
		if err != nil {
			return err
		}
		sandboxID = run.SandboxID
	}
	defer s.watching(r, sandboxID, presence.KindRun, runID)()
	// Viewers joining or leaving wake the loop, which writes them (typed
	// form only: the plain form is the agent's text, ndjson the event log).
	var viewersChanged atomic.Bool
	if format == "events" {
		defer s.presence.Subscribe(sandboxID, func() { viewersChanged.Store(true); sub.Wake() })()
	}
	// The server stopping gives the run StreamDrain to end (shutdown
	// interrupts it, and its done event follows); then the stream ends
	// with a restarting event, and the client resumes elsewhere.
	var restart atomic.Bool
	if s.deps.Stopping != nil {
		drain := s.deps.StreamDrain
		if drain <= 0 {
			drain = defaultStreamDrain
		}
		streamEnded := make(chan struct{})
		defer close(streamEnded)
		defer context.AfterFunc(s.deps.Stopping, func() {
			t := time.NewTimer(drain)
			defer t.Stop()
			select {
			case <-t.C:
				restart.Store(true)
				sub.Wake()
			case <-streamEnded:
			}
		})()
	}
	out, err := openEventStream(w, r, format, cancel)
	if err != nil {
		return err
	}
	defer out.Close()
	pl := &plain{}
	lastID := after
	write := func(ev agent.Event) (bool, error) {
		lastID = ev.Seq
		done := ev.Type == agent.TypeDone
		id := strconv.FormatInt(ev.Seq, 10)
		switch format {
		case "events":
			return done, out.Event(id, ev.Type, ev.Data)
		case "ndjson":
			b, _ := json.Marshal(ev)
			return done, out.Event(id, "", b)
		}
		if line, ok := pl.line(ev); ok {
			return done, out.Event(id, "", []byte(line))
		}
		return done, nil
	}
	// Over a connection of its own, the hub's writers deliver the run's
	// live events to an idle stream themselves (with many subscribers; see
	// agent.Subscription.SetDirect), without waking this goroutine.
	var directErr error
	finished := false
	if cs, ok := out.(*connStream); ok && cs.raw != nil {
		sub.SetDirect(func(evs []agent.Event) bool {
			cs.nonblock = true
			defer func() { cs.nonblock = false }()
			for _, ev := range evs {
				done, err := write(ev)
				if err != nil {
					directErr = err
					return false
				}
				if done {
					finished = true
					return false
				}
			}
			return len(cs.pending) == 0
		})
	}
	// The loop waits on one channel only (a receive is much cheaper than a
	// select, and with thousands of subscribers that is most of the
	// server's work per event besides the write itself): the client
	// leaving, the server stopping and the heartbeat each wake it through
	// the subscription.
	defer context.AfterFunc(ctx, sub.Wake)()
	var ping atomic.Bool
	every := s.deps.Heartbeat
	if every <= 0 {
		every = sseHeartbeat
	}
	hb := time.AfterFunc(every, func() { ping.Store(true); sub.Wake() })
	defer hb.Stop()
	// step takes and writes what there is, with the subscription locked
	// against the hub's writers; it reports whether the stream ended and
	// whether to wait before the next step.
	step := func() (end, wait bool, err error) {
		sub.Lock()
		defer sub.Unlock()
		if ctx.Err() != nil {
			return true, false, nil // the client left (a direct write may have noticed first) or the server stops
		}
		if cs, ok := out.(*connStream); ok {
			if err := cs.flush(); err != nil {
				return true, false, err
			}
		}
		if directErr != nil || finished {
			return true, false, directErr
		}
		if restart.Load() {
			return true, false, writeRestarting(out, format, lastID)
		}
		if viewersChanged.Swap(false) {
			// No id: presence is not part of the run's log and does not
			// move the client's Last-Event-ID.
			b, _ := json.Marshal(presenceResponse{Viewers: s.presence.Viewers(sandboxID)})
			if err := out.Event("", "presence", b); err != nil {
				return true, false, err
			}
		}
		evs, err := sub.Take(ctx)
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return true, false, nil // the run is over and its done event was sent, or the client left
		}
		if err != nil {
			return true, false, err // the client resumes with Last-Event-ID
		}
		for _, ev := range evs {
			if done, err := write(ev); err != nil || done {
				return true, false, err
			}
		}
		if len(evs) > 0 {
			return false, false, nil
		}
		if ping.Swap(false) {
			if err := out.Ping(); err != nil {
				return true, false, err
			}
			hb.Reset(every)
		}
		sub.Park()
		return false, true, nil
	}
	for {
		end, wait, err := step()
		if end {
			return err
		}
		if wait {
			<-sub.Ready()
		}
	}
}

type eventWriter interface {
	Event(id, event string, data []byte) error
	Ping() error
	Close()
}

// openEventStream starts a stream response in format ("ndjson", else
// SSE): on the connection itself over HTTP/1.x (see connStream), through
// the ResponseWriter otherwise. cancel is called if the client leaves.
func openEventStream(w http.ResponseWriter, r *http.Request, format string, cancel context.CancelFunc) (eventWriter, error) {
	contentType, encode, ping := "text/event-stream; charset=utf-8", appendSSEEvent, ssePing
	if format == "ndjson" {
		contentType, encode, ping = "application/x-ndjson", appendNDJSON, []byte("\n")
	}
	st, err := hijackStream(w, r, contentType, cancel, encode, ping)
	switch {
	case err == nil:
		return st, nil
	case !errors.Is(err, errNoHijack):
		return nil, err
	case format == "ndjson":
		return newNDJSON(w)
	}
	return newSSE(w, r)
}

// appendNDJSON appends data as one line.
func appendNDJSON(dst []byte, _, _ string, data []byte) ([]byte, error) {
	return append(append(dst, bytes.TrimSpace(data)...), '\n'), nil
}

// ndjson writes one JSON event per line.
type ndjson struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newNDJSON(w http.ResponseWriter) (*ndjson, error) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &ndjson{w: w, rc: rc}, rc.Flush()
}

func (n *ndjson) Event(_, _ string, data []byte) error {
	b, _ := appendNDJSON(nil, "", "", data)
	if _, err := n.w.Write(b); err != nil {
		return err
	}
	return n.rc.Flush()
}

// Close does nothing: net/http ends the response.
func (n *ndjson) Close() {}

func (n *ndjson) Ping() error {
	if _, err := n.w.Write([]byte("\n")); err != nil {
		return err
	}
	return n.rc.Flush()
}

// plain renders events in the original design's plain SSE form:
// assistant text as data lines, tool activity as short readable lines,
// and "[DONE]" at the end.
// plain renders events in the original design's plain form: one SSE
// event per line of output. The model's text is sent a line at a time as
// its deltas complete lines, and the text event that carries the whole
// block afterwards adds only what no line has sent yet.
type plain struct {
	sawError bool
	// The text block being streamed: "<message id>/<index>", the offset of
	// its first delta seen, its text from there, and how many bytes of
	// that have gone out as complete lines. resumed: the stream began
	// mid-block (Last-Event-ID), so the start of the current line is
	// unknown until the whole block arrives.
	blk     string
	msgID   string
	base    int
	text    string
	sent    int
	resumed bool
}

// delta takes a text delta and returns the lines it completes.
func (p *plain) delta(d agent.DeltaData) (string, bool) {
	k := d.MessageID + "/" + strconv.Itoa(d.Index)
	if k != p.blk {
		p.blk, p.msgID, p.base, p.text, p.sent, p.resumed = k, d.MessageID, d.Offset, "", 0, d.Offset > 0
	}
	if d.Offset != p.base+len(p.text) {
		p.resumed = true // a gap: wait for the whole block
	}
	p.text += d.Text
	if p.resumed {
		return "", false
	}
	nl := strings.LastIndexByte(p.text, '\n')
	if nl < p.sent {
		return "", false
	}
	out := p.text[p.sent:nl]
	p.sent = nl + 1
	return out, true
}

// whole takes a text event and returns what of it no line has sent.
func (p *plain) whole(d agent.TextData) (string, bool) {
	rest := d.Text
	switch {
	case d.MessageID != "" && d.MessageID == p.msgID && !p.resumed && strings.HasPrefix(d.Text, p.text[:p.sent]):
		rest = d.Text[p.sent:]
	case d.MessageID != "" && d.MessageID == p.msgID && p.resumed && p.base <= len(d.Text):
		// Before the resume point the client got the lines that ended
		// before the first delta seen.
		rest = d.Text[strings.LastIndexByte(d.Text[:p.base], '\n')+1:]
	case d.Streamed && d.MessageID != p.msgID:
		// Every delta came before the resume point: the lines they
		// completed were sent, the rest of the last one was not.
		rest = d.Text[strings.LastIndexByte(d.Text, '\n')+1:]
	}
	if d.MessageID == p.msgID {
		p.blk, p.msgID, p.text, p.sent, p.resumed = "", "", "", 0, false
	}
	return rest, rest != ""
}

const plainMax = 300

func clipLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > plainMax {
		s = strings.ToValidUTF8(s[:plainMax], "") + "…"
	}
	return s
}

func (p *plain) line(ev agent.Event) (string, bool) {
	switch ev.Type {
	case agent.TypeTextDelta:
		var d agent.DeltaData
		if json.Unmarshal(ev.Data, &d) != nil {
			return "", false
		}
		return p.delta(d)
	case agent.TypeText:
		var d agent.TextData
		if json.Unmarshal(ev.Data, &d) != nil || d.Text == "" {
			return "", false
		}
		return p.whole(d)
	case agent.TypeToolUse:
		var d agent.ToolUseData
		if json.Unmarshal(ev.Data, &d) != nil {
			return "", false
		}
		var in map[string]any
		_ = json.Unmarshal(d.Input, &in)
		arg := ""
		for _, k := range []string{"command", "file_path", "path", "pattern", "url", "description"} {
			if v, ok := in[k].(string); ok && v != "" {
				arg = v
				break
			}
		}
		if arg == "" {
			arg = string(d.Input)
		}
		return "[tool] " + d.Name + ": " + clipLine(arg), true
	case agent.TypeToolResult:
		var d agent.ToolResultData
		if json.Unmarshal(ev.Data, &d) != nil {
			return "", false
		}
		tag := "[tool result] "
		if d.IsError {
			tag = "[tool error] "
		}
		return tag + clipLine(d.Content), true
	case agent.TypeRetry:
		var d agent.RetryData
		if json.Unmarshal(ev.Data, &d) != nil {
			return "", false
		}
		return fmt.Sprintf("[retry] attempt %d/%d after HTTP %d %s", d.Attempt, d.MaxRetries, d.ErrorStatus, d.Error), true
	case agent.TypeError:
		var d agent.ErrorData
		if json.Unmarshal(ev.Data, &d) != nil {
			return "", false
		}
		p.sawError = true
		return "[error] " + clipLine(d.Message), true
	case agent.TypeResult:
		var d agent.ResultData
		if json.Unmarshal(ev.Data, &d) != nil || !d.IsError || p.sawError {
			return "", false
		}
		msg := d.Subtype
		if len(d.Errors) > 0 {
			msg += ": " + strings.Join(d.Errors, "; ")
		}
		return "[error] " + clipLine(msg), true
	case agent.TypeDone:
		return "[DONE]", true
	}
	return "", false
}

func (s *server) handleListRuns(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errs.Field("limit", "must be between 1 and 1000")
		}
		limit = n
	}
	runs, err := svc.List(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), limit)
	if err != nil {
		return err
	}
	if runs == nil {
		runs = []agent.Run{}
	}
	return writeJSON(w, http.StatusOK, runs)
}

func (s *server) handleGetRun(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	run, err := svc.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, run)
}

func (s *server) handleDecide(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	var d agent.Decision
	if err := decodeJSONLimit(r, &d, s.deps.MaxJSONBody); err != nil {
		return err
	}
	d.ByEmail = currentUser(r).Email // the permission_decision event shows who answered
	d.By = currentUser(r).ID         // who answered: an operator, not the owner
	out, forwarded, err := svc.Decide(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), chi.URLParam(r, "request_id"), d)
	if err != nil {
		return err
	}
	if forwarded {
		// Passed to the replica running the run: its permission_decision
		// event says whether this answer was the first.
		return writeJSON(w, http.StatusAccepted, out)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *server) handleCancelRun(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	run, err := svc.Cancel(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}

// parseTime accepts RFC 3339 or a date (YYYY-MM-DD, UTC midnight).
func parseTime(field, v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, errs.Field(field, "must be RFC 3339 or YYYY-MM-DD")
}

func (s *server) handleUsage(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.runs()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	u := currentUser(r)
	now := s.now().UTC()
	uq := agent.UsageQuery{UserID: u.ID, From: now.AddDate(0, 0, -30), To: now.Add(time.Second), GroupBy: q.Get("group_by")}
	var bad []errs.FieldError
	if v := q.Get("from"); v != "" {
		if uq.From, err = parseTime("from", v); err != nil {
			bad = append(bad, errs.FieldError{Field: "from", Reason: "must be RFC 3339 or YYYY-MM-DD"})
		}
	}
	if v := q.Get("to"); v != "" {
		if uq.To, err = parseTime("to", v); err != nil {
			bad = append(bad, errs.FieldError{Field: "to", Reason: "must be RFC 3339 or YYYY-MM-DD"})
		}
	}
	if uq.GroupBy == "" {
		uq.GroupBy = "day"
	}
	if !slices.Contains(agent.UsageGroupBys, uq.GroupBy) {
		bad = append(bad, errs.FieldError{Field: "group_by", Reason: "must be one of " + strings.Join(agent.UsageGroupBys, ", ")})
	}
	if v, ok := q["user"]; ok {
		if !u.IsAdmin() {
			return errs.E(errs.Forbidden, "only admins may read another user's usage")
		}
		uq.UserID = v[0] // "" = every user
	} else if uq.GroupBy == "user" && u.IsAdmin() {
		uq.UserID = "" // an admin's per-user view is every user's; a member's is their own
	} else if uq.GroupBy == "team" {
		// A team's usage is everyone's calls from its sandboxes: an admin
		// sees every team, anyone else the teams they are a member of.
		uq.UserID = ""
		if !u.IsAdmin() {
			uq.TeamMemberID = u.ID
		}
	}
	if len(bad) == 0 && !uq.To.After(uq.From) {
		bad = append(bad, errs.FieldError{Field: "to", Reason: "must be after from"})
	}
	if err := errs.Fields(bad); err != nil {
		return err
	}
	groups, err := svc.Usage(r.Context(), uq)
	if err != nil {
		return err
	}
	resp := usageResponse{From: uq.From, To: uq.To, GroupBy: uq.GroupBy, UserID: uq.UserID, Groups: groups}
	resp.Total.Key = "total"
	for _, g := range groups {
		resp.Total.Requests += g.Requests
		resp.Total.Usage = resp.Total.Usage.Add(g.Usage)
		resp.Total.CostNanoUSD += g.CostNanoUSD
	}
	return writeJSON(w, http.StatusOK, resp)
}
