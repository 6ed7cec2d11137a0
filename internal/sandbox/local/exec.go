package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

// copyBuf is the copy buffer for files, archives and stdin: large, so
// 64 MiB is a few hundred reads, not tens of thousands.
const copyBuf = 256 << 10

// pipeSize is requested for stdio pipes (the kernel's default cap is 1 MiB).
const pipeSize = 1 << 20

// Command output is read into a buffer of outBufMin bytes that doubles,
// up to pipeSize, each time a read fills it: a quiet command (and most
// stderr) keeps a small buffer, while a fast producer gets reads as large
// as its pipe. Fewer, larger reads mean fewer wake-ups along the stream
// (text through SSE: ~650 -> ~790 MiB/s median against 256 KiB reads).
const outBufMin = 64 << 10

// maxSunPath is the usable length of a Unix socket path.
const maxSunPath = 107

// listenUnix listens on path (which may be longer than sun_path allows)
// and leaves the socket file in place when the listener closes.
func listenUnix(path string) (*net.UnixListener, error) {
	var ln *net.UnixListener
	err := withShortPath(path, func(p string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// withShortPath calls fn with path, or, if path is too long for a Unix
// socket address, with /proc/self/fd/N/<base> where N is its directory.
func withShortPath(path string, fn func(string) error) error {
	if len(path) <= maxSunPath {
		return fn(path)
	}
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path)))
}

func dialAgent(ctx context.Context, path string) (*net.UnixConn, error) {
	var c net.Conn
	err := withShortPath(path, func(p string) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "unix", p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to sandbox agent: %w", err)
	}
	return c.(*net.UnixConn), nil
}

// prewarm asks ref's agent to make its spare threads now (agent.Spawner's
// Prewarm); best effort, bounded by a second.
func (d *Driver) prewarm(ref sandbox.Ref) {
	s, err := d.get(ref)
	if err != nil {
		return
	}
	s.mu.Lock()
	st, gone := s.st, s.gone
	s.mu.Unlock()
	if gone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = d.agentOp(ctx, &st, "warm")
}

// ping asks the agent for its PID; it proves the sandbox accepts execs.
func (d *Driver) ping(ctx context.Context, st *state) (int, error) {
	return d.agentOp(ctx, st, "ping")
}

// agentOp sends the agent a request of op alone and returns the PID its
// reply carries.
func (d *Driver) agentOp(ctx context.Context, st *state, op string) (int, error) {
	c, err := dialAgent(ctx, st.socket())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	frame, err := agent.EncodeRequest(agent.Request{Op: op})
	if err != nil {
		return 0, err
	}
	if _, err := c.Write(frame); err != nil {
		return 0, fmt.Errorf("%s agent: %w", op, err)
	}
	var rep agent.Reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return 0, fmt.Errorf("%s agent: %w", op, err)
	}
	return rep.Pid, nil
}

// setPipeSize enlarges a pipe's buffer. It goes through SyscallConn
// because File.Fd would switch the file to blocking mode, and a blocking
// pipe cannot be interrupted by a read deadline.
func setPipeSize(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}

// Output coalescing. A command that prints through stdio writes a few KiB
// at a time; copying each write to the caller on its own costs a frame, a
// write and a flush per few KiB. So while output streams in bulk (at least
// coalesceBytes delivered over the last one to two coalesceWindows: some
// 3 MiB/s and up), a read that did not fill the buffer waits up to
// coalesceWait for more before it is delivered, up to the buffer's size
// (which grows to pipeSize under sustained output). Output below that rate
// (an interactive prompt, log lines, a CLI's JSON events even a
// millisecond apart) goes out at once: a line is never held for the next.
const (
	coalesceWait   = 2 * time.Millisecond
	coalesceWindow = 10 * time.Millisecond
	coalesceBytes  = 64 << 10
)

// outRate tells bulk output from lines: the bytes delivered in the
// current coalesceWindow and the one before it.
type outRate struct {
	start     time.Time // of the current window
	cur, prev int
}

func (r *outRate) roll(now time.Time) {
	switch d := now.Sub(r.start); {
	case d >= 2*coalesceWindow:
		r.start, r.cur, r.prev = now, 0, 0
	case d >= coalesceWindow:
		r.start, r.cur, r.prev = now, 0, r.cur
	}
}

// delivered counts n bytes delivered at now.
func (r *outRate) delivered(now time.Time, n int) {
	r.roll(now)
	r.cur += n
}

// bulk reports whether output is streaming fast enough at now that a
// short read should wait for more.
func (r *outRate) bulk(now time.Time) bool {
	r.roll(now)
	return r.cur+r.prev >= coalesceBytes
}

// outPipe copies one of the command's output pipes to the caller.
type outPipe struct {
	r    *os.File
	w    io.Writer
	mu   *sync.Mutex // shared by an exec's pipes: callers may pass one writer for both
	done chan struct{}
	werr error  // first write error; later output is discarded
	buf  []byte // run's read buffer, then finish's
	// dl guards the read deadline, which both run (coalescing) and finish
	// (stopping) set: once stopping, run never moves it again.
	dl       sync.Mutex
	stopping bool
}

func newOutPipe(w io.Writer, mu *sync.Mutex) (*outPipe, *os.File, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	setPipeSize(r)
	return &outPipe{r: r, w: w, mu: mu, done: make(chan struct{})}, wr, nil
}

func (p *outPipe) write(b []byte) {
	if p.werr != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.w.Write(b); err != nil {
		p.werr = err
	}
}

func (p *outPipe) run() {
	defer close(p.done)
	p.buf = make([]byte, outBufMin)
	var rate outRate
	for {
		n, err := p.r.Read(p.buf)
		if n > 0 && err == nil && n < len(p.buf) && rate.bulk(time.Now()) {
			n, err = p.gather(n)
		}
		if n > 0 {
			p.write(p.buf[:n])
			rate.delivered(time.Now(), n)
		}
		if err != nil {
			return
		}
		if n == len(p.buf) && n < pipeSize {
			p.buf = make([]byte, 2*n)
		}
	}
}

// gather reads more into p.buf after its first n bytes until it is full or
// coalesceWait has passed. The error is a real one (EOF, or finish's stop),
// never the coalescing deadline's.
func (p *outPipe) gather(n int) (int, error) {
	if !p.setDeadline(time.Now().Add(coalesceWait)) {
		return n, os.ErrDeadlineExceeded // finish is stopping the reader
	}
	var err error
	for n < len(p.buf) {
		var m int
		m, err = p.r.Read(p.buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	if !p.setDeadline(time.Time{}) && err == nil {
		err = os.ErrDeadlineExceeded
	}
	return n, err
}

// setDeadline moves the read deadline unless finish has begun stopping
// the reader (then the stop's deadline stays and it reports false).
func (p *outPipe) setDeadline(t time.Time) bool {
	p.dl.Lock()
	defer p.dl.Unlock()
	if p.stopping {
		return false
	}
	_ = p.r.SetReadDeadline(t)
	return true
}

// finish stops copying once the command has exited. Background processes
// may hold the pipe's write end forever, so it does not wait for EOF: it
// stops the reader, then drains what the pipe holds without blocking.
// Everything the command wrote is in the pipe by now: a write into a full
// pipe blocks, so the command could not have exited before its last write
// was at least buffered.
func (p *outPipe) finish() {
	p.dl.Lock()
	p.stopping = true
	_ = p.r.SetReadDeadline(time.Now())
	p.dl.Unlock()
	<-p.done
	// RawConn.Read honours the deadline too: clear it; the drain below
	// never waits (its callback always reports done).
	_ = p.r.SetReadDeadline(time.Time{})
	if rc, err := p.r.SyscallConn(); err == nil {
		buf := p.buf // run has returned
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.Read(int(fd), buf)
				if n > 0 {
					p.write(buf[:n])
				}
				if n <= 0 || err != nil {
					return true
				}
			}
		})
	}
	_ = p.r.Close()
}

// Exec runs one command in the sandbox via its agent.
func (d *Driver) Exec(ctx context.Context, ref sandbox.Ref, req sandbox.ExecRequest) (sandbox.ExitStatus, error) {
	s, err := d.get(ref)
	if err != nil {
		return sandbox.ExitStatus{}, err
	}
	s.execs.Add(1)
	defer d.warmExecDone(ref)
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return sandbox.ExitStatus{}, errs.Field("command", "must not be empty")
	}
	for _, a := range req.Argv {
		if strings.ContainsRune(a, 0) {
			return sandbox.ExitStatus{}, errs.Field("command", "arguments must not contain NUL bytes")
		}
	}
	if err := checkEnv(req.Env); err != nil {
		return sandbox.ExitStatus{}, err
	}
	if req.Dir != "" && !strings.HasPrefix(req.Dir, "/") {
		return sandbox.ExitStatus{}, errs.Field("workdir", "must be an absolute path")
	}
	s.mu.Lock()
	st := s.st
	gone := s.gone
	s.mu.Unlock()
	if gone {
		return sandbox.ExitStatus{}, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox not found")
	}
	// The agent adds these to the sandbox's base environment.
	var env []string
	keys := make([]string, 0, len(req.Env))
	for k := range req.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = setEnv(env, k, req.Env[k])
	}
	user := req.User
	if user == "" {
		user = st.User
	}
	dir := req.Dir
	if dir == "" {
		dir = "/workspace"
	}
	return d.exec(ctx, &st, agent.Request{Op: "exec", Argv: req.Argv, Env: env, Dir: dir, User: user}, req)
}

func (d *Driver) exec(ctx context.Context, st *state, areq agent.Request, req sandbox.ExecRequest) (sandbox.ExitStatus, error) {
	start := time.Now()
	c, err := dialAgent(ctx, st.socket())
	if err != nil {
		if !st.alive() {
			return sandbox.ExitStatus{}, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
		}
		return sandbox.ExitStatus{}, err
	}
	defer c.Close()

	// The command's ends of its pipes, sent to the agent and then closed here.
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			_ = f.Close()
		}
	}()
	var stdinW *os.File
	if req.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return sandbox.ExitStatus{}, fmt.Errorf("pipe: %w", err)
		}
		setPipeSize(w)
		childEnds = append(childEnds, r)
		stdinW = w
		areq.Fds[0] = true
	}
	var outs []*outPipe
	var errPipe *outPipe
	var writeMu sync.Mutex
	for i, w := range []io.Writer{req.Stdout, req.Stderr} {
		if w == nil {
			continue
		}
		p, wr, err := newOutPipe(w, &writeMu)
		if err != nil {
			return sandbox.ExitStatus{}, err
		}
		childEnds = append(childEnds, wr)
		outs = append(outs, p)
		// Started now so every return path can finish() it.
		go p.run()
		areq.Fds[i+1] = true
		if i == 1 {
			errPipe = p
		}
	}
	defer func() {
		for _, p := range outs {
			select {
			case <-p.done:
			default:
				p.finish()
			}
		}
		if stdinW != nil {
			_ = stdinW.Close()
		}
	}()

	frame, err := agent.EncodeRequest(areq)
	if err != nil {
		return sandbox.ExitStatus{}, errs.Wrap(errs.Invalid, err, "command and environment too large")
	}
	fds := make([]int, len(childEnds))
	for i, f := range childEnds {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	oomBefore := st.Cgroups.oomKills()
	// sendmsg on a stream socket may take only part of a large frame; the
	// fds ride with the first part.
	n, _, err := c.WriteMsgUnix(frame, oob, nil)
	if err == nil && n < len(frame) {
		_, err = c.Write(frame[n:])
	}
	if err != nil {
		return sandbox.ExitStatus{}, fmt.Errorf("send exec to agent: %w", err)
	}
	for _, f := range childEnds {
		_ = f.Close()
	}
	childEnds = nil

	replies := make(chan agent.Reply)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		dec := json.NewDecoder(bufio.NewReader(c))
		for {
			var rep agent.Reply
			if err := dec.Decode(&rep); err != nil {
				readErr <- err
				return
			}
			select {
			case replies <- rep:
			case <-readerDone:
			}
		}
	}()
	// The reader stops when the connection closes (deferred above it).
	defer func() {
		_ = c.Close()
		for {
			select {
			case <-replies:
				continue
			case <-readerDone:
			}
			break
		}
	}()

	if stdinW != nil {
		// Ends when req.Stdin is exhausted or the pipe is closed at exit.
		go func(w *os.File) {
			_, _ = io.CopyBuffer(w, struct{ io.Reader }{req.Stdin}, make([]byte, copyBuf))
			_ = w.Close()
		}(stdinW)
		stdinW = nil
	}

	// Controls go out only after the agent has answered the request: the
	// agent reads the request frame in one go and must not find a control
	// line glued to it.
	started := false
	var pending []agent.Control
	send := func(ctl agent.Control) {
		if !started {
			pending = append(pending, ctl)
			return
		}
		b, _ := json.Marshal(ctl)
		_, _ = c.Write(append(b, '\n'))
	}
	sigs := req.Signals
	done := ctx.Done()
	var ctxErr error
	// After a cancel, the agent has this long to confirm the kill.
	var killWait <-chan time.Time
	for {
		select {
		case rep := <-replies:
			if rep.Error != "" && !rep.Exited {
				if syscall.Errno(rep.Errno) == syscall.EAGAIN {
					// fork failed: every PID the sandbox may use is taken
					// (a bomb, or too many background jobs). Not the
					// command's fault, and it may work in a moment.
					return sandbox.ExitStatus{}, &errs.Error{Kind: errs.TooMany, RetryAfter: 1,
						Message: "cannot start the command: the sandbox has as many processes as its pids_limit allows; wait for some to exit, or kill them",
						Err:     errors.New(rep.Error)}
				}
				// The command did not start: report like a shell would.
				if errPipe != nil {
					errPipe.finish()
					errPipe.write([]byte("techboss: " + rep.Error + "\n"))
				}
				return sandbox.ExitStatus{Code: rep.Code, Duration: time.Since(start)}, ctxErr
			}
			if !rep.Exited {
				// The start line: flush what waited for it.
				started = true
				for _, ctl := range pending {
					send(ctl)
				}
				pending = nil
				continue
			}
			for _, p := range outs {
				p.finish()
			}
			es := sandbox.ExitStatus{Code: rep.Code, Duration: time.Since(start)}
			if rep.Signal > 0 {
				es.Signal = unix.SignalName(syscall.Signal(rep.Signal))
			}
			// Any OOM kill in the sandbox while the command ran: the victim
			// is often a child (a build step, a test runner's worker) while
			// the command itself survives to exit normally. The kernel
			// counts the kill before it delivers SIGKILL, so a kill that
			// made the command exit is counted by now.
			es.OOMKilled = st.Cgroups.oomKills() > oomBefore
			return es, ctxErr
		case err := <-readErr:
			if !st.alive() {
				return sandbox.ExitStatus{}, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox stopped")
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return sandbox.ExitStatus{}, fmt.Errorf("sandbox agent: %w", err)
		case sig, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			send(agent.Control{Signal: int(sig)})
		case <-done:
			ctxErr = ctx.Err()
			done = nil
			send(agent.Control{Kill: true})
			t := time.NewTimer(10 * time.Second)
			defer t.Stop()
			killWait = t.C
		case <-killWait:
			// Closing the connection (deferred) makes the agent kill too.
			return sandbox.ExitStatus{Signal: "SIGKILL", Code: 137, Duration: time.Since(start)}, ctxErr
		}
	}
}

// callAgent sends one request to the sandbox's agent and returns the open
// connection with a decoder for its reply lines; the caller closes it.
// Cancelling ctx unblocks every read and write on it.
func (d *Driver) callAgent(ctx context.Context, st *state, req agent.Request) (*net.UnixConn, *json.Decoder, func(), error) {
	c, err := dialAgent(ctx, st.socket())
	if err != nil {
		if !st.alive() {
			return nil, nil, nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
		}
		return nil, nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	done := func() { stop(); _ = c.Close() }
	frame, err := agent.EncodeRequest(req)
	if err == nil {
		_, err = c.Write(frame)
	}
	if err != nil {
		done()
		return nil, nil, nil, fmt.Errorf("agent %s: %w", req.Op, err)
	}
	return c, json.NewDecoder(c), done, nil
}
