package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// PTYOptions opens or re-attaches to a terminal session.
type PTYOptions struct {
	Cols, Rows int    // window size (0: 80x24)
	SessionID  string // re-attach to this session (its scrollback comes first)
}

// PTYSession describes one terminal session of a sandbox.
type PTYSession struct {
	SessionID string    `json:"session_id"`
	Command   []string  `json:"command"`
	StartedAt time.Time `json:"started_at"`
	Attached  int       `json:"attached"`
	Cols      int       `json:"cols"`
	Rows      int       `json:"rows"`
}

// Terminal is one connection to a terminal session in a sandbox. Read
// returns the terminal's output (raw bytes, escape sequences included) and
// io.EOF once the session's process has exited (see ExitCode); Write sends
// keystrokes. Read and Write may be used from two goroutines. Close
// detaches: the session keeps running for the server's grace period
// (TECHBOSS_PTY_GRACE), and PTY with its SessionID attaches again.
type Terminal struct {
	conn *websocket.Conn
	id   string

	rmu     sync.Mutex
	pending []byte
	exit    *int
	err     error
}

// ptyMessage is a text frame of the terminal protocol.
type ptyMessage struct {
	Type      string `json:"type"`
	SessionID string `json:"session_id,omitempty"`
	ExitCode  *int   `json:"exit_code,omitempty"`
	Message   string `json:"message,omitempty"`
	Cols      int    `json:"cols,omitempty"`
	Rows      int    `json:"rows,omitempty"`
}

// PTY opens a terminal in the sandbox (the image user's login shell in
// /workspace), or re-attaches to o.SessionID. Errors before the upgrade
// (a missing sandbox or session, too many sessions) are *Error.
func (c *Client) PTY(ctx context.Context, id string, o PTYOptions) (*Terminal, error) {
	q := url.Values{}
	if o.Cols > 0 {
		q.Set("cols", strconv.Itoa(o.Cols))
	}
	if o.Rows > 0 {
		q.Set("rows", strconv.Itoa(o.Rows))
	}
	if o.SessionID != "" {
		q.Set("session_id", o.SessionID)
	}
	u := *c.base
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path += "/sandbox/" + url.PathEscape(id) + "/pty"
	u.RawQuery = q.Encode()
	opts := &websocket.DialOptions{HTTPClient: c.hc}
	if c.token != "" {
		opts.HTTPHeader = map[string][]string{"Authorization": {"Bearer " + c.token}}
	}
	conn, res, err := websocket.Dial(ctx, u.String(), opts)
	if err != nil {
		if res != nil && res.StatusCode >= 400 {
			return nil, readError(res)
		}
		return nil, fmt.Errorf("terminal: %w", err)
	}
	conn.SetReadLimit(4 << 20)
	t := &Terminal{conn: conn}
	typ, b, err := conn.Read(ctx)
	var m ptyMessage
	if err == nil && (typ != websocket.MessageText || json.Unmarshal(b, &m) != nil || m.Type != "session") {
		err = fmt.Errorf("unexpected first message %q", b)
	}
	if err != nil {
		_ = conn.CloseNow()
		return nil, fmt.Errorf("terminal: %w", err)
	}
	t.id = m.SessionID
	return t, nil
}

// SessionID names the session, for re-attaching.
func (t *Terminal) SessionID() string { return t.id }

// ExitCode is the session's exit code once Read returned io.EOF.
func (t *Terminal) ExitCode() (code int, exited bool) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if t.exit == nil {
		return 0, false
	}
	return *t.exit, true
}

func (t *Terminal) Read(p []byte) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	for len(t.pending) == 0 {
		if t.err != nil {
			return 0, t.err
		}
		typ, b, err := t.conn.Read(context.Background())
		if err != nil {
			if t.exit != nil || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				err = io.EOF
			}
			t.err = err
			continue
		}
		if typ == websocket.MessageBinary {
			t.pending = b
			continue
		}
		var m ptyMessage
		if json.Unmarshal(b, &m) == nil {
			switch m.Type {
			case "exit":
				t.exit = m.ExitCode
			case "error":
				t.err = errors.New("terminal: " + m.Message)
			}
		}
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

// Write sends keystrokes (any bytes).
func (t *Terminal) Write(p []byte) (int, error) {
	if err := t.conn.Write(context.Background(), websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Resize changes the terminal's window size (the program gets SIGWINCH).
func (t *Terminal) Resize(ctx context.Context, cols, rows int) error {
	b, _ := json.Marshal(ptyMessage{Type: "resize", Cols: cols, Rows: rows})
	return t.conn.Write(ctx, websocket.MessageText, b)
}

// Close detaches from the session without ending it.
func (t *Terminal) Close() error {
	return t.conn.Close(websocket.StatusNormalClosure, "")
}

// PTYSessions lists the sandbox's terminal sessions.
func (c *Client) PTYSessions(ctx context.Context, id string) ([]PTYSession, error) {
	var out struct {
		Sessions []PTYSession `json:"sessions"`
	}
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/pty/sessions", nil, &out); err != nil {
		return nil, err
	}
	return out.Sessions, nil
}

// ClosePTY ends a terminal session and what its shell started.
func (c *Client) ClosePTY(ctx context.Context, id, sessionID string) error {
	return c.Do(ctx, "DELETE", "/sandbox/"+url.PathEscape(id)+"/pty/sessions/"+url.PathEscape(sessionID), nil, nil)
}
