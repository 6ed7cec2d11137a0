package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// sseHeartbeat is how often an idle stream gets a ": ping" comment, so
// proxies and clients see it is alive.
const sseHeartbeat = 15 * time.Second

// sseStream writes Server-Sent Events. Its methods are safe for concurrent
// use, so a Heartbeat goroutine can share it with the event loop.
//
// Typical loop (no extra goroutine):
//
//	st, err := newSSE(w, r)
//	if err != nil { return err }
//	tick := time.NewTicker(sseHeartbeat)
//	defer tick.Stop()
//	for {
//		select {
//		case <-r.Context().Done():
//			return nil
//		case ev := <-events:
//			if err := st.Event(ev.ID, ev.Type, ev.Data); err != nil { return err }
//		case <-tick.C:
//			if err := st.Ping(); err != nil { return err }
//		}
//	}
//
// Or run st.Heartbeat(ctx, sseHeartbeat) under an errgroup beside the loop.
type sseStream struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	rc   *http.ResponseController
	ping []byte // what Ping writes
}

// ssePing is the SSE heartbeat, a comment.
var ssePing = []byte(": ping\n\n")

// newSSE starts an event stream on w: it sets the SSE headers, lifts the
// server's write deadline for this response only, and flushes the headers.
func newSSE(w http.ResponseWriter, r *http.Request) (*sseStream, error) {
	return newStream(w, "text/event-stream; charset=utf-8", ssePing)
}

// newStream starts a streaming response of contentType whose heartbeat
// (Ping) is ping; its writes go out at once (see newSSE).
func newStream(w http.ResponseWriter, contentType string, ping []byte) (*sseStream, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, fmt.Errorf("lift write deadline: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)
	st := &sseStream{w: w, rc: rc, ping: ping}
	if err := rc.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	return st, nil
}

// Event writes one event and flushes. id and event may be empty; data is
// split at newlines (\n, \r\n or \r) into several data: lines, so any text is
// transported intact. id and event must not contain newlines.
func (s *sseStream) Event(id, event string, data []byte) error {
	b, err := appendSSEEvent(make([]byte, 0, len(data)+len(id)+len(event)+32), id, event, data)
	if err != nil {
		return err
	}
	return s.write(b)
}

// appendSSEEvent appends one event in the SSE wire form to dst (see Event).
func appendSSEEvent(dst []byte, id, event string, data []byte) ([]byte, error) {
	if strings.ContainsAny(id, "\r\n\x00") || strings.ContainsAny(event, "\r\n") {
		return dst, errors.New("sse: id or event contains a newline")
	}
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	if event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, event...)
		dst = append(dst, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, "data: "...)
			dst = append(dst, data...)
			return append(dst, '\n', '\n'), nil
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// Close does nothing: net/http ends the response.
func (s *sseStream) Close() {}

// Comment writes a comment line (ignored by clients) and flushes.
func (s *sseStream) Comment(text string) error {
	text = strings.NewReplacer("\r", " ", "\n", " ").Replace(text)
	return s.write([]byte(": " + text + "\n\n"))
}

// Ping writes the heartbeat (for SSE the comment ": ping").
func (s *sseStream) Ping() error { return s.write(s.ping) }

// Retry tells the client how long to wait before reconnecting.
func (s *sseStream) Retry(d time.Duration) error {
	return s.write(fmt.Appendf(nil, "retry: %d\n\n", d.Milliseconds()))
}

// Heartbeat pings every interval until ctx is done (returns nil) or a write
// fails (returns the error). Run it beside the event loop under one owner.
func (s *sseStream) Heartbeat(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Ping(); err != nil {
				return err
			}
		}
	}
}

func (s *sseStream) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("sse write: %w", err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("sse flush: %w", err)
	}
	return nil
}
