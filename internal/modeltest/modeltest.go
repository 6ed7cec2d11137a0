// Package modeltest is a scripted Anthropic Messages API server for tests.
// It listens on loopback and speaks the real wire protocol (SSE streaming
// and plain JSON) to the real Claude Code CLI and SDKs: each POST
// /v1/messages consumes the next scripted Reply (the last one repeats when
// the script runs out). It logs every request, so tests can assert what
// the client sent, and sums the usage it reported.
package modeltest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Usage is the token usage a reply reports.
type Usage struct {
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens"`
}

type kind int

const (
	kindMessage kind = iota
	kindHTTPError
	kindMidstream
)

// Reply is one scripted answer.
type Reply struct {
	kind      kind
	text      string
	toolName  string
	toolInput any
	status    int
	errType   string
	errMsg    string
	usage     Usage
	delay     time.Duration   // between streamed chunks
	hold      bool            // stop after the first chunk until the client goes away
	gate      <-chan struct{} // after the first chunk, wait for this to close
	times     int
}

// DefaultUsage is what a reply reports unless WithUsage says otherwise.
var DefaultUsage = Usage{InputTokens: 100, OutputTokens: 20}

// Text answers with plain text (stop_reason end_turn).
func Text(s string) Reply { return Reply{text: s, usage: DefaultUsage} }

// ToolUse answers with optional text and one tool_use block (stop_reason tool_use).
func ToolUse(text, name string, input any) Reply {
	return Reply{text: text, toolName: name, toolInput: input, usage: DefaultUsage}
}

// Bash calls the Bash tool with cmd.
func Bash(cmd string) Reply {
	return ToolUse("I'll run a command.", "Bash", map[string]string{"command": cmd, "description": "Run a command in the workspace"})
}

// Write calls the Write tool to create path with content.
func Write(path, content string) Reply {
	return ToolUse("I'll write the file.", "Write", map[string]string{"file_path": path, "content": content})
}

// HTTPError answers with an HTTP error status and an Anthropic error body
// (e.g. 500 api_error, 529 overloaded_error, 401 authentication_error).
func HTTPError(status int) Reply {
	typ := map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
		404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}[status]
	if typ == "" {
		typ = "api_error"
	}
	return Reply{kind: kindHTTPError, status: status, errType: typ, errMsg: fmt.Sprintf("%s (scripted %d)", typ, status)}
}

// MidstreamError answers 200 with message_start, then an SSE error event.
// A non-streaming request given this reply gets HTTP 529.
func MidstreamError() Reply {
	return Reply{kind: kindMidstream, errType: "overloaded_error", errMsg: "Overloaded (scripted mid-stream)", usage: Usage{InputTokens: DefaultUsage.InputTokens}}
}

// Slow streams the text in small chunks with delay between them.
func Slow(text string, delay time.Duration) Reply {
	return Reply{text: text, delay: delay, usage: DefaultUsage}
}

// Hang streams message_start and the first chunk of text, then holds the
// stream open until the client goes away (for cancel tests).
func Hang(text string) Reply { return Reply{text: text, hold: true, usage: DefaultUsage} }

// Gated streams the first chunk of text, then waits until gate is closed
// (or the client goes away) before the rest: a test sees what a client
// gets while the model is still answering.
func Gated(text string, gate <-chan struct{}) Reply {
	return Reply{text: text, gate: gate, usage: DefaultUsage}
}

// WithUsage sets the usage the reply reports.
func (r Reply) WithUsage(u Usage) Reply { r.usage = u; return r }

// Times makes the reply answer n requests before the script moves on.
func (r Reply) Times(n int) Reply { r.times = n; return r }

// Message is one entry of a request's messages (any role is accepted).
type Message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// Request is one logged request.
type Request struct {
	Method   string
	Path     string
	Query    string
	Header   http.Header
	Body     []byte
	Stream   bool
	Model    string
	Messages []Message
	Answer   string // what the server answered, e.g. "sse:end_turn", "http500", "404"
}

// Text returns every text in the request's messages, joined by newlines.
func (r Request) Text() string {
	var b strings.Builder
	for _, m := range r.Messages {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			b.WriteString(s + "\n")
			continue
		}
		var blocks []struct {
			Type    string          `json:"type"`
			Text    string          `json:"text"`
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(m.Content, &blocks)
		for _, bl := range blocks {
			if bl.Text != "" {
				b.WriteString(bl.Text + "\n")
			}
			if json.Unmarshal(bl.Content, &s) == nil {
				b.WriteString(s + "\n")
			}
		}
	}
	return b.String()
}

// Server is the scripted model server.
type Server struct {
	// URL is the base URL (http://127.0.0.1:PORT), for ANTHROPIC_BASE_URL.
	URL string

	srv  *httptest.Server
	done chan struct{} // closed by Close: releases held streams

	mu       sync.Mutex
	script   []Reply
	last     *Reply
	requests []Request
	reported Usage
	n        int
	changed  chan struct{} // closed and replaced when an answer completes
}

// New starts a server with the given script; it is closed at test cleanup.
func New(t testing.TB, script ...Reply) *Server {
	s := &Server{script: script, done: make(chan struct{}), changed: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server, releasing held streams first.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return
	default:
		close(s.done)
	}
	s.mu.Unlock()
	s.srv.Close()
}

// Script appends replies to the script.
func (s *Server) Script(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, replies...)
}

// AwaitScriptTaken blocks until every scripted reply has been taken by a
// request (a reply repeated n times counts n) or ctx is done.
func (s *Server) AwaitScriptTaken(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		left := len(s.script)
		s.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("modeltest: %d scripted replies not taken: %w", left, ctx.Err())
		}
	}
}

// Reset replaces the rest of the script.
func (s *Server) Reset(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append([]Reply(nil), replies...)
	s.last = nil
}

// Requests returns a copy of the request log.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// MessageRequests returns the logged POST /v1/messages requests.
func (s *Server) MessageRequests() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v1/messages" {
			out = append(out, r)
		}
	}
	return out
}

// Reported is the total usage the server reported in its answers
// (message_start and message_delta usage, or the JSON body's usage).
func (s *Server) Reported() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reported
}

func (s *Server) next() Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.script) == 0 {
		if s.last == nil {
			return Text("modeltest: empty script")
		}
		return *s.last
	}
	r := s.script[0]
	if r.times > 1 {
		s.script[0].times--
	} else {
		s.script = s.script[1:]
	}
	s.last = &r
	return r
}

func (s *Server) log(r Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
	close(s.changed)
	s.changed = make(chan struct{})
	return len(s.requests) - 1
}

func (s *Server) setAnswer(i int, a string, u Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[i].Answer = a
	s.reported.InputTokens += u.InputTokens
	s.reported.OutputTokens += u.OutputTokens
	s.reported.CacheReadTokens += u.CacheReadTokens
	s.reported.CacheCreationTokens += u.CacheCreationTokens
	close(s.changed)
	s.changed = make(chan struct{})
}

// AwaitMessageRequests blocks until n POST /v1/messages requests have
// arrived (answered or not) or ctx is done.
func (s *Server) AwaitMessageRequests(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got := 0
		for _, r := range s.requests {
			if r.Method == http.MethodPost && r.Path == "/v1/messages" {
				got++
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("modeltest: %d of %d message requests: %w", got, n, ctx.Err())
		}
	}
}

// AwaitAnswers blocks until n requests have been answered completely
// (including streams the client abandoned) or ctx is done.
func (s *Server) AwaitAnswers(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		done := 0
		for _, r := range s.requests {
			if r.Answer != "" {
				done++
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if done >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("modeltest: %d of %d answers: %w", done, n, ctx.Err())
		}
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	var parsed struct {
		Model    string    `json:"model"`
		Stream   bool      `json:"stream"`
		Messages []Message `json:"messages"`
	}
	_ = json.Unmarshal(body, &parsed)
	req.Model, req.Stream, req.Messages = parsed.Model, parsed.Stream, parsed.Messages
	i := s.log(req)

	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/messages":
	case r.Method == http.MethodPost && r.URL.Path == "/v1/messages/count_tokens":
		s.setAnswer(i, "count_tokens", Usage{})
		writeJSON(w, 200, map[string]int{"input_tokens": len(body) / 4})
		return
	default:
		s.setAnswer(i, "404", Usage{})
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeJSON(w, 404, errorBody("not_found_error", "no route "+r.URL.Path))
		return
	}
	if json.Unmarshal(body, &parsed) != nil {
		s.setAnswer(i, "http400", Usage{})
		writeJSON(w, 400, errorBody("invalid_request_error", "body is not JSON"))
		return
	}
	model := parsed.Model
	if model == "" {
		model = "claude-test"
	}
	s.mu.Lock()
	s.n++
	id := fmt.Sprintf("msg_test%06d", s.n)
	s.mu.Unlock()

	rep := s.next()
	switch {
	case rep.kind == kindHTTPError:
		s.setAnswer(i, fmt.Sprintf("http%d", rep.status), Usage{})
		w.Header().Set("request-id", "req_err")
		writeJSON(w, rep.status, errorBody(rep.errType, rep.errMsg))
	case rep.kind == kindMidstream && !parsed.Stream:
		s.setAnswer(i, "http529", Usage{})
		writeJSON(w, 529, errorBody("overloaded_error", rep.errMsg))
	case parsed.Stream:
		s.stream(w, r, i, id, model, rep)
	default:
		u := rep.usage
		s.setAnswer(i, "json:"+stopReason(rep), u)
		writeJSON(w, 200, map[string]any{
			"id": id, "type": "message", "role": "assistant", "model": model,
			"content": content(id, rep), "stop_reason": stopReason(rep), "stop_sequence": nil,
			"usage": u,
		})
	}
}

func stopReason(r Reply) string {
	if r.toolName != "" {
		return "tool_use"
	}
	return "end_turn"
}

func content(id string, r Reply) []map[string]any {
	var c []map[string]any
	if r.text != "" || r.toolName == "" {
		c = append(c, map[string]any{"type": "text", "text": r.text})
	}
	if r.toolName != "" {
		c = append(c, map[string]any{"type": "tool_use", "id": toolID(id), "name": r.toolName, "input": r.toolInput})
	}
	return c
}

func toolID(msgID string) string { return "toolu_" + strings.TrimPrefix(msgID, "msg_") }

func (s *Server) stream(w http.ResponseWriter, r *http.Request, i int, id, model string, rep Reply) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("request-id", "req_"+id)
	w.WriteHeader(200)
	rc := http.NewResponseController(w)
	var sent Usage
	answer := "sse:" + stopReason(rep)
	defer func() { s.setAnswer(i, answer, sent) }()
	emit := func(event string, data any) bool {
		b, _ := json.Marshal(data)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-r.Context().Done():
		case <-s.done:
		}
		return false
	}
	startUsage := Usage{InputTokens: rep.usage.InputTokens, CacheReadTokens: rep.usage.CacheReadTokens, CacheCreationTokens: rep.usage.CacheCreationTokens, OutputTokens: 1}
	if !emit("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": startUsage}}) {
		answer = "sse:client-gone"
		return
	}
	sent = startUsage
	if rep.kind == kindMidstream {
		emit("error", errorBody(rep.errType, rep.errMsg))
		answer = "sse:midstream-error"
		return
	}
	idx := 0
	if rep.text != "" || rep.toolName == "" {
		emit("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
		for n, chunk := range chunks(rep.text, 12) {
			if n > 0 && !wait(rep.delay) {
				answer = "sse:aborted"
				return
			}
			if !emit("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": chunk}}) {
				answer = "sse:client-gone"
				return
			}
			if n == 0 && rep.gate != nil {
				select {
				case <-rep.gate:
				case <-r.Context().Done():
					answer = "sse:aborted"
					return
				case <-s.done:
					answer = "sse:aborted"
					return
				}
			}
			if rep.hold {
				// Pings while holding, as the real API sends them on a
				// slow stream: a client's idle timeout must not end the
				// hold on a busy machine.
				tick := time.NewTicker(5 * time.Second)
				defer tick.Stop()
			hold:
				for {
					select {
					case <-r.Context().Done():
						break hold
					case <-s.done:
						break hold
					case <-tick.C:
						if !emit("ping", map[string]any{"type": "ping"}) {
							break hold
						}
					}
				}
				answer = "sse:held"
				return
			}
		}
		emit("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
		idx++
	}
	if rep.toolName != "" {
		in, _ := json.Marshal(rep.toolInput)
		emit("content_block_start", map[string]any{"type": "content_block_start", "index": idx, "content_block": map[string]any{
			"type": "tool_use", "id": toolID(id), "name": rep.toolName, "input": map[string]any{}}})
		for _, chunk := range chunks(string(in), 24) {
			emit("content_block_delta", map[string]any{"type": "content_block_delta", "index": idx, "delta": map[string]any{"type": "input_json_delta", "partial_json": chunk}})
		}
		emit("content_block_stop", map[string]any{"type": "content_block_stop", "index": idx})
	}
	emit("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stopReason(rep), "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": rep.usage.OutputTokens}})
	emit("message_stop", map[string]any{"type": "message_stop"})
	sent.OutputTokens = rep.usage.OutputTokens
}

// chunks splits s into pieces of at most n bytes without splitting UTF-8 sequences.
func chunks(s string, n int) []string {
	if s == "" {
		return []string{""}
	}
	var out []string
	for len(s) > 0 {
		k := min(n, len(s))
		for k < len(s) && k > 0 && s[k]&0xC0 == 0x80 {
			k--
		}
		if k == 0 {
			k = len(s)
		}
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

func errorBody(typ, msg string) map[string]any {
	return map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// ClaudeBin returns $TECHBOSS_CLAUDE_BIN, the real Claude Code CLI. When it
// is unset the test skips, or fails if TECHBOSS_REQUIRE_ALL=1.
func ClaudeBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv("TECHBOSS_CLAUDE_BIN")
	if p == "" {
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal("TECHBOSS_CLAUDE_BIN is not set (the real Claude Code CLI is required)")
		}
		t.Skip("why: TECHBOSS_CLAUDE_BIN is not set; the real Claude Code CLI is needed")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("TECHBOSS_CLAUDE_BIN: %v", err)
	}
	return p
}

// ClaudeInstall returns the npm prefix that holds the real CLI (the
// directory to mount read-only into sandboxes) and the CLI's path
// relative to it (node_modules/.bin/claude resolved to the real binary).
func ClaudeInstall(t testing.TB) (prefix, rel string) {
	t.Helper()
	bin := ClaudeBin(t)
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	// The prefix resolved too: it may sit behind a symlink (a worktree's
	// .tools pointing at a shared install).
	if prefix, err = filepath.EvalSymlinks(filepath.Dir(filepath.Dir(filepath.Dir(bin)))); err != nil {
		t.Fatal(err)
	}
	rel, err = filepath.Rel(prefix, real)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("TECHBOSS_CLAUDE_BIN %s is not inside an npm prefix (<prefix>/node_modules/.bin/claude)", bin)
	}
	return prefix, rel
}
