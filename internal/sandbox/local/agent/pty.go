package agent

// Terminal sessions. A session is a shell (or any argv) on a pseudo-terminal
// allocated here, inside the sandbox's own /dev/pts: the server never opens
// a sandbox's terminal device, every byte goes through the agent socket. A
// session lives in the agent, not in the connection that opened it, so it
// survives dropped connections and server restarts; it ends when its
// process exits, when it is closed, or when nobody has been attached to it
// for its grace period.
//
// Ops (Request.Args in parentheses):
//
//	pty_open   (PTYOpenArgs)   start a session and attach to it
//	pty_attach (PTYAttachArgs) attach to a session: its scrollback, then live output
//	pty_list   ()              one JSON line: PTYList
//	pty_close  (PTYAttachArgs) end a session: one JSON line: PTYReply
//
// pty_open and pty_attach answer one JSON line (PTYReply); on success the
// connection then carries frames both ways (WriteFrame/ReadFrame): output
// and finally the exit to the driver, keystrokes and resizes to the agent.
// Every attached connection may write (like tmux): keystrokes from several
// viewers interleave at frame granularity.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of what terminal sessions may hold.
const (
	// MaxPTYSessions is the most live sessions one sandbox may have.
	MaxPTYSessions = 16
	// MaxPTYViewers is the most connections attached to one session.
	MaxPTYViewers = 8
	// PTYScrollback is how much recent output a session keeps for replay.
	PTYScrollback = 256 << 10
	// ptyViewerQueue bounds the output queued for one viewer that reads
	// slower than the session writes; past it the viewer is cut (its
	// connection gets FrameLagged) and re-attaches from the scrollback.
	ptyViewerQueue = 1 << 20
	// maxFrame bounds one frame's payload.
	maxFrame = 1 << 20
)

// Frame types on an attached connection.
const (
	FrameOutput byte = 'o' // agent -> driver: terminal output
	FrameExit   byte = 'x' // agent -> driver: the session ended; payload: 4-byte big-endian exit code
	FrameLagged byte = 'l' // agent -> driver: this viewer fell behind and was cut; re-attach
	FrameInput  byte = 'i' // driver -> agent: keystrokes (raw bytes)
	FrameResize byte = 'r' // driver -> agent: 2-byte cols, 2-byte rows (big-endian)
)

// WriteFrame writes one frame: its type, a 4-byte big-endian length, the payload.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	b := make([]byte, 5+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], uint32(len(payload)))
	copy(b[5:], payload)
	_, err := w.Write(b)
	return err
}

// ReadFrame reads one frame into buf (grown as needed) and returns its
// type and payload, which aliases buf.
func ReadFrame(r io.Reader, buf []byte) (byte, []byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, buf, fmt.Errorf("frame of %d bytes too large", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	p := buf[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, buf, fmt.Errorf("read frame: %w", io.ErrUnexpectedEOF)
	}
	return hdr[0], p, buf, nil
}

// ResizePayload encodes a FrameResize payload.
func ResizePayload(cols, rows uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[:2], cols)
	binary.BigEndian.PutUint16(b[2:], rows)
	return b[:]
}

// PTYOpenArgs are pty_open's arguments.
type PTYOpenArgs struct {
	Argv []string `json:"argv,omitempty"` // default: the user's login shell, as a login shell
	Env  []string `json:"env,omitempty"`  // over the sandbox's base environment
	User string   `json:"user,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	Cols uint16   `json:"cols"`
	Rows uint16   `json:"rows"`
	// GraceMS is how long the session outlives its last viewer (ms).
	GraceMS int64 `json:"grace_ms"`
}

// PTYAttachArgs are pty_attach's and pty_close's arguments. A non-zero
// size resizes the session on attach (the latest viewer's size wins).
type PTYAttachArgs struct {
	SessionID string `json:"session_id"`
	Cols      uint16 `json:"cols,omitempty"`
	Rows      uint16 `json:"rows,omitempty"`
}

// PTYReply is the first line of pty_open and pty_attach, and pty_close's
// only one.
type PTYReply struct {
	SessionID string `json:"session_id,omitempty"`
	Pid       int    `json:"pid,omitempty"`
	Error     string `json:"error,omitempty"`
	// Kind classifies Error: "not_found", "too_many", "invalid" or "" (other).
	Kind string `json:"kind,omitempty"`
}

// PTYInfo describes one live session.
type PTYInfo struct {
	SessionID string    `json:"session_id"`
	Argv      []string  `json:"command"`
	StartedAt time.Time `json:"started_at"`
	Attached  int       `json:"attached"`
	Cols      uint16    `json:"cols"`
	Rows      uint16    `json:"rows"`
}

// PTYList is pty_list's reply.
type PTYList struct {
	Sessions []PTYInfo `json:"sessions"`
}

func init() {
	RegisterOp("pty_open", opPTYOpen)
	RegisterOp("pty_attach", opPTYAttach)
	RegisterOp("pty_list", opPTYList)
	RegisterOp("pty_close", opPTYClose)
}

// ptys holds the agent's sessions. The agent process serves exactly one
// sandbox and the table lives exactly as long as it (sessions are state the
// agent keeps across connections, see Op).
var ptys = &ptyTable{m: map[string]*ptySession{}}

type ptyTable struct {
	mu sync.Mutex
	m  map[string]*ptySession
}

// ring keeps the last len(buf) bytes written to it.
type ring struct {
	buf      []byte
	start, n int
}

func (r *ring) write(p []byte) {
	size := len(r.buf)
	if len(p) >= size {
		copy(r.buf, p[len(p)-size:])
		r.start, r.n = 0, size
		return
	}
	for len(p) > 0 {
		pos := (r.start + r.n) % size
		k := copy(r.buf[pos:], p)
		p = p[k:]
		r.n += k
		if r.n > size {
			r.start = (r.start + r.n - size) % size
			r.n = size
		}
	}
}

func (r *ring) bytes() []byte {
	out := make([]byte, 0, r.n)
	if end := r.start + r.n; end <= len(r.buf) {
		return append(out, r.buf[r.start:end]...)
	}
	out = append(out, r.buf[r.start:]...)
	return append(out, r.buf[:(r.start+r.n)%len(r.buf)]...)
}

type ptySession struct {
	id      string
	argv    []string
	started time.Time
	master  *os.File
	pid     int
	tag     string
	grace   time.Duration
	wmu     sync.Mutex // serialises keystroke writes
	procMu  sync.Mutex // held by kill while it signals, and by wait to mark the process reaped
	reaped  bool
	done    chan struct{}

	mu      sync.Mutex // guards the fields below
	scroll  ring
	viewers map[*ptyViewer]bool
	cols    uint16
	rows    uint16
	code    int
	ending  bool        // killed or exited; no more attaches
	idle    *time.Timer // grace timer while nobody is attached
}

type ptyViewer struct {
	mu     sync.Mutex
	q      [][]byte
	qBytes int
	lagged bool
	wake   chan struct{} // capacity 1
	gone   chan struct{} // closed by attach when the viewer hung up
}

func (v *ptyViewer) push(p []byte) {
	v.mu.Lock()
	if !v.lagged {
		if v.qBytes+len(p) > ptyViewerQueue {
			v.lagged = true
			v.q, v.qBytes = nil, 0
		} else {
			v.q = append(v.q, p)
			v.qBytes += len(p)
		}
	}
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

func (v *ptyViewer) take() ([][]byte, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	q := v.q
	v.q, v.qBytes = nil, 0
	return q, v.lagged
}

func ptyFail(c *Call, kind, format string, a ...any) error {
	return c.Enc.Encode(PTYReply{Error: fmt.Sprintf(format, a...), Kind: kind})
}

func opPTYOpen(ctx context.Context, c *Call) error {
	var a PTYOpenArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil {
		return ptyFail(c, "invalid", "pty_open arguments: %v", err)
	}
	if a.Cols == 0 || a.Rows == 0 {
		return ptyFail(c, "invalid", "cols and rows must be positive")
	}
	s, err := startPTY(ctx, c, a)
	if err != nil {
		return err
	}
	if s == nil {
		return nil // reported
	}
	return s.attach(c, 0, 0)
}

func opPTYAttach(ctx context.Context, c *Call) error {
	var a PTYAttachArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil {
		return ptyFail(c, "invalid", "pty_attach arguments: %v", err)
	}
	ptys.mu.Lock()
	s := ptys.m[a.SessionID]
	ptys.mu.Unlock()
	if s == nil {
		return ptyFail(c, "not_found", "terminal session not found")
	}
	return s.attach(c, a.Cols, a.Rows)
}

func opPTYList(ctx context.Context, c *Call) error {
	out := PTYList{Sessions: []PTYInfo{}}
	ptys.mu.Lock()
	all := make([]*ptySession, 0, len(ptys.m))
	for _, s := range ptys.m {
		all = append(all, s)
	}
	ptys.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		out.Sessions = append(out.Sessions, PTYInfo{
			SessionID: s.id, Argv: s.argv, StartedAt: s.started, Attached: len(s.viewers), Cols: s.cols, Rows: s.rows,
		})
		s.mu.Unlock()
	}
	return c.Enc.Encode(out)
}

func opPTYClose(ctx context.Context, c *Call) error {
	var a PTYAttachArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil {
		return ptyFail(c, "invalid", "pty_close arguments: %v", err)
	}
	ptys.mu.Lock()
	s := ptys.m[a.SessionID]
	ptys.mu.Unlock()
	if s == nil {
		return ptyFail(c, "not_found", "terminal session not found")
	}
	s.kill()
	// Answer once it is gone, so a list right after does not show it.
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.Enc.Encode(PTYReply{SessionID: s.id})
}

// OpenPTY allocates a pseudo-terminal pair from /dev/ptmx; the master is
// registered with the runtime's poller (reads wait without a thread).
func OpenPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	var n uint32
	var ierr error
	rc, err := master.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) {
			if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr != nil {
				return
			}
			n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		})
	}
	if err == nil {
		err = ierr
	}
	if err != nil {
		_ = master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		_ = master.Close()
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	return master, slave, nil
}

// SetPTYSize sets a terminal's window size; the kernel sends SIGWINCH to
// its foreground process group. It reads the size back and sets it again
// when it did not take: under gVisor a TIOCSWINSZ that returned success
// now and then left the old size (once in about 200 loaded runs of
// TestPTYShellRunsc, the read-back right after it gave the old size, and
// so did the shell's stty seconds later).
func SetPTYSize(f *os.File, cols, rows uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	want := &unix.Winsize{Col: cols, Row: rows}
	var got *unix.Winsize
	for range setSizeTries {
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			if ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, want); ierr == nil {
				got, ierr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ)
			}
		}); err != nil {
			return err
		}
		if ierr != nil {
			return ierr
		}
		if got.Col == cols && got.Row == rows {
			return nil
		}
	}
	return fmt.Errorf("set the terminal to %dx%d: it stayed %dx%d", cols, rows, got.Col, got.Row)
}

// setSizeTries bounds SetPTYSize's attempts.
const setSizeTries = 5

// loginShell returns the shell /etc/passwd names for the user (name or
// uid), or the first of bash and sh that exists.
func loginShell(user string) string {
	name, _, _ := strings.Cut(user, ":")
	if name == "" {
		name = "root"
	}
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, ":")
			if len(f) < 7 || (f[0] != name && f[2] != name) {
				continue
			}
			if sh := f[6]; strings.HasPrefix(sh, "/") && !strings.HasSuffix(sh, "nologin") && !strings.HasSuffix(sh, "/false") {
				if fi, err := os.Stat(sh); err == nil && !fi.IsDir() {
					return sh
				}
			}
			break
		}
	}
	for _, sh := range []string{"/bin/bash", "/usr/bin/bash", "/bin/sh"} {
		if _, err := os.Stat(sh); err == nil {
			return sh
		}
	}
	return "/bin/sh"
}

func newSessionID() string {
	t := newExecTag()
	if t == "" {
		t = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return "pty_" + t
}

// startPTY starts a session's process on a fresh terminal. A nil session
// (and error) means the failure was reported to the driver already.
func startPTY(ctx context.Context, c *Call, a PTYOpenArgs) (*ptySession, error) {
	ptys.mu.Lock()
	live := len(ptys.m)
	ptys.mu.Unlock()
	if live >= MaxPTYSessions {
		return nil, ptyFail(c, "too_many", "this sandbox has %d terminal sessions already (the most it may have)", MaxPTYSessions)
	}
	cred, home, err := credential(a.User)
	if err != nil {
		return nil, ptyFail(c, "invalid", "%v", err)
	}
	argv := a.Argv
	if len(argv) == 0 {
		argv = []string{loginShell(a.User), "-l"}
	}
	env := MergeEnv(c.Base, a.Env)
	if home != "" && lookupEnv(env, "HOME") == "" {
		env = append(env, "HOME="+home)
	}
	if lookupEnv(env, "TERM") == "" {
		env = append(env, "TERM=xterm-256color")
	}
	if len(a.Argv) == 0 {
		env = MergeEnv(env, []string{"SHELL=" + argv[0]})
	}
	tag := newExecTag()
	if tag != "" {
		env = MergeEnv(env, []string{execTagVar + "=" + tag})
	}
	path, err := lookPath(argv[0], lookupEnv(env, "PATH"))
	if err != nil {
		return nil, ptyFail(c, "invalid", "%v", err)
	}
	dir := a.Dir
	if dir == "" {
		dir = "/"
	}
	master, slave, err := OpenPTY()
	if err != nil {
		return nil, ptyFail(c, "", "%v", err)
	}
	defer slave.Close()
	if err := SetPTYSize(master, a.Cols, a.Rows); err != nil {
		_ = master.Close()
		return nil, ptyFail(c, "", "set terminal size: %v", err)
	}
	if cred != nil {
		// The terminal is the user's, as login would make it (best effort:
		// the shell works through its open descriptors either way).
		_ = slave.Chown(int(cred.Uid), int(cred.Gid))
	}
	// Its own session with the terminal as its controlling terminal,
	// through the Spawner (it execs into no capability), like every exec.
	pidfd := -1
	p, err := c.Spawner.Start(ctx, path, argv, &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{slave, slave, slave},
		Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Credential: cred, PidFD: &pidfd},
	})
	if err != nil {
		_ = master.Close()
		return nil, ptyFail(c, "invalid", "start %s: %v", filepath.Base(path), err)
	}
	exit := pidfdFile(pidfd)
	_ = os.WriteFile("/proc/"+strconv.Itoa(p.Pid)+"/oom_score_adj", []byte("500"), 0)
	s := &ptySession{
		id: newSessionID(), argv: argv, started: time.Now().UTC(), master: master, pid: p.Pid, tag: tag,
		grace: time.Duration(a.GraceMS) * time.Millisecond, done: make(chan struct{}),
		scroll: ring{buf: make([]byte, PTYScrollback)}, viewers: map[*ptyViewer]bool{}, cols: a.Cols, rows: a.Rows,
	}
	ptys.mu.Lock()
	ptys.m[s.id] = s
	ptys.mu.Unlock()
	pumped := make(chan struct{})
	go s.pump(pumped)
	go s.wait(p, exit, pumped)
	// The agent stopping (the sandbox is being destroyed) ends it too.
	stop := context.AfterFunc(ctx, s.kill)
	go func() { <-s.done; stop() }()
	return s, nil
}

// pump copies the terminal's output to the scrollback and every viewer
// until the terminal is closed (wait stops it once the process is gone).
func (s *ptySession) pump(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 32<<10)
	for {
		n, err := s.master.Read(buf)
		if n > 0 {
			s.output(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (s *ptySession) output(p []byte) {
	chunk := append([]byte(nil), p...)
	s.mu.Lock()
	s.scroll.write(chunk)
	for v := range s.viewers {
		v.push(chunk)
	}
	s.mu.Unlock()
}

// wait ends the session when its process exits: what the process left
// running in the sandbox goes too (its exec tag), the terminal's remaining
// output reaches the viewers, then they get the exit.
func (s *ptySession) wait(p *os.Process, pidfd *os.File, pumped <-chan struct{}) {
	waitExited(pidfd)
	s.procMu.Lock()
	killTree(s.pid, s.tag) // before Wait: the pid cannot be reused meanwhile
	s.reaped = true
	s.procMu.Unlock()
	ps, werr := p.Wait()
	if pidfd != nil {
		_ = pidfd.Close()
	}
	// Background jobs may keep the terminal open despite killTree (an
	// untagged process of another user): stop reading, then drain what is
	// buffered without waiting, as exec's output pipes do.
	_ = s.master.SetReadDeadline(time.Now())
	<-pumped
	_ = s.master.SetReadDeadline(time.Time{})
	if rc, err := s.master.SyscallConn(); err == nil {
		buf := make([]byte, 32<<10)
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.Read(int(fd), buf)
				if n > 0 {
					s.output(buf[:n])
				}
				if n <= 0 || err != nil {
					return true
				}
			}
		})
	}
	_ = s.master.Close()
	code := 126
	if werr == nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				code = 128 + int(ws.Signal())
			} else {
				code = ws.ExitStatus()
			}
		}
	}
	ptys.mu.Lock()
	delete(ptys.m, s.id)
	ptys.mu.Unlock()
	s.mu.Lock()
	s.code = code
	s.ending = true
	if s.idle != nil {
		s.idle.Stop()
	}
	s.mu.Unlock()
	close(s.done)
}

// kill ends the session's process and everything it started.
func (s *ptySession) kill() {
	s.mu.Lock()
	s.ending = true
	s.mu.Unlock()
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if !s.reaped {
		killTree(s.pid, s.tag)
	}
}

// attach serves one viewer on c: the scrollback, then live output, until
// the session ends, the viewer hangs up or falls behind.
func (s *ptySession) attach(c *Call, cols, rows uint16) error {
	v := &ptyViewer{wake: make(chan struct{}, 1), gone: make(chan struct{})}
	s.mu.Lock()
	if s.ending {
		s.mu.Unlock()
		return ptyFail(c, "not_found", "terminal session not found")
	}
	if len(s.viewers) >= MaxPTYViewers {
		s.mu.Unlock()
		return ptyFail(c, "too_many", "this terminal session has %d viewers already (the most it may have)", MaxPTYViewers)
	}
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	if back := s.scroll.bytes(); len(back) > 0 {
		v.q, v.qBytes = [][]byte{back}, len(back)
		v.wake <- struct{}{}
	}
	s.viewers[v] = true
	s.mu.Unlock()
	if cols > 0 && rows > 0 {
		s.resize(cols, rows)
	}
	defer s.detach(v)
	if err := c.Enc.Encode(PTYReply{SessionID: s.id, Pid: s.pid}); err != nil {
		return err
	}
	written := make(chan error, 1)
	go func() {
		err := s.serveOutput(c.Conn, v)
		// Unblock the input reader below.
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
		written <- err
	}()
	s.serveInput(c.Conn)
	close(v.gone)
	_ = c.Conn.SetWriteDeadline(time.Unix(1, 0)) // unblock the writer if it is mid-write
	err := <-written
	if errors.Is(err, errViewerGone) {
		return nil
	}
	return err
}

var errViewerGone = errors.New("viewer hung up")

func (s *ptySession) serveOutput(c *net.UnixConn, v *ptyViewer) error {
	for {
		select {
		case <-v.wake:
		case <-s.done:
		case <-v.gone:
			return errViewerGone
		}
		q, lagged := v.take()
		for _, p := range q {
			if len(p) == 0 {
				continue
			}
			if err := WriteFrame(c, FrameOutput, p); err != nil {
				return err
			}
		}
		if lagged {
			return WriteFrame(c, FrameLagged, nil)
		}
		select {
		case <-s.done:
			v.mu.Lock()
			more := len(v.q) > 0 || v.lagged
			v.mu.Unlock()
			if more {
				continue // output queued after the wake: send it first
			}
			s.mu.Lock()
			code := s.code
			s.mu.Unlock()
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
			return WriteFrame(c, FrameExit, b[:])
		default:
		}
	}
}

// serveInput relays the viewer's keystrokes and resizes until it hangs up.
func (s *ptySession) serveInput(c *net.UnixConn) {
	var buf []byte
	for {
		var typ byte
		var p []byte
		var err error
		typ, p, buf, err = ReadFrame(c, buf)
		if err != nil {
			return
		}
		switch typ {
		case FrameInput:
			s.wmu.Lock()
			_, err = s.master.Write(p)
			s.wmu.Unlock()
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		case FrameResize:
			if len(p) == 4 {
				s.resize(binary.BigEndian.Uint16(p[:2]), binary.BigEndian.Uint16(p[2:]))
			}
		}
	}
}

func (s *ptySession) resize(cols, rows uint16) {
	if cols == 0 || rows == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ending {
		return
	}
	if SetPTYSize(s.master, cols, rows) == nil {
		s.cols, s.rows = cols, rows
	}
}

// detach removes v; the last viewer leaving starts the grace period.
func (s *ptySession) detach(v *ptyViewer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.viewers, v)
	if len(s.viewers) > 0 || s.ending {
		return
	}
	s.idle = time.AfterFunc(s.grace, func() {
		s.mu.Lock()
		expired := len(s.viewers) == 0 && !s.ending
		s.mu.Unlock()
		if expired {
			s.kill()
		}
	})
}
