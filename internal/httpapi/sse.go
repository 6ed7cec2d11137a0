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
//		case <-s.stopping():
//			return nil // the client reconnects with Last-Event-ID
//		case ev := <-events:
//			if err := st.Event(ev.ID, ev.Type, ev.Data); err != nil { return err }
//		case <-tick.C:
//			if err := st.Ping(); err != nil { return err }
//		}
//	}
//
// Or run st.Heartbeat(ctx, sseHeartbeat) under an errgroup beside the loop.
type sseStream struct {
	mu sync.Mutex
	w  http.ResponseWriter
	rc *http.ResponseController
}

// newSSE starts an event stream on w: it sets the SSE headers, lifts the
// server's write deadline for this response only, and flushes the headers.
func newSSE(w http.ResponseWriter, r *http.Request) (*sseStream, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, fmt.Errorf("lift write deadline: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)
	st := &sseStream{w: w, rc: rc}
	if err := rc.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	return st, nil
}

// Event writes one event and flushes. id and event may be empty; data is
// split at newlines (\n, \r\n or \r) into several data: lines, so any text is
// transported intact. id and event must not contain newlines.
func (s *sseStream) Event(id, event string, data []byte) error {
	if strings.ContainsAny(id, "\r\n\x00") || strings.ContainsAny(event, "\r\n") {
		return errors.New("sse: id or event contains a newline")
	}
	var b bytes.Buffer
	b.Grow(len(data) + len(id) + len(event) + 32)
	if id != "" {
		b.WriteString("id: ")
		b.WriteString(id)
		b.WriteByte('\n')
	}
	if event != "" {
		b.WriteString("event: ")
		b.WriteString(event)
		b.WriteByte('\n')
	}
	writeDataLines(&b, data)
	b.WriteByte('\n')
	return s.write(b.Bytes())
}

func writeDataLines(b *bytes.Buffer, data []byte) {
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			b.WriteString("data: ")
			b.Write(data)
			b.WriteByte('\n')
			return
		}
		b.WriteString("data: ")
		b.Write(data[:i])
		b.WriteByte('\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// Comment writes a comment line (ignored by clients) and flushes.
func (s *sseStream) Comment(text string) error {
	text = strings.NewReplacer("\r", " ", "\n", " ").Replace(text)
	return s.write([]byte(": " + text + "\n\n"))
}

// Ping writes the heartbeat comment ": ping".
func (s *sseStream) Ping() error { return s.Comment("ping") }

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
