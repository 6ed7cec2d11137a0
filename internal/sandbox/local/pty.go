package local

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

var _ sandbox.Terminals = (*Driver)(nil)

// ptyError maps an agent's refusal to an error kind.
func ptyError(rep agent.PTYReply) error {
	switch rep.Kind {
	case "not_found":
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "terminal session not found")
	case "too_many":
		return errs.E(errs.TooMany, "%s", rep.Error)
	case "invalid":
		return errs.E(errs.Invalid, "%s", rep.Error)
	}
	return fmt.Errorf("terminal: %s", rep.Error)
}

// AttachPTY starts a terminal session in the sandbox (the image's user, in
// /workspace) or attaches to one. The terminal lives inside the sandbox:
// everything reaches it through the agent's socket.
func (d *Driver) AttachPTY(ctx context.Context, ref sandbox.Ref, req sandbox.PTYRequest) (sandbox.PTY, error) {
	_, st, err := d.running(ref)
	if err != nil {
		return nil, err
	}
	var areq agent.Request
	if req.SessionID == "" {
		args, _ := json.Marshal(agent.PTYOpenArgs{
			Argv: req.Argv, User: st.User, Dir: "/workspace", Cols: req.Cols, Rows: req.Rows,
			GraceMS: cmp.Or(req.Grace, sandbox.DefaultPTYGrace).Milliseconds(),
		})
		areq = agent.Request{Op: "pty_open", Args: args}
	} else {
		args, _ := json.Marshal(agent.PTYAttachArgs{SessionID: req.SessionID, Cols: req.Cols, Rows: req.Rows})
		areq = agent.Request{Op: "pty_attach", Args: args}
	}
	// The connection outlives the request that opened it: ctx bounds
	// only the handshake below.
	c, dec, done, err := d.callAgent(context.WithoutCancel(ctx), &st, areq)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	var rep agent.PTYReply
	err = dec.Decode(&rep)
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		done()
		return nil, fmt.Errorf("agent %s: %w", areq.Op, err)
	}
	if rep.Error != "" {
		done()
		return nil, ptyError(rep)
	}
	// Frames follow the reply line; the decoder may hold their first bytes,
	// after the line's newline, which it leaves unread.
	r := bufio.NewReaderSize(io.MultiReader(dec.Buffered(), c), 64<<10)
	if b, err := r.Peek(1); err == nil && b[0] == '\n' {
		_, _ = r.Discard(1)
	}
	return &ptyConn{id: rep.SessionID, c: c, r: r, done: done}, nil
}

// ListPTY lists the sandbox's terminal sessions.
func (d *Driver) ListPTY(ctx context.Context, ref sandbox.Ref) ([]sandbox.PTYSession, error) {
	_, st, err := d.running(ref)
	if err != nil {
		return nil, err
	}
	_, dec, done, err := d.callAgent(ctx, &st, agent.Request{Op: "pty_list"})
	if err != nil {
		return nil, err
	}
	defer done()
	var l agent.PTYList
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("agent pty_list: %w", err)
	}
	out := make([]sandbox.PTYSession, 0, len(l.Sessions))
	for _, s := range l.Sessions {
		out = append(out, sandbox.PTYSession{
			SessionID: s.SessionID, Command: s.Argv, StartedAt: s.StartedAt, Attached: s.Attached, Cols: s.Cols, Rows: s.Rows,
		})
	}
	return out, nil
}

// ClosePTY ends a terminal session and what its process started.
func (d *Driver) ClosePTY(ctx context.Context, ref sandbox.Ref, sessionID string) error {
	_, st, err := d.running(ref)
	if err != nil {
		return err
	}
	args, _ := json.Marshal(agent.PTYAttachArgs{SessionID: sessionID})
	_, dec, done, err := d.callAgent(ctx, &st, agent.Request{Op: "pty_close", Args: args})
	if err != nil {
		return err
	}
	defer done()
	var rep agent.PTYReply
	if err := dec.Decode(&rep); err != nil {
		return fmt.Errorf("agent pty_close: %w", err)
	}
	if rep.Error != "" {
		return ptyError(rep)
	}
	return nil
}

// ptyConn is one attached connection to a session in the agent.
type ptyConn struct {
	id   string
	c    *net.UnixConn
	r    io.Reader
	done func()

	rmu     sync.Mutex // one reader
	pending []byte     // the unread rest of an output frame
	buf     []byte
	code    int
	end     error // sticky: io.EOF after the exit, or why reading stopped

	wmu sync.Mutex // frames are written whole
}

func (p *ptyConn) SessionID() string { return p.id }

func (p *ptyConn) ExitCode() int {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	return p.code
}

func (p *ptyConn) Read(b []byte) (int, error) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	for len(p.pending) == 0 {
		if p.end != nil {
			return 0, p.end
		}
		typ, payload, buf, err := agent.ReadFrame(p.r, p.buf)
		p.buf = buf
		switch {
		case err != nil:
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// The agent went away mid-session: the sandbox stopped.
				err = errs.E(errs.Unavailable, "the sandbox stopped")
			}
			p.end = err
		case typ == agent.FrameOutput:
			p.pending = payload
		case typ == agent.FrameExit && len(payload) == 4:
			p.code = int(int32(binary.BigEndian.Uint32(payload)))
			p.end = io.EOF
		case typ == agent.FrameLagged:
			p.end = sandbox.ErrPTYLagged
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

func (p *ptyConn) Write(b []byte) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	written := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), 64<<10)]
		if err := agent.WriteFrame(p.c, agent.FrameInput, chunk); err != nil {
			return written, fmt.Errorf("terminal input: %w", err)
		}
		written += len(chunk)
		b = b[len(chunk):]
	}
	return written, nil
}

func (p *ptyConn) Resize(cols, rows uint16) error {
	if cols == 0 || rows == 0 || cols > sandbox.MaxPTYSize || rows > sandbox.MaxPTYSize {
		return errs.E(errs.Invalid, "cols and rows must be from 1 to %d", sandbox.MaxPTYSize)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return agent.WriteFrame(p.c, agent.FrameResize, agent.ResizePayload(cols, rows))
}

// Close detaches; the session keeps running for its grace period.
func (p *ptyConn) Close() error {
	p.done()
	return nil
}
