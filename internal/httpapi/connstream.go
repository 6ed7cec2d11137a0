package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// streamWriteTimeout is how long a stream waits for a client to take
// bytes before dropping it (it resumes with Last-Event-ID).
const streamWriteTimeout = 30 * time.Second

// connStream is a long-lived streaming response written straight to the
// client's connection, taken over from net/http (hijacked) once the
// request was read and the stream accepted. Each event is encoded into one
// reused buffer as one HTTP chunk and sent with one write: none of
// net/http's layers (response and connection buffers, chunk writer,
// flushes), which cost a 5,000-subscriber fan-out about a third of its
// time on top of the write syscalls themselves (see BenchmarkSSEFanout).
// HTTP/1.x only; other protocols keep the ResponseWriter path.
//
// A goroutine reads the connection, so a client that leaves cancels the
// stream's context at once; Close stops it. Methods other than Close are
// for one goroutine (the handler's).
type connStream struct {
	conn    net.Conn
	sw      *statusWriter // the access log's status and byte count; may be nil
	chunked bool
	encode  func(dst []byte, id, event string, data []byte) ([]byte, error)
	ping    []byte // the heartbeat's payload

	buf       []byte
	deadlined time.Time // when the write deadline was last pushed forward
	gone      chan struct{}

	// Direct delivery (see agent.Subscription.SetDirect): while nonblock,
	// writes never wait; what the socket does not take waits in pending
	// for the next blocking write. raw is nil when the connection has no
	// file descriptor to write to without waiting (then no direct delivery).
	raw      syscall.RawConn
	nonblock bool
	pending  []byte
}

// errNoHijack means the response cannot be taken over (HTTP/2, or a
// writer without Hijack); the caller streams through the ResponseWriter.
var errNoHijack = errors.New("connection cannot be taken over")

// hijackStream answers r with 200 and the headers set on w so far (plus
// contentType) and takes over the connection. cancel is called when the
// client closes its side. The returned stream must be closed.
func hijackStream(w http.ResponseWriter, r *http.Request, contentType string, cancel context.CancelFunc,
	encode func(dst []byte, id, event string, data []byte) ([]byte, error), ping []byte) (*connStream, error) {
	if r.ProtoMajor != 1 {
		return nil, errNoHijack
	}
	h := w.Header().Clone()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if errors.Is(err, http.ErrNotSupported) {
		return nil, errNoHijack
	}
	if err != nil {
		return nil, fmt.Errorf("take over the connection: %w", err)
	}
	_ = brw // a pipelined request behind this one is not answered
	// The server's read deadline for the request would end the watch.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	sw, _ := w.(*statusWriter)
	if sw != nil {
		sw.status = http.StatusOK
	}
	c := &connStream{conn: conn, sw: sw, chunked: r.ProtoAtLeast(1, 1), encode: encode, ping: ping,
		buf: make([]byte, 0, 512), gone: make(chan struct{})}
	if sc, ok := conn.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	go c.watch(cancel)

	h.Set("Content-Type", contentType)
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Connection", "close")
	h.Del("Content-Length")
	if c.chunked {
		h.Set("Transfer-Encoding", "chunked")
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("\r\n")
	if err := c.write(head.Bytes()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// watch reads (and drops) what the client sends until its side closes or
// Close closes the connection, then cancels the stream.
func (c *connStream) watch(cancel context.CancelFunc) {
	defer close(c.gone)
	defer cancel()
	var b [64]byte
	for {
		if _, err := c.conn.Read(b[:]); err != nil {
			return
		}
	}
}

// Event writes one event as one chunk.
func (c *connStream) Event(id, event string, data []byte) error {
	b := c.buf[:0]
	if c.chunked {
		b = append(b, "00000000\r\n"...) // the size goes here: leading zeros are allowed
	}
	start := len(b)
	b, err := c.encode(b, id, event, data)
	if err != nil {
		return err
	}
	c.buf = b
	if len(b) == start {
		return nil
	}
	return c.send(b, start)
}

// Ping writes the heartbeat.
func (c *connStream) Ping() error {
	b := c.buf[:0]
	if c.chunked {
		b = append(b, "00000000\r\n"...)
	}
	start := len(b)
	b = append(b, c.ping...)
	c.buf = b
	return c.send(b, start)
}

// send frames b[start:] as a chunk (its header is b[:start]) and writes it.
func (c *connStream) send(b []byte, start int) error {
	if c.chunked {
		const hex = "0123456789abcdef"
		n := len(b) - start
		for i := 7; i >= 0; i-- {
			b[i] = hex[n&0xf]
			n >>= 4
		}
		b = append(b, '\r', '\n')
		c.buf = b
	}
	return c.write(b)
}

func (c *connStream) write(b []byte) error {
	if c.nonblock {
		if len(c.pending) == 0 {
			n, err := c.tryWrite(b)
			if err != nil {
				return err
			}
			b = b[n:]
		}
		c.pending = append(c.pending, b...)
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	return c.writeWait(b)
}

// flush writes what a direct delivery left in pending, waiting as a
// blocking write does.
func (c *connStream) flush() error {
	if len(c.pending) == 0 {
		return nil
	}
	err := c.writeWait(c.pending)
	c.pending = c.pending[:0]
	return err
}

// tryWrite makes one write attempt that does not wait for the socket.
func (c *connStream) tryWrite(b []byte) (int, error) {
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		n, werr = unix.Write(int(fd), b)
		return true
	})
	if errors.Is(werr, unix.EAGAIN) {
		n, werr = 0, nil
	}
	if n < 0 {
		n = 0
	}
	if c.sw != nil {
		c.sw.bytes += int64(n)
	}
	return n, errors.Join(err, werr)
}

func (c *connStream) writeWait(b []byte) error {
	// Pushing the deadline costs a timer update: do it at most once a
	// second, so it stays between 29 and 30 s ahead of any write.
	if now := time.Now(); now.Sub(c.deadlined) > time.Second {
		if err := c.conn.SetWriteDeadline(now.Add(streamWriteTimeout)); err != nil {
			return err
		}
		c.deadlined = now
	}
	n, err := c.conn.Write(b)
	if c.sw != nil {
		c.sw.bytes += int64(n)
	}
	return err
}

// Close ends the response (the last chunk) and the connection, and waits
// for the reader goroutine.
func (c *connStream) Close() {
	if c.chunked {
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.conn.Write([]byte("0\r\n\r\n"))
	}
	_ = c.conn.Close()
	<-c.gone
}
