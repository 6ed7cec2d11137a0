// Package llmtest runs local stand-ins for the model APIs this server
// cannot reach in tests. Each speaks its vendor's real wire protocol to the
// real SDK: Anthropic Messages SSE, OpenAI Chat Completions chunks and
// Responses events, and Bedrock ConverseStream in the AWS event-stream
// binary framing behind a SigV4 check. Replies are scripted per request.
package llmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/techbossai/techboss/internal/llm"
)

// Reply scripts one answer.
type Reply struct {
	Text      []string       // text deltas, in order
	ToolCalls []llm.ToolCall // streamed after the text, inputs in fragments
	Usage     llm.Usage
	Stop      llm.StopReason // default: tool_use when ToolCalls, else end_turn

	Status     int    // non-zero and not 200: answer with this HTTP error
	RetryAfter string // Retry-After header on an error answer
	Malformed  bool   // break the stream after the first text delta
	MidError   bool   // the vendor's in-stream error event after the first delta
	// Hold sends the first event, then waits until the client goes away
	// and reports that on Server.Cancelled.
	Hold bool
}

// Captured is one request the server received.
type Captured struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// JSON decodes the captured body into a generic map.
func (c Captured) JSON() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(c.Body, &m)
	return m
}

// Server is a scripted upstream. Push replies before the calls; when the
// queue is empty the default reply (a short text) is used.
type Server struct {
	*httptest.Server
	// Key is the API key the server accepts (Anthropic, OpenAI).
	Key string
	// Cancelled receives one value per held request whose client went away.
	Cancelled chan struct{}

	mu      sync.Mutex
	replies []Reply
	def     Reply
	reqs    []Captured
	sent    [][]byte
}

func newServer(t testing.TB, key string, h func(s *Server, w http.ResponseWriter, r *http.Request, rep Reply, body []byte)) *Server {
	s := &Server{Key: key, Cancelled: make(chan struct{}, 16),
		def: Reply{Text: []string{"Hello", ", world"}, Usage: llm.Usage{InputTokens: 12, OutputTokens: 5}}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, Captured{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		rep := s.def
		if len(s.replies) > 0 {
			rep = s.replies[0]
			s.replies = s.replies[1:]
		}
		s.mu.Unlock()
		rec := &recorder{ResponseWriter: w}
		h(s, rec, r, rep, body)
		s.mu.Lock()
		s.sent = append(s.sent, rec.buf.Bytes())
		s.mu.Unlock()
	}))
	if t != nil {
		t.Cleanup(s.Close)
	}
	return s
}

// Push queues replies for the next calls.
func (s *Server) Push(r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies = append(s.replies, r...)
}

// SetDefault replaces the reply used when the queue is empty.
func (s *Server) SetDefault(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = r
}

// Requests returns what the server received so far.
func (s *Server) Requests() []Captured {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Captured(nil), s.reqs...)
}

// Last returns the last request received.
func (s *Server) Last() Captured {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return Captured{}
	}
	return s.reqs[len(s.reqs)-1]
}

// Sent returns the exact response bodies written, one per request.
func (s *Server) Sent() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.sent...)
}

// recorder keeps a copy of the body written, for byte-faithfulness checks.
type recorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// hold blocks until the client disconnects, then reports it.
func (s *Server) hold(ctx context.Context) {
	<-ctx.Done()
	s.Cancelled <- struct{}{}
}

// fragments splits a JSON document into a few pieces, as vendors stream
// tool inputs.
func fragments(b []byte) []string {
	s := string(b)
	if len(s) < 4 {
		return []string{s}
	}
	a, c := len(s)/3, 2*len(s)/3
	return []string{s[:a], s[a:c], s[c:]}
}

func toolInput(tc llm.ToolCall) []byte {
	if len(tc.Input) == 0 {
		return []byte("{}")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, tc.Input); err != nil {
		return tc.Input
	}
	return buf.Bytes()
}

func stopOf(rep Reply) llm.StopReason {
	if rep.Stop != "" {
		return rep.Stop
	}
	if len(rep.ToolCalls) > 0 {
		return llm.StopToolUse
	}
	return llm.StopEnd
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func bearer(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}
