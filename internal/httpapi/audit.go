package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
)

// auditOps documents the audit log's routes.
var auditOps = []apiOp{
	{Method: "GET", Path: "/audit", Summary: "The audit log, newest first (admins): every state-changing request with who, how (session or API token ID), client IP, action, resource, status; filters ?user (ID or email), ?action, ?resource (that resource and what is under it), ?from, ?to (RFC 3339), ?limit, ?cursor",
		Response: auditPage{}, Errors: []int{403, 422}},
	{Method: "GET", Path: "/audit/export", Summary: "The audit log as JSON lines (application/x-ndjson), one entry per line, newest first, with the filters of GET /audit (no paging: every matching entry) (admins)",
		Errors: []int{403, 422}},
}

// auditPage is GET /audit.
type auditPage struct {
	Entries    []audit.Entry `json:"entries"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// auditRoute says what a state-changing route records. Resource is a
// template of "/"-separated parts, each "kind:{source}" where source is a
// path parameter ("id", "*"), "data.<field>" (a top-level field of the
// JSON answer's data) or "header.<name>" (an answer header); a part whose
// value is empty is left out. Skip, instead, says why the route is not
// recorded.
type auditRoute struct {
	Action, Resource string
	Skip             string
}

// auditRoutes names the action of every state-changing route ("METHOD
// pattern"), and of GET routes that upgrade to a WebSocket.
// TestAuditCoversEveryRoute fails when a non-GET route is missing.
var auditRoutes = map[string]auditRoute{
	"POST /auth/login":                                  {Action: "login"}, // "login.failed" when refused
	"POST /auth/logout":                                 {Action: "logout"},
	"POST /auth/tokens":                                 {Action: "token.create", Resource: "token:{data.id}"},
	"DELETE /auth/tokens/{id}":                          {Action: "token.revoke", Resource: "token:{id}"},
	"POST /auth/users":                                  {Action: "user.create", Resource: "user:{data.id}"},
	"POST /sandbox":                                     {Action: "sandbox.create", Resource: "sandbox:{data.sandbox_id}"},
	"DELETE /sandbox/{id}":                              {Action: "sandbox.delete", Resource: "sandbox:{id}"},
	"PUT /sandbox/{id}/archive":                         {Action: "archive.upload", Resource: "sandbox:{id}"},
	"POST /sandbox/{id}/exec":                           {Action: "exec", Resource: "sandbox:{id}"},
	"PUT /sandbox/{id}/files/*":                         {Action: "file.write", Resource: "sandbox:{id}/file:{*}"},
	"DELETE /sandbox/{id}/files/*":                      {Action: "file.delete", Resource: "sandbox:{id}/file:{*}"},
	"DELETE /volumes/{name}":                            {Action: "volume.delete", Resource: "volume:{name}"},
	"POST /sandbox/{id}/claude":                         {Action: "run.start", Resource: "sandbox:{id}/run:{header.X-Run-ID}"},
	"POST /runs/{id}/cancel":                            {Action: "run.cancel", Resource: "run:{id}"},
	"POST /runs/{id}/permissions/{request_id}":          {Action: "approval", Resource: "run:{id}/permission:{request_id}"},
	"POST /sandbox/{id}/snapshots":                      {Action: "snapshot.create", Resource: "sandbox:{id}/snapshot:{data.snapshot_id}"},
	"POST /sandbox/{id}/restore":                        {Action: "snapshot.restore", Resource: "sandbox:{id}/snapshot:{data.snapshot_id}"},
	"PUT /secrets/{name}":                               {Action: "secret.put", Resource: "secret:{name}"},
	"DELETE /secrets/{name}":                            {Action: "secret.delete", Resource: "secret:{name}"},
	"POST /sandbox/{id}/git/commit":                     {Action: "git.commit", Resource: "sandbox:{id}"},
	"POST /sandbox/{id}/git/push":                       {Action: "git.push", Resource: "sandbox:{id}/branch:{data.branch}"},
	"POST /sandbox/{id}/git/pull-request":               {Action: "git.pull_request", Resource: "sandbox:{id}"},
	"PUT /v1/budgets/{user_id}":                         {Action: "budget.set", Resource: "user:{user_id}"},
	"DELETE /v1/budgets/{user_id}":                      {Action: "budget.delete", Resource: "user:{user_id}"},
	"POST /sandbox/{id}/ports/{port}/links":             {Action: "preview_link.create", Resource: "sandbox:{id}/port:{port}/link:{data.link_id}"},
	"DELETE /sandbox/{id}/ports/{port}/links/{link_id}": {Action: "preview_link.revoke", Resource: "sandbox:{id}/port:{port}/link:{link_id}"},
	"POST /webhooks":                                    {Action: "webhook.create", Resource: "webhook:{data.id}"},
	"DELETE /webhooks/{id}":                             {Action: "webhook.delete", Resource: "webhook:{id}"},
	"POST /webhooks/{id}/test":                          {Action: "webhook.test", Resource: "webhook:{id}"},
	"POST /teams":                                       {Action: "team.create", Resource: "team:{data.id}"},
	"PUT /teams/{team}/secrets/{name}":                  {Action: "team.secret.put", Resource: "team:{team}/secret:{name}"},
	"DELETE /teams/{team}/secrets/{name}":               {Action: "team.secret.delete", Resource: "team:{team}/secret:{name}"},
	"DELETE /teams/{team}":                              {Action: "team.delete", Resource: "team:{team}"},
	"POST /teams/{team}/members":                        {Action: "team.member.put", Resource: "team:{team}/user:{data.user_id}"},
	"PUT /teams/{team}/members/{user}":                  {Action: "team.member.role", Resource: "team:{team}/user:{user}"},
	"DELETE /teams/{team}/members/{user}":               {Action: "team.member.remove", Resource: "team:{team}/user:{user}"},
	"POST /teams/{team}/invitations":                    {Action: "team.invite", Resource: "team:{team}/invitation:{data.id}"},
	"PUT /teams/{team}/budget":                          {Action: "team.budget.set", Resource: "team:{team}"},
	"DELETE /teams/{team}/budget":                       {Action: "team.budget.delete", Resource: "team:{team}"},
	"DELETE /teams/{team}/invitations/{invitation}":     {Action: "team.invitation.revoke", Resource: "team:{team}/invitation:{invitation}"},
	"POST /invitations/{token}/accept":                  {Action: "team.join", Resource: "team:{data.team_id}"},
	"POST /sandbox/{id}/shares":                         {Action: "share", Resource: "sandbox:{id}/share:{data.id}"},
	"DELETE /sandbox/{id}/shares/{share}":               {Action: "unshare", Resource: "sandbox:{id}/share:{share}"},
	// Issue 17's routes, named ahead of them (GET upgrades included).
	"GET /sandbox/{id}/pty":                          {Action: "pty.open", Resource: "sandbox:{id}"},
	"DELETE /sandbox/{id}/pty/sessions/{session_id}": {Action: "pty.close", Resource: "sandbox:{id}/pty:{session_id}"},
	"POST /sandbox/{id}/processes":                   {Action: "process.start", Resource: "sandbox:{id}/process:{data.pid}"},
	"POST /sandbox/{id}/processes/{pid}/stdin":       {Action: "process.stdin", Resource: "sandbox:{id}/process:{pid}"},
	"POST /sandbox/{id}/processes/{pid}/signal":      {Action: "process.signal", Resource: "sandbox:{id}/process:{pid}"},

	"POST /v1/chat":                                {Skip: "a model call: metered in usage, changes no server state"},
	"POST /sandbox/{id}/ports/{port}/*":            {Skip: "traffic to the user's own app in the sandbox (the preview proxy)"},
	"PUT /sandbox/{id}/ports/{port}/*":             {Skip: "preview proxy traffic"},
	"PATCH /sandbox/{id}/ports/{port}/*":           {Skip: "preview proxy traffic"},
	"DELETE /sandbox/{id}/ports/{port}/*":          {Skip: "preview proxy traffic"},
	"OPTIONS /sandbox/{id}/ports/{port}/*":         {Skip: "preview proxy traffic"},
	"GET /sandbox/{id}/ports/{port}/*":             {Skip: "preview proxy traffic (WebSocket upgrades included)"},
	"POST /llm/anthropic/v1/messages":              {Skip: "the LLM gateway (run tokens): metered in usage"},
	"POST /llm/anthropic/v1/messages/count_tokens": {Skip: "the LLM gateway"},
	"POST /llm/openai/v1/chat/completions":         {Skip: "the LLM gateway"},
	"POST /llm/openai/v1/responses":                {Skip: "the LLM gateway"},
	"POST /git/*":                                  {Skip: "the git credential broker (sandbox-scoped tokens, outside session auth); git.push records pushes through the API"},
	"POST /llm/mcp":                                {Skip: "a run's approval MCP server (run token); the decision is recorded as approval"},
	"POST /llm/mcp-proxy/{name}":                   {Skip: "a run's MCP proxy (run token)"},
	"DELETE /llm/mcp-proxy/{name}":                 {Skip: "a run's MCP proxy (run token)"},
}

// auditNote carries what a handler knows about who acted when the
// middleware cannot (a login names its user only once it succeeds).
type auditNote struct {
	userID, email string
}

type auditNoteKey struct{}

// noteAuditUser tells the audit middleware who this request is about.
func noteAuditUser(r *http.Request, userID, email string) {
	if n, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		n.userID, n.email = userID, clip(auth.NormalizeEmail(email), 254)
	}
}

// audit records one entry per state-changing request (and per WebSocket
// upgrade) in Deps.Audit. It runs after routing (it is mounted on route
// groups), so it knows the route pattern before the handler runs. The
// entry is queued, never written on the request path.
func (s *server) audit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upgrade := r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
		if s.deps.Audit == nil || (r.Method == http.MethodGet || r.Method == http.MethodHead) && !upgrade {
			next.ServeHTTP(w, r)
			return
		}
		pattern := routePattern(r)
		key := r.Method + " " + pattern
		rt, known := auditRoutes[key]
		if rt.Skip != "" || (upgrade && !known) {
			next.ServeHTTP(w, r)
			return
		}
		if !known {
			rt.Action = key // never lose an entry; the test names it properly
		}
		note := &auditNote{}
		if u := currentUser(r); u != nil {
			note.userID, note.email = u.ID, u.Email
		}
		how, tokenID := "session", ""
		if u := currentUser(r); u != nil && u.TokenID != "" {
			how, tokenID = "token", u.TokenID
		}
		if pattern == "/auth/login" {
			how = "password"
		}
		if pattern == "/auth/logout" {
			if u, method, err := s.userFromRequest(r); err == nil && method == authCookie {
				note.userID, note.email = u.ID, u.Email
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note))
		aw := &auditWriter{statusWriter: statusWriter{ResponseWriter: w}, capture: strings.Contains(rt.Resource, "{data."), upgrade: upgrade}
		e := audit.Entry{At: s.now(), Auth: how, TokenID: tokenID, IP: s.clientIP(r), Action: rt.Action,
			Method: r.Method, Route: pattern, RequestID: requestIDFrom(r.Context())}
		aw.record = func() {
			e.UserID, e.Email = note.userID, note.email
			e.Status = aw.status
			if !aw.wroteHeader {
				e.Status = http.StatusOK
			}
			if e.Status >= 400 {
				e.ErrorCode = errorCode(aw.body.Bytes())
				if rt.Action == "login" {
					e.Action = "login.failed"
				}
			}
			e.Resource = expandResource(rt.Resource, r, aw.Header(), aw.body.Bytes())
			s.deps.Audit.Record(e)
		}
		defer func() {
			if p := recover(); p != nil {
				// observe answers 500 for a panic; record that, then let it.
				if !aw.wroteHeader {
					aw.status, aw.wroteHeader = http.StatusInternalServerError, true
				}
				aw.done()
				panic(p)
			}
			aw.done()
		}()
		next.ServeHTTP(aw, r)
	})
}

// auditWriter records the status and keeps the start of a JSON answer
// (the error code, or the created resource's ID; never stored whole).
// The entry is recorded at the first flush (a stream: its status is
// known, and it may last as long as a run) or upgrade, else at the end.
type auditWriter struct {
	statusWriter
	capture bool
	upgrade bool // a WebSocket upgrade: 101 once hijacked
	body    bytes.Buffer
	once    sync.Once
	record  func()
}

const auditCaptureMax = 4 << 10

func (w *auditWriter) Write(b []byte) (int, error) {
	n, err := w.statusWriter.Write(b)
	if (w.capture || w.status >= 400) && w.body.Len() < auditCaptureMax &&
		strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		w.body.Write(b[:min(n, auditCaptureMax-w.body.Len())])
	}
	return n, err
}

func (w *auditWriter) Flush() {
	w.statusWriter.Flush()
	w.done()
}

func (w *auditWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.statusWriter.Hijack()
	if err == nil {
		if !w.upgrade {
			// A stream that takes its connection over (connstream.go)
			// answers 200 itself.
			w.status = http.StatusOK
		}
		w.done()
	}
	return c, rw, err
}

func (w *auditWriter) done() { w.once.Do(w.record) }

// errorCode is the code of an error answer ({"error":{"code":…}}).
func errorCode(body []byte) string {
	var v struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &v)
	return clip(v.Error.Code, 64)
}

// expandResource fills a resource template (see auditRoute).
func expandResource(tmpl string, r *http.Request, h http.Header, body []byte) string {
	if tmpl == "" {
		return ""
	}
	var data map[string]json.RawMessage
	var parts []string
	for part := range strings.SplitSeq(tmpl, "/") {
		kind, src, ok := strings.Cut(part, ":{")
		if !ok {
			continue
		}
		src = strings.TrimSuffix(src, "}")
		var v string
		switch {
		case strings.HasPrefix(src, "data."):
			if data == nil {
				var env struct {
					Data map[string]json.RawMessage `json:"data"`
				}
				_ = json.Unmarshal(body, &env)
				data = env.Data
				if data == nil {
					data = map[string]json.RawMessage{}
				}
			}
			raw := data[strings.TrimPrefix(src, "data.")]
			var str string
			if json.Unmarshal(raw, &str) == nil {
				v = str
			} else if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				v = strconv.FormatInt(n, 10)
			}
		case strings.HasPrefix(src, "header."):
			v = h.Get(strings.TrimPrefix(src, "header."))
		default:
			v = chi.URLParam(r, src)
		}
		if v = clip(v, 256); v != "" {
			parts = append(parts, kind+":"+v)
		}
	}
	return strings.Join(parts, "/")
}

func (s *server) mountAudit(r chi.Router) {
	r.With(s.requireAdmin).Get("/audit", s.api(s.handleAudit))
	r.With(s.requireAdmin).Get("/audit/export", s.api(s.handleAuditExport))
}

func (s *server) auditLog() (*audit.Log, error) {
	if s.deps.Audit == nil {
		return nil, errs.E(errs.Unavailable, "the audit log is not configured on this server")
	}
	return s.deps.Audit, nil
}

// auditFilter reads GET /audit's query.
func auditFilter(r *http.Request, paging bool) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{User: q.Get("user"), Action: q.Get("action"), Resource: q.Get("resource")}
	var bad []errs.FieldError
	for _, k := range []string{"user", "action", "resource"} {
		if len(q.Get(k)) > 512 {
			bad = append(bad, errs.FieldError{Field: k, Reason: "at most 512 bytes"})
		}
	}
	for _, k := range []string{"from", "to"} {
		if v := q.Get(k); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				bad = append(bad, errs.FieldError{Field: k, Reason: "must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z"})
			}
			if k == "from" {
				f.From = t
			} else {
				f.To = t
			}
		}
	}
	if paging {
		f.Limit = 100
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > audit.MaxPageSize {
				bad = append(bad, errs.FieldError{Field: "limit", Reason: "must be an integer from 1 to " + strconv.Itoa(audit.MaxPageSize)})
			}
			f.Limit = n
		}
		if v := q.Get("cursor"); v != "" {
			c, err := audit.ParseCursor(v)
			if err != nil {
				bad = append(bad, errs.FieldError{Field: "cursor", Reason: "not a cursor returned by this API"})
			}
			f.After = &c
		}
	}
	return f, errs.Fields(bad)
}

func (s *server) handleAudit(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.auditLog(); err != nil {
		return err
	}
	f, err := auditFilter(r, true)
	if err != nil {
		return err
	}
	// One more than asked says whether there is a next page.
	limit := f.Limit
	f.Limit++
	es, err := s.deps.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	page := auditPage{Entries: es}
	if len(es) > limit {
		page.Entries = es[:limit]
		last := page.Entries[limit-1]
		page.NextCursor = audit.Cursor{At: last.At, ID: last.ID}.String()
	}
	return writeJSON(w, http.StatusOK, page)
}

func (s *server) handleAuditExport(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.auditLog(); err != nil {
		return err
	}
	f, err := auditFilter(r, false)
	if err != nil {
		return err
	}
	f.Limit = audit.MaxPageSize
	es, err := s.deps.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a long export is not a stuck client
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for {
		for _, e := range es {
			if err := enc.Encode(e); err != nil {
				return nil // the client went away
			}
		}
		if len(es) < f.Limit {
			break
		}
		last := es[len(es)-1]
		f.After = &audit.Cursor{At: last.At, ID: last.ID}
		if es, err = s.deps.Store.ListAudit(r.Context(), f); err != nil {
			// The answer has begun: end it short; the client sees no final newline-terminated page.
			s.logger(r).WarnContext(r.Context(), "audit export cut short", "err", err)
			return nil
		}
	}
	return bw.Flush()
}
