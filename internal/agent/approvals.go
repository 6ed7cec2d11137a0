package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/techbossai/techboss/internal/errs"
)

// Tool approvals. A run with permission_mode "ask" (or a permissions
// policy) runs the CLI with --permission-prompt-tool pointed at the
// "approve" tool of an MCP server the service hosts on the sandbox's
// gateway listener (ApprovalPath, streamable HTTP, authenticated by the
// run's token). Each call the policy does not settle becomes a
// permission_request event and waits for POST
// /runs/{id}/permissions/{request_id} (first answer wins), for the
// timeout (then the policy's default decision), or for the run to end.
// Every decision is a permission_decision event naming who made it.

// ApprovalPath is where the approval MCP server listens, beside the
// gateway's /llm/anthropic.
const ApprovalPath = "/llm/mcp"

// maxPending bounds the permission requests of one run waiting at once.
const maxPending = 16

// ApprovalTool is the prompt tool's name as the CLI knows it
// (mcp__<server>__<tool>).
const ApprovalTool = "mcp__techboss__approve"

// Event types of approvals.
const (
	TypePermissionRequest  = "permission_request"
	TypePermissionDecision = "permission_decision"
)

// PermissionPolicy settles tool calls without asking: a tool named in
// Deny is refused, in Allow is run, in Ask (or in none) is asked about.
// Names are the CLI's tool names; a trailing * matches a prefix
// ("mcp__github__*"). Deny wins over Allow, Allow over Ask.
type PermissionPolicy struct {
	Allow []string `json:"allow,omitempty"`
	Ask   []string `json:"ask,omitempty"`
	Deny  []string `json:"deny,omitempty"`
	// TimeoutSeconds bounds the wait for an answer (default
	// Config.PermissionTimeout); then OnTimeout decides ("deny", the
	// default, or "allow").
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
	OnTimeout      string `json:"on_timeout,omitempty"`
}

func matchTool(patterns []string, tool string) bool {
	for _, p := range patterns {
		if p == tool || (strings.HasSuffix(p, "*") && strings.HasPrefix(tool, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// decide returns the policy's decision for tool: "allow", "deny" or "ask".
func (p *PermissionPolicy) decide(tool string) string {
	switch {
	case p == nil:
		return "ask"
	case matchTool(p.Deny, tool):
		return "deny"
	case matchTool(p.Allow, tool):
		return "allow"
	}
	return "ask"
}

func validatePolicy(p *PermissionPolicy) []errs.FieldError {
	if p == nil {
		return nil
	}
	var fs []errs.FieldError
	for name, list := range map[string][]string{"allow": p.Allow, "ask": p.Ask, "deny": p.Deny} {
		if len(list) > 100 {
			fs = append(fs, errs.FieldError{Field: "permissions." + name, Reason: "more than 100 entries"})
		}
		for i, t := range list {
			if t == "" || len(t) > 200 || strings.ContainsAny(t, "\x00\n") || strings.Contains(strings.TrimSuffix(t, "*"), "*") {
				fs = append(fs, errs.FieldError{Field: fmt.Sprintf("permissions.%s[%d]", name, i), Reason: "must be a tool name, optionally ending in *"})
			}
		}
	}
	if p.TimeoutSeconds < 0 || p.TimeoutSeconds > 86400 {
		fs = append(fs, errs.FieldError{Field: "permissions.timeout_seconds", Reason: "must be between 0 and 86400"})
	}
	if p.OnTimeout != "" && p.OnTimeout != "deny" && p.OnTimeout != "allow" {
		fs = append(fs, errs.FieldError{Field: "permissions.on_timeout", Reason: "must be deny or allow"})
	}
	return fs
}

// asks reports whether a run with o needs the approval tool.
func (o Options) asks() bool { return o.PermissionMode == "ask" || o.Permissions != nil }

// PermissionRequestData is the data of a permission_request event.
type PermissionRequestData struct {
	RequestID string          `json:"request_id"`
	ToolName  string          `json:"tool_name"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Input     json.RawMessage `json:"input"`
	// Summary is the call in a form to read: the command for Bash, a diff
	// for Edit and Write.
	Summary   string    `json:"summary"`
	ExpiresAt time.Time `json:"expires_at"`
	OnTimeout string    `json:"on_timeout"`
}

// Decision is an answer to a permission request.
type Decision struct {
	Behavior string `json:"behavior"` // allow | deny
	Message  string `json:"message,omitempty"`
	// UpdatedInput replaces the tool's input (allow only).
	UpdatedInput json.RawMessage `json:"updated_input,omitempty"`
	// Remember "run": allow (or deny) this tool for the rest of the run.
	Remember string `json:"remember,omitempty"`
	// ByEmail is the answering user's email, set by the server (not the
	// request body), for the permission_decision event.
	ByEmail string `json:"-"`
	// By is the user who answers, when not the run's owner (a sandbox
	// shared with them); set by the API, never read from the body.
	By string `json:"-"`
}

// PermissionDecisionData is the data of a permission_decision event.
type PermissionDecisionData struct {
	RequestID    string          `json:"request_id,omitempty"`
	ToolName     string          `json:"tool_name"`
	ToolUseID    string          `json:"tool_use_id,omitempty"`
	Behavior     string          `json:"behavior"`
	Message      string          `json:"message,omitempty"`
	UpdatedInput json.RawMessage `json:"updated_input,omitempty"`
	// Source is who decided: "user" (DecidedBy names them), "policy",
	// "remembered", "timeout" or "run_ended".
	Source    string `json:"source"`
	DecidedBy string `json:"decided_by,omitempty"`
	// DecidedByEmail is that user's email.
	DecidedByEmail string `json:"decided_by_email,omitempty"`
	Remember       string `json:"remember,omitempty"`
}

// approvals is the approval state of one run of this process.
type approvals struct {
	mu       sync.Mutex
	pending  map[string]*pendingApproval
	remember map[string]string // tool -> allow | deny, for the run
}

type pendingApproval struct {
	tool, toolUseID string
	input           json.RawMessage
	answer          chan decided
}

type decided struct {
	Decision
	by string
}

// startApprovals makes the approval state of a run that asks.
func (s *Service) startApprovals(runID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.approvals[runID] = &approvals{pending: map[string]*pendingApproval{}, remember: map[string]string{}}
}

// endApprovals answers what is still pending when a run ends.
func (s *Service) endApprovals(runID string) {
	s.mu.Lock()
	a := s.approvals[runID]
	delete(s.approvals, runID)
	s.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, p := range a.pending {
		delete(a.pending, id)
		p.answer <- decided{Decision: Decision{Behavior: "deny", Message: "the run ended"}, by: "run_ended"}
	}
}

// approveInput is what the CLI passes its prompt tool.
type approveInput struct {
	ToolName  string         `json:"tool_name"`
	Input     map[string]any `json:"input"`
	ToolUseID string         `json:"tool_use_id"`
}

// approveCall is approveInput with the input as the CLI sent it.
type approveCall struct {
	ToolName, ToolUseID string
	Input               json.RawMessage
}

// ApprovalHandler serves the approval MCP server (ApprovalPath). Each
// request authenticates with its run's token (Authorization: Bearer).
func (s *Service) ApprovalHandler() http.Handler {
	h := mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		p, _ := r.Context().Value(principalKey{}).(Principal)
		srv := mcp.NewServer(&mcp.Implementation{Name: "techboss", Version: "1"}, nil)
		mcp.AddTool(srv, &mcp.Tool{
			Name:        "approve",
			Description: "Asks the run's owner whether a tool call may run.",
		}, func(ctx context.Context, _ *mcp.CallToolRequest, in approveInput) (*mcp.CallToolResult, any, error) {
			input, err := json.Marshal(in.Input)
			if err != nil {
				return nil, nil, err
			}
			out, err := s.approve(ctx, p.RunID, approveCall{ToolName: in.ToolName, ToolUseID: in.ToolUseID, Input: input})
			if err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(out)}}}, nil, nil
		})
		return srv
	}, &mcp.StreamableHTTPOptions{Stateless: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := s.runCaller(w, r); ok {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		}
	})
}

// runCaller authenticates a request by its run token (Authorization:
// Bearer); when it does not, it has answered the request.
func (s *Service) runCaller(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p, err := s.AuthenticateRunToken(r.Context(), tok)
	if !ok || err != nil || p.RunID == "" {
		denyRunToken(w, err)
		return Principal{}, false
	}
	return p, true
}

type principalKey struct{}

// approve settles one tool call and returns the prompt tool's answer.
func (s *Service) approve(ctx context.Context, runID string, in approveCall) ([]byte, error) {
	// Only a run that asks has approvals (made when it starts): code in
	// the sandbox of any other run gets no requests in front of its owner.
	s.mu.Lock()
	j, a := s.jobs[runID], s.approvals[runID]
	s.mu.Unlock()
	if j == nil || a == nil {
		return nil, errs.E(errs.NotFound, "run %s does not ask before tool calls here", runID)
	}
	if len(in.Input) == 0 || string(in.Input) == "null" {
		in.Input = json.RawMessage(`{}`)
	}
	pol := j.run.Options.Permissions
	d := PermissionDecisionData{ToolName: in.ToolName, ToolUseID: in.ToolUseID}
	a.mu.Lock()
	remembered := a.remember[in.ToolName]
	a.mu.Unlock()
	switch verdict := pol.decide(in.ToolName); {
	case verdict != "ask":
		d.Behavior, d.Source = verdict, "policy"
	case remembered != "":
		d.Behavior, d.Source = remembered, "remembered"
	default:
		timeout := s.cfg.PermissionTimeout
		onTimeout := "deny"
		if pol != nil && pol.TimeoutSeconds > 0 {
			timeout = time.Duration(pol.TimeoutSeconds) * time.Second
		}
		if pol != nil && pol.OnTimeout != "" {
			onTimeout = pol.OnTimeout
		}
		p := &pendingApproval{tool: in.ToolName, toolUseID: in.ToolUseID, input: in.Input, answer: make(chan decided, 1)}
		d.RequestID = "perm_" + randHex(8)
		a.mu.Lock()
		if len(a.pending) >= maxPending {
			// The approval server is reachable from inside the sandbox
			// (with the run's token): code there must not flood the
			// run's owner with requests.
			a.mu.Unlock()
			return json.Marshal(map[string]any{"behavior": "deny", "message": fmt.Sprintf("more than %d tool calls are waiting for an answer", maxPending)})
		}
		a.pending[d.RequestID] = p
		a.mu.Unlock()
		req := PermissionRequestData{RequestID: d.RequestID, ToolName: in.ToolName, ToolUseID: in.ToolUseID, Input: in.Input,
			Summary: summarize(in.ToolName, in.Input), ExpiresAt: s.now().UTC().Add(timeout), OnTimeout: onTimeout}
		if _, err := s.hub.Append(context.WithoutCancel(ctx), runID, s.stamp(NewEvent(TypePermissionRequest, req, ""))); err != nil {
			s.log.Warn("append permission request", "run_id", runID, "err", err)
		}
		s.events.Emit(ctx, j.run.OwnerID, "permission.requested", PermissionEvent{RunID: runID, SandboxID: j.run.SandboxID, RequestID: req.RequestID, ToolName: req.ToolName, Summary: req.Summary, ExpiresAt: req.ExpiresAt})
		t := time.NewTimer(timeout)
		defer t.Stop()
		var ans decided
		select {
		case ans = <-p.answer:
		case <-t.C:
			ans = decided{Decision: Decision{Behavior: onTimeout, Message: fmt.Sprintf("no answer within %v", timeout)}, by: "timeout"}
		case <-ctx.Done():
			ans = decided{Decision: Decision{Behavior: "deny", Message: "the agent stopped waiting"}, by: "run_ended"}
		}
		a.mu.Lock()
		delete(a.pending, d.RequestID)
		if ans.Remember == "run" {
			a.remember[in.ToolName] = ans.Behavior
		}
		a.mu.Unlock()
		d.Behavior, d.Message, d.UpdatedInput, d.Remember = ans.Behavior, ans.Message, ans.UpdatedInput, ans.Remember
		d.Source = "user"
		if ans.by == "timeout" || ans.by == "run_ended" {
			d.Source = ans.by
		} else {
			d.DecidedBy, d.DecidedByEmail = ans.by, ans.ByEmail
		}
	}
	if _, err := s.hub.Append(context.WithoutCancel(ctx), runID, s.stamp(NewEvent(TypePermissionDecision, d, ""))); err != nil {
		s.log.Warn("append permission decision", "run_id", runID, "err", err)
	}
	// The prompt tool's answer, as the CLI reads it.
	if d.Behavior == "allow" {
		input := in.Input
		if len(d.UpdatedInput) > 0 {
			input = d.UpdatedInput
		}
		return json.Marshal(map[string]any{"behavior": "allow", "updatedInput": input})
	}
	msg := d.Message
	if msg == "" {
		msg = "denied by " + d.Source
	}
	return json.Marshal(map[string]any{"behavior": "deny", "message": msg})
}

func (s *Service) stamp(ev Event) Event { ev.Time = s.now().UTC(); return ev }

// Decide answers a pending permission request of one of owner's runs.
// The first answer wins: a later one is a conflict. For a run another
// replica executes, the answer is passed to it through the feed and
// forwarded is true: the run's permission_decision event says whether it
// was the first.
func (s *Service) Decide(ctx context.Context, ownerID, runID, requestID string, d Decision) (out PermissionDecisionData, forwarded bool, err error) {
	var fs []errs.FieldError
	if d.Behavior != "allow" && d.Behavior != "deny" {
		fs = append(fs, errs.FieldError{Field: "behavior", Reason: "must be allow or deny"})
	}
	if len(d.UpdatedInput) > 0 {
		var obj map[string]json.RawMessage
		if d.Behavior != "allow" {
			fs = append(fs, errs.FieldError{Field: "updated_input", Reason: "only with allow"})
		} else if json.Unmarshal(d.UpdatedInput, &obj) != nil || obj == nil {
			fs = append(fs, errs.FieldError{Field: "updated_input", Reason: "must be a JSON object (the tool's input)"})
		}
	}
	if d.Remember != "" && d.Remember != "run" {
		fs = append(fs, errs.FieldError{Field: "remember", Reason: `must be "run"`})
	}
	if len(d.Message) > 4096 {
		fs = append(fs, errs.FieldError{Field: "message", Reason: "longer than 4096 bytes"})
	}
	if err := errs.Fields(fs); err != nil {
		return PermissionDecisionData{}, false, err
	}
	r, err := s.Get(ctx, ownerID, runID)
	if err != nil {
		return PermissionDecisionData{}, false, err
	}
	by := ownerID
	if d.By != "" {
		by = d.By
	}
	s.mu.Lock()
	_, local := s.jobs[r.ID]
	s.mu.Unlock()
	if !local && r.Status.Active() {
		b, _ := json.Marshal(remoteDecision{RequestID: requestID, Decision: d, By: by, ByEmail: d.ByEmail})
		if err := s.hub.SendDecide(ctx, r.ID, b); err != nil {
			if errors.Is(err, errNoFeed) {
				return PermissionDecisionData{}, false, errs.E(errs.Conflict, "run %s is executed by another server", r.ID)
			}
			return PermissionDecisionData{}, false, err
		}
		return PermissionDecisionData{RequestID: requestID, Behavior: d.Behavior, Message: d.Message, UpdatedInput: d.UpdatedInput,
			Source: "user", DecidedBy: by, DecidedByEmail: d.ByEmail, Remember: d.Remember}, true, nil
	}
	out, err = s.decideLocal(r.ID, requestID, d, by)
	return out, false, err
}

// remoteDecision is an answer passed to the replica running the run.
type remoteDecision struct {
	RequestID string   `json:"request_id"`
	Decision  Decision `json:"decision"`
	By        string   `json:"by"`
	ByEmail   string   `json:"by_email,omitempty"`
}

// decideRemote takes an answer another replica passed through the feed.
func (s *Service) decideRemote(runID string, payload []byte) {
	var rd remoteDecision
	if json.Unmarshal(payload, &rd) != nil {
		return
	}
	rd.Decision.ByEmail = rd.ByEmail
	if _, err := s.decideLocal(runID, rd.RequestID, rd.Decision, rd.By); err != nil {
		s.log.Debug("answer from another replica", "run_id", runID, "request_id", rd.RequestID, "err", err)
	}
}

// decideLocal answers a pending request of a run of this process.
func (s *Service) decideLocal(runID, requestID string, d Decision, by string) (PermissionDecisionData, error) {
	s.mu.Lock()
	a := s.approvals[runID]
	s.mu.Unlock()
	if a == nil {
		return PermissionDecisionData{}, errs.E(errs.Conflict, "permission request %s is not pending (the run does not ask, or ended)", requestID)
	}
	a.mu.Lock()
	p, ok := a.pending[requestID]
	if ok {
		delete(a.pending, requestID)
	}
	a.mu.Unlock()
	if !ok {
		return PermissionDecisionData{}, errs.E(errs.Conflict, "permission request %s is not pending (already answered, timed out, or unknown)", requestID)
	}
	p.answer <- decided{Decision: d, by: by}
	return PermissionDecisionData{RequestID: requestID, ToolName: p.tool, ToolUseID: p.toolUseID, Behavior: d.Behavior,
		Message: d.Message, UpdatedInput: d.UpdatedInput, Source: "user", DecidedBy: by, DecidedByEmail: d.ByEmail, Remember: d.Remember}, nil
}

// summarize renders a tool call to read before approving it: the command
// for Bash, a diff for Edit and Write, the path or pattern otherwise.
func summarize(tool string, input json.RawMessage) string {
	var in map[string]any
	_ = json.Unmarshal(input, &in)
	str := func(k string) string { v, _ := in[k].(string); return v }
	switch tool {
	case "Bash":
		s := "$ " + str("command")
		if d := str("description"); d != "" {
			s += "\n# " + d
		}
		return s
	case "Write":
		return fmt.Sprintf("write %s (%d bytes)\n%s", str("file_path"), len(str("content")), prefixLines("+ ", str("content")))
	case "Edit":
		s := "edit " + str("file_path") + "\n" + prefixLines("- ", str("old_string")) + "\n" + prefixLines("+ ", str("new_string"))
		if b, _ := in["replace_all"].(bool); b {
			s += "\n(every occurrence)"
		}
		return s
	}
	for _, k := range []string{"file_path", "path", "pattern", "url", "command"} {
		if v := str(k); v != "" {
			return tool + ": " + v
		}
	}
	return tool + " " + string(input)
}

func prefixLines(p, s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) > 200 {
		lines = append(lines[:200], fmt.Sprintf("… %d more lines", len(lines)-200))
	}
	for i := range lines {
		lines[i] = p + lines[i]
	}
	return strings.Join(lines, "\n")
}

// gatewayBase is the gateway listener's base URL from the run's
// Anthropic base URL (…/llm/anthropic).
func gatewayBase(baseURL string) (string, bool) {
	i := strings.LastIndex(baseURL, "/llm/anthropic")
	if i < 0 {
		return "", false
	}
	return baseURL[:i], true
}

// denyRunToken answers a request whose run token did not authenticate:
// 503 with Retry-After when the database could not be asked, else 401.
func denyRunToken(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	if errs.KindOf(err) == errs.Unavailable {
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"code":"unavailable","message":"the database is unreachable; retry shortly"}`))
		return
	}
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"a run token is required"}`))
}
