package modaltest

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	xunix "golang.org/x/sys/unix"
)

// bind is one host directory visible inside a sandbox.
type bind struct {
	host, target string
	ro           bool
}

// sandbox is one Modal sandbox: a set of host directories bound into every
// exec with bubblewrap, plus its lifecycle state.
type sandbox struct {
	s                *Server
	id, taskID, app  string
	v2               bool
	created          time.Time
	tags             map[string]string
	env              map[string]string
	workdir          string
	binds            []bind // longest target first
	idle             time.Duration
	blockNetwork     bool
	ports            []uint32 // published through tunnels (open_ports)
	lifetime, idleTm *time.Timer

	mu      sync.Mutex
	res     *pb.GenericResult
	done    chan struct{}
	execs   map[string]*execProc
	running int
}

func (sb *sandbox) result() *pb.GenericResult {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.res
}

// terminate ends the sandbox once: it records the result, stops the timers
// and kills every process group its execs started.
func (sb *sandbox) terminate(st pb.GenericResult_GenericStatus, msg string) {
	sb.mu.Lock()
	if sb.res != nil {
		sb.mu.Unlock()
		return
	}
	sb.res = pb.GenericResult_builder{Status: st, Exception: msg}.Build()
	close(sb.done)
	if sb.lifetime != nil {
		sb.lifetime.Stop()
	}
	if sb.idleTm != nil {
		sb.idleTm.Stop()
	}
	procs := make([]*execProc, 0, len(sb.execs))
	for _, p := range sb.execs {
		procs = append(procs, p)
	}
	sb.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		<-p.done
	}
}

func (sb *sandbox) execStarted() {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.running++
	if sb.idleTm != nil {
		sb.idleTm.Stop()
	}
}

func (sb *sandbox) execEnded() {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.running--
	if sb.running == 0 && sb.idleTm != nil && sb.res == nil {
		sb.idleTm.Reset(sb.idle)
	}
}

// resolve maps an absolute path inside the sandbox to the bind holding it
// and the path relative to that bind's host directory.
func (sb *sandbox) resolve(p string) (bind, string, bool) {
	p = path.Clean(p)
	for _, b := range sb.binds {
		if p == b.target {
			return b, ".", true
		}
		if strings.HasPrefix(p, strings.TrimSuffix(b.target, "/")+"/") {
			return b, strings.TrimPrefix(p, strings.TrimSuffix(b.target, "/")+"/"), true
		}
	}
	return bind{}, "", false
}

// stream is one exec's stdout or stderr, kept whole so a reader can
// (re)open it at any offset, as the router protocol allows.
type stream struct {
	mu     sync.Mutex
	buf    []byte
	closed bool
	notify chan struct{} // closed and replaced on every change
}

func newStream() *stream { return &stream{notify: make(chan struct{})} }

func (st *stream) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.buf = append(st.buf, p...)
	close(st.notify)
	st.notify = make(chan struct{})
	return len(p), nil
}

func (st *stream) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.closed {
		st.closed = true
		close(st.notify)
		st.notify = make(chan struct{})
	}
}

// from returns the bytes after off, whether the stream is finished, and a
// channel closed on the next change.
func (st *stream) from(off uint64) ([]byte, bool, <-chan struct{}) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if off > uint64(len(st.buf)) {
		off = uint64(len(st.buf))
	}
	return st.buf[off:], st.closed, st.notify
}

// execProc is one running or finished exec.
type execProc struct {
	id   string
	pgid int // 0 for in-process tools
	out  [2]*stream

	stdinMu     sync.Mutex
	stdin       *os.File // write end; nil once closed
	stdinOffset uint64
	stdinClosed bool

	done   chan struct{} // closed when the exit status is known
	code   *int32
	signal *int32
}

func (p *execProc) kill() {
	if p.pgid > 0 {
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	}
	p.closeStdin()
}

func (p *execProc) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil {
		_ = p.stdin.Close()
		p.stdin = nil
	}
	p.stdinClosed = true
}

// writeStdin applies a write at offset, skipping bytes already written
// (the client retries with the same offset).
func (p *execProc) writeStdin(off uint64, data []byte, eof bool) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdinClosed {
		if eof && len(data) == 0 {
			return nil
		}
		return errors.New("stdin is closed")
	}
	if off > p.stdinOffset {
		return fmt.Errorf("stdin offset %d is past the %d bytes written", off, p.stdinOffset)
	}
	skip := p.stdinOffset - off
	if skip < uint64(len(data)) {
		n, err := p.stdin.Write(data[skip:])
		p.stdinOffset += uint64(n)
		if err != nil {
			// The process stopped reading (exited); like a pipe, drop the rest.
			p.stdinOffset = off + uint64(len(data))
		}
	}
	if eof {
		_ = p.stdin.Close()
		p.stdin = nil
		p.stdinClosed = true
	}
	return nil
}

func defaultEnv() map[string]string {
	return map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": "/root",
	}
}

// startExec runs argv in the sandbox.
func (sb *sandbox) startExec(id string, argv []string, workdir string, env map[string]string, stdout, stderr bool) (*execProc, error) {
	p := &execProc{id: id, out: [2]*stream{newStream(), newStream()}, done: make(chan struct{})}
	fullEnv := defaultEnv()
	maps.Copy(fullEnv, sb.env)
	maps.Copy(fullEnv, env)
	if workdir == "" {
		workdir = sb.workdir
	}
	if workdir == "" {
		workdir = "/"
	}

	sb.mu.Lock()
	if sb.res != nil {
		sb.mu.Unlock()
		return nil, errSandboxFinished
	}
	sb.execs[id] = p
	sb.mu.Unlock()

	sb.execStarted()
	if len(argv) > 0 && argv[0] == fsToolsPath {
		sb.startFSTool(p, argv)
		return p, nil
	}

	args := []string{"--die-with-parent",
		"--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
		"--proc", "/proc", "--dev", "/dev"}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if t, err := os.Readlink("/" + l); err == nil {
			args = append(args, "--symlink", t, "/"+l)
		} else if _, err := os.Stat("/" + l); err == nil {
			args = append(args, "--ro-bind", "/"+l, "/"+l)
		}
	}
	// Shortest target first so nested mounts land on top of their parents.
	binds := append([]bind(nil), sb.binds...)
	sort.Slice(binds, func(i, j int) bool { return len(binds[i].target) < len(binds[j].target) })
	for _, b := range binds {
		flag := "--bind"
		if b.ro {
			flag = "--ro-bind"
		}
		args = append(args, flag, b.host, b.target)
	}
	for _, h := range sb.s.opts.HostBinds {
		args = append(args, "--ro-bind", h.Source, h.Target)
	}
	if sb.blockNetwork {
		// Modal's BlockNetwork: only loopback inside the sandbox.
		args = append(args, "--unshare-net")
	}
	args = append(args, "--chdir", workdir, "--clearenv")
	keys := make([]string, 0, len(fullEnv))
	for k := range fullEnv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--setenv", k, fullEnv[k])
	}
	args = append(args, "--")
	args = append(args, argv...)

	cmd := exec.Command(sb.s.bwrap, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	inR, inW, err := os.Pipe()
	if err != nil {
		sb.execFailed(p)
		return nil, err
	}
	cmd.Stdin = inR
	var readers [2]*os.File
	var writers []*os.File
	for i, want := range []bool{stdout, stderr} {
		if !want {
			p.out[i].close()
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			sb.execFailed(p)
			return nil, err
		}
		readers[i] = r
		writers = append(writers, w)
		if i == 0 {
			cmd.Stdout = w
		} else {
			cmd.Stderr = w
		}
	}
	if err := cmd.Start(); err != nil {
		for _, f := range append(writers, inR, inW) {
			_ = f.Close()
		}
		for _, r := range readers {
			if r != nil {
				_ = r.Close()
			}
		}
		sb.execFailed(p)
		return nil, err
	}
	_ = inR.Close()
	for _, w := range writers {
		_ = w.Close()
	}
	p.pgid = cmd.Process.Pid
	p.stdin = inW

	var pumps sync.WaitGroup
	for i, r := range readers {
		if r == nil {
			continue
		}
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			pump(p.out[i], r)
			_ = r.Close()
			p.out[i].close()
		}()
	}
	sb.s.wg.Add(1)
	go func() {
		defer sb.s.wg.Done()
		werr := cmd.Wait()
		// Background children may keep the pipes open; the exec is over when
		// its main process is, so stop reading shortly after.
		for _, r := range readers {
			if r != nil {
				_ = r.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			}
		}
		pumps.Wait()
		p.closeStdin()
		var code, sig int32
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			sig = int32(ws.Signal())
			p.signal = &sig
		} else if cmd.ProcessState != nil {
			code = int32(cmd.ProcessState.ExitCode())
			p.code = &code
		} else {
			code = 255
			_ = werr
			p.code = &code
		}
		close(p.done)
		sb.execEnded()
	}()
	return p, nil
}

// pump copies r to w until r ends or its read deadline (set once the
// exec's main process has exited) passes; then it still copies what the
// pipe held at that moment, so a pump the scheduler kept waiting past the
// deadline loses none of the main process's output, while a background
// child that goes on writing does not keep the exec open.
func pump(w io.Writer, r *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = w.Write(buf[:n])
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		left := 0
		if rc, err := r.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { left, _ = xunix.IoctlGetInt(int(fd), xunix.TIOCINQ) })
		}
		_ = r.SetReadDeadline(time.Now().Add(time.Second)) // the bytes are there already
		for left > 0 {
			n, err := r.Read(buf[:min(left, len(buf))])
			if n > 0 {
				_, _ = w.Write(buf[:n])
			}
			left -= n
			if err != nil {
				return
			}
		}
		return
	}
}

func (sb *sandbox) execFailed(p *execProc) {
	p.out[0].close()
	p.out[1].close()
	code := int32(126)
	p.code = &code
	close(p.done)
	sb.execEnded()
}

var errSandboxFinished = errors.New("sandbox has finished")

// copyTree copies a directory tree (regular files, dirs, symlinks).
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		t := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(t, fi.Mode().Perm()|0o700)
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, t)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(t, b, fi.Mode().Perm())
		}
		return nil
	})
}
