package sandbox

import (
	"cmp"
	"context"
	"io"
	"regexp"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Terminals is the optional interactive-terminal capability: sessions on a
// pseudo-terminal allocated inside the sandbox, which outlive the
// connection attached to them for a grace period and keep a bounded
// scrollback for whoever attaches next.
type Terminals interface {
	// AttachPTY starts a session (req.SessionID empty) or attaches to one.
	// A session the sandbox does not have is errs.NotFound; one too many
	// is errs.TooMany.
	AttachPTY(ctx context.Context, ref Ref, req PTYRequest) (PTY, error)
	ListPTY(ctx context.Context, ref Ref) ([]PTYSession, error)
	// ClosePTY ends a session and what its process started.
	ClosePTY(ctx context.Context, ref Ref, sessionID string) error
}

// PTYRequest starts or attaches to a terminal session.
type PTYRequest struct {
	SessionID string // attach to this session; empty: start one
	Cols      uint16 // window size (on attach: resizes when set)
	Rows      uint16
	// Argv is the command of a new session; empty: the user's login shell.
	Argv []string
	// Grace is how long a new session outlives its last connection.
	Grace time.Duration
}

// PTY is one attached connection to a terminal session. Read returns the
// session's scrollback, then its live output; io.EOF once the session has
// ended (ExitCode is then set), ErrPTYLagged when this connection fell
// too far behind the session's output (attach again: nothing is lost
// beyond the scrollback). Write sends keystrokes. Read and Write may run
// concurrently; Close detaches without ending the session.
type PTY interface {
	io.ReadWriteCloser
	SessionID() string
	Resize(cols, rows uint16) error
	ExitCode() int
}

// PTYSession describes one live terminal session.
type PTYSession struct {
	SessionID string    `json:"session_id"`
	Command   []string  `json:"command"`
	StartedAt time.Time `json:"started_at"`
	Attached  int       `json:"attached"`
	Cols      uint16    `json:"cols"`
	Rows      uint16    `json:"rows"`
}

// ErrPTYLagged is PTY.Read's error for a connection cut for reading slower
// than the session wrote.
var ErrPTYLagged = errs.E(errs.Unavailable, "the terminal connection fell behind its output; attach again to continue from the scrollback")

// DefaultPTYGrace is how long a terminal session outlives its last
// connection unless configured (TECHBOSS_PTY_GRACE).
const DefaultPTYGrace = 5 * time.Minute

// MaxPTYSize bounds a terminal's columns and rows.
const MaxPTYSize = 1000

var ptySessionID = regexp.MustCompile(`^pty_[0-9a-z]{1,64}$`)

// CheckPTYRequest validates the caller's part of req.
func CheckPTYRequest(req PTYRequest) error {
	var bad []errs.FieldError
	if req.SessionID != "" && !ptySessionID.MatchString(req.SessionID) {
		bad = append(bad, errs.FieldError{Field: "session_id", Reason: "not a terminal session ID"})
	}
	if req.Cols == 0 || req.Cols > MaxPTYSize {
		bad = append(bad, errs.FieldError{Field: "cols", Reason: "must be an integer from 1 to 1000"})
	}
	if req.Rows == 0 || req.Rows > MaxPTYSize {
		bad = append(bad, errs.FieldError{Field: "rows", Reason: "must be an integer from 1 to 1000"})
	}
	if len(bad) > 0 {
		return errs.Fields(bad)
	}
	return nil
}

// terminals returns the owner's running sandbox and its driver's terminal
// capability; a driver without one is errs.NotImplemented.
func (m *Manager) terminals(ctx context.Context, ownerID, id string) (*Sandbox, Terminals, error) {
	sb, drv, err := m.Running(ctx, ownerID, id)
	if err != nil {
		return nil, nil, err
	}
	t, ok := drv.(Terminals)
	if !ok {
		return nil, nil, errs.E(errs.NotImplemented, "driver %s does not support terminals", sb.Driver)
	}
	return sb, t, nil
}

// AttachPTY starts or re-attaches to a terminal session in the owner's
// sandbox. The sandbox counts as busy (never idle-reaped) while the
// returned PTY is open, and each keystroke counts as activity.
func (m *Manager) AttachPTY(ctx context.Context, ownerID, id string, req PTYRequest) (PTY, error) {
	if err := CheckPTYRequest(req); err != nil {
		return nil, err
	}
	sb, t, err := m.terminals(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	if req.Grace <= 0 {
		req.Grace = cmp.Or(m.limits.PTYGrace, DefaultPTYGrace)
	}
	p, err := t.AttachPTY(ctx, sb.Ref, req)
	if err != nil {
		return nil, err
	}
	return &busyPTY{PTY: p, touch: func() { m.Touch(id) }, release: m.MarkBusy(id)}, nil
}

// ListPTY lists the terminal sessions of the owner's sandbox.
func (m *Manager) ListPTY(ctx context.Context, ownerID, id string) ([]PTYSession, error) {
	sb, t, err := m.terminals(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	return t.ListPTY(ctx, sb.Ref)
}

// ClosePTY ends one terminal session of the owner's sandbox.
func (m *Manager) ClosePTY(ctx context.Context, ownerID, id, sessionID string) error {
	if !ptySessionID.MatchString(sessionID) {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "terminal session not found")
	}
	sb, t, err := m.terminals(ctx, ownerID, id)
	if err != nil {
		return err
	}
	return t.ClosePTY(ctx, sb.Ref, sessionID)
}

type busyPTY struct {
	PTY
	touch   func()
	release func()
}

func (p *busyPTY) Write(b []byte) (int, error) {
	p.touch()
	return p.PTY.Write(b)
}

func (p *busyPTY) Close() error {
	p.release()
	return p.PTY.Close()
}
