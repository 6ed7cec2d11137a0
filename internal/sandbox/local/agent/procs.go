package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/techbossai/techboss/internal/outring"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Managed processes: commands started through the API that run in the
// background. The agent, which lives as long as the sandbox, starts them,
// reads their output into a bounded ring and keeps their exit status, so
// they and their logs outlive the driver's connection and a server restart.
//
// Ops (Request.Args in the op's JSON shape, replies as JSON lines of
// ProcLine):
//
//	proc_start  ProcStartArgs        -> {"proc":{...}}
//	proc_list   {}                   -> {"procs":[...]}
//	proc_logs   ProcLogsArgs         -> {"proc":{...},"offset":N} {"stream":..,"data":..}... {"gap":N} {"exit":N} then {"end":true}
//	proc_stdin  ProcStdinArgs        -> {"end":true}
//	proc_signal ProcSignalArgs       -> {"end":true}
//
// A failure is one line with Error and Kind.

// Limits of managed processes.
const (
	// MaxManagedRunning caps the running managed processes of a sandbox.
	MaxManagedRunning = 64
	// MaxManagedExited is how many exited managed processes stay listed
	// (with their exit code and logs); the oldest goes first.
	MaxManagedExited = 64
	// ProcRingSize bounds the output kept per process (stdout and stderr
	// together); older output is overwritten.
	ProcRingSize = 1 << 20
	// procChunk is the largest read from an output pipe.
	procChunk = 32 << 10
	// stdinTimeout is how long a stdin write may wait for a process that
	// does not read.
	stdinTimeout = 10 * time.Second
)

// ProcInfo describes one process of the sandbox.
type ProcInfo struct {
	Pid       int       `json:"pid"`
	PPid      int       `json:"ppid"`
	Name      string    `json:"name"`
	Command   []string  `json:"command"`
	Exited    bool      `json:"exited,omitempty"`
	StartedAt time.Time `json:"started_at"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Managed   bool      `json:"managed,omitempty"`
}

// ProcStartArgs are proc_start's arguments. Env overrides the sandbox's
// base environment (KEY=value).
type ProcStartArgs struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
}

// ProcLogsArgs are proc_logs' arguments.
type ProcLogsArgs struct {
	Pid    int  `json:"pid"`
	Follow bool `json:"follow,omitempty"`
	// From is the offset in the process's whole output to start at (a
	// reader resuming); past the end it is the end.
	From int64 `json:"from,omitempty"`
}

// ProcStdinArgs are proc_stdin's arguments.
type ProcStdinArgs struct {
	Pid  int    `json:"pid"`
	Data []byte `json:"data,omitempty"`
	EOF  bool   `json:"eof,omitempty"`
}

// ProcSignalArgs are proc_signal's arguments.
type ProcSignalArgs struct {
	Pid    int `json:"pid"`
	Signal int `json:"signal"`
}

// ProcLine is one reply line of the process ops.
type ProcLine struct {
	Proc   *ProcInfo  `json:"proc,omitempty"`
	Procs  []ProcInfo `json:"procs,omitempty"`
	Stream string     `json:"stream,omitempty"` // "stdout" | "stderr"
	Data   []byte     `json:"data,omitempty"`
	// Gap is how many bytes a follower missed because the ring overwrote them.
	Gap int64 `json:"gap,omitempty"`
	// Offset is where proc_logs starts in the process's whole output (on
	// its first line): data and gaps follow on from it.
	Offset int64 `json:"offset,omitempty"`
	Exit   *int  `json:"exit,omitempty"`
	End    bool  `json:"end,omitempty"`
	// Error and Kind report a failure: Kind is "not_found", "invalid"
	// (Field names the argument), "too_many" or "conflict".
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
	Field string `json:"field,omitempty"`
}

func init() {
	RegisterOp("proc_start", procStart)
	RegisterOp("proc_list", procList)
	RegisterOp("proc_logs", procLogs)
	RegisterOp("proc_stdin", procStdin)
	RegisterOp("proc_signal", procSignal)
}

// managed is one process started through proc_start.
type managed struct {
	info    ProcInfo
	stdin   *os.File   // nil once closed
	stdinMu sync.Mutex // one stdin writer at a time
	out     *outring.Ring
}

// procTable is the sandbox's managed processes. The agent serves one
// sandbox, so one table per agent process.
var procTable = struct {
	sync.Mutex
	byPid  map[int]*managed
	exited []int // pids of exited ones, oldest first
}{byPid: map[int]*managed{}}

// readOutput copies one output pipe into m until EOF, or until the
// process has exited and done is closed: then it drains what the pipe
// holds without waiting (a background child may keep the pipe open).
func (m *managed) readOutput(r *os.File, stream string, wg *sync.WaitGroup) {
	defer wg.Done()
	defer r.Close()
	buf := make([]byte, procChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			buf = m.keep(stream, buf, n)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			drainPipe(r, buf, func(b []byte, n int) []byte { return m.keep(stream, b, n) })
		}
		return
	}
}

// keep appends buf[:n] to the ring and returns the buffer for the next
// read: a small read is copied (the ring must not pin a whole read buffer
// per byte), a large one is kept and a new buffer made.
func (m *managed) keep(stream string, buf []byte, n int) []byte {
	if n < len(buf)/2 {
		m.out.Append(stream, bytes.Clone(buf[:n]))
		return buf
	}
	m.out.Append(stream, buf[:n:n])
	return make([]byte, procChunk)
}

// drainPipe reads what r holds now without blocking into buf, handing each
// read to fn, which returns the buffer for the next.
func drainPipe(r *os.File, buf []byte, fn func([]byte, int) []byte) {
	_ = r.SetReadDeadline(time.Time{})
	rc, err := r.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Read(int(fd), buf)
			if n > 0 {
				buf = fn(buf, n)
			}
			if n <= 0 || err != nil {
				return true
			}
		}
	})
}

func replyErr(enc *json.Encoder, kind, field, format string, a ...any) error {
	return enc.Encode(ProcLine{Error: fmt.Sprintf(format, a...), Kind: kind, Field: field})
}

func procStart(ctx context.Context, c *Call) error {
	var a ProcStartArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil || len(a.Argv) == 0 || a.Argv[0] == "" {
		return replyErr(c.Enc, "invalid", "command", "must name a program")
	}
	procTable.Lock()
	running := len(procTable.byPid) - len(procTable.exited)
	procTable.Unlock()
	if running >= MaxManagedRunning {
		return replyErr(c.Enc, "too_many", "", "the sandbox already runs %d managed processes; stop one (signal) before starting another", MaxManagedRunning)
	}
	env := MergeEnv(c.Base, a.Env)
	// A tag of its own: no exec's cleanup (killTree) takes it for one of
	// the exec's leftovers, and what it starts can be told apart.
	if tag := newExecTag(); tag != "" {
		env = MergeEnv(env, []string{execTagVar + "=" + tag})
	}
	cred, home, err := credential(a.User)
	if err != nil {
		return replyErr(c.Enc, "invalid", "user", "%s", err.Error())
	}
	if home != "" && lookupEnv(env, "HOME") == "" {
		env = append(env, "HOME="+home)
	}
	path, err := lookPath(a.Argv[0], lookupEnv(env, "PATH"))
	if err != nil {
		return replyErr(c.Enc, "invalid", "command", "%s", err.Error())
	}
	dir := a.Dir
	if dir == "" {
		dir = "/"
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return replyErr(c.Enc, "invalid", "workdir", "%s is not a directory in the sandbox", dir)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return replyErr(c.Enc, "", "", "pipe: %v", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return replyErr(c.Enc, "", "", "pipe: %v", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return replyErr(c.Enc, "", "", "pipe: %v", err)
	}
	pidfd := -1
	p, err := c.Spawner.Start(ctx, path, a.Argv, &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{inR, outW, errW},
		// A session of its own: no terminal, and a signal to the agent's
		// group never reaches it.
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: cred, PidFD: &pidfd},
	})
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		var errno syscall.Errno
		if errors.As(err, &errno) && errno == syscall.EAGAIN {
			return replyErr(c.Enc, "too_many", "", "cannot start the command: the sandbox has as many processes as its pids_limit allows")
		}
		return replyErr(c.Enc, "invalid", "command", "%s", err.Error())
	}
	_ = os.WriteFile("/proc/"+strconv.Itoa(p.Pid)+"/oom_score_adj", []byte("500"), 0)
	name := a.Name
	if name == "" {
		name = a.Argv[0]
	}
	m := &managed{
		info: ProcInfo{
			Pid: p.Pid, PPid: os.Getpid(), Name: name, Command: a.Argv,
			StartedAt: time.Now().UTC(), Managed: true,
		},
		stdin: inW,
		out:   outring.New(ProcRingSize),
	}
	procTable.Lock()
	if old, ok := procTable.byPid[p.Pid]; ok && old.info.Exited {
		procTable.exited = slices.DeleteFunc(procTable.exited, func(pid int) bool { return pid == p.Pid })
	}
	procTable.byPid[p.Pid] = m
	procTable.Unlock()

	var readers sync.WaitGroup
	readers.Add(2)
	go m.readOutput(outR, "stdout", &readers)
	go m.readOutput(errR, "stderr", &readers)
	// Waits in the poller (see waitExited); runs as long as the process.
	go func() {
		exit := pidfdFile(pidfd)
		waitExited(exit)
		ps, werr := p.Wait()
		if exit != nil {
			_ = exit.Close()
		}
		code := -1
		if werr == nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
				code = ws.ExitStatus()
				if ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
			}
		}
		// Everything it wrote is in its pipes by now (see outPipe.finish in
		// the driver): stop the readers and let them drain.
		_ = outR.SetReadDeadline(time.Now())
		_ = errR.SetReadDeadline(time.Now())
		readers.Wait()
		m.stdinMu.Lock()
		if m.stdin != nil {
			_ = m.stdin.Close()
			m.stdin = nil
		}
		m.stdinMu.Unlock()
		m.out.Exit(code)
		procTable.Lock()
		if procTable.byPid[p.Pid] == m {
			m.info.Exited = true
			procTable.exited = append(procTable.exited, p.Pid)
			for len(procTable.exited) > MaxManagedExited {
				delete(procTable.byPid, procTable.exited[0])
				procTable.exited = procTable.exited[1:]
			}
		}
		procTable.Unlock()
	}()
	info := m.info
	return c.Enc.Encode(ProcLine{Proc: &info})
}

// bootTime is the kernel's boot time (the base of /proc/PID/stat's start
// times); zero if unknown.
func bootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(n, 0).UTC()
			}
		}
	}
	return time.Time{}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's start time: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ListProcs returns every process of the sandbox (as its /proc shows them)
// but the agent and PID 1, then the exited managed ones; managed ones carry
// their names.
func ListProcs() []ProcInfo {
	self := os.Getpid()
	boot := bootTime()
	procTable.Lock()
	table := make(map[int]ProcInfo, len(procTable.byPid))
	for pid, m := range procTable.byPid {
		info := m.info
		if exited, code := m.out.Exited(); exited {
			info.Exited, info.ExitCode = true, &code
		}
		table[pid] = info
	}
	procTable.Unlock()

	var out []ProcInfo
	d, err := os.Open("/proc")
	if err == nil {
		names, _ := d.Readdirnames(-1)
		_ = d.Close()
		for _, n := range names {
			pid, err := strconv.Atoi(n)
			if err != nil || pid == self || pid <= 1 {
				continue
			}
			info, ok := readProc(pid, boot)
			if !ok {
				continue
			}
			if t, ok := table[pid]; ok && !t.Exited {
				info.Name, info.Managed, info.StartedAt = t.Name, true, t.StartedAt
			}
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b ProcInfo) int { return a.Pid - b.Pid })
	var gone []ProcInfo
	for _, t := range table {
		if t.Exited {
			gone = append(gone, t)
		}
	}
	slices.SortFunc(gone, func(a, b ProcInfo) int { return a.StartedAt.Compare(b.StartedAt) })
	return append(out, gone...)
}

// readProc reads one process's parent, name, command line and start time.
// A zombie counts as exited.
func readProc(pid int, boot time.Time) (ProcInfo, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return ProcInfo{}, false
	}
	lp := bytes.IndexByte(stat, '(')
	rp := bytes.LastIndexByte(stat, ')')
	if lp < 0 || rp < lp {
		return ProcInfo{}, false
	}
	info := ProcInfo{Pid: pid, Name: string(stat[lp+1 : rp])}
	f := bytes.Fields(stat[rp+1:])
	// state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
	// cmajflt utime stime cutime cstime priority nice num_threads
	// itrealvalue starttime
	if len(f) > 19 {
		info.Exited = string(f[0]) == "Z" || string(f[0]) == "X"
		info.PPid, _ = strconv.Atoi(string(f[1]))
		if ticks, err := strconv.ParseInt(string(f[19]), 10, 64); err == nil && !boot.IsZero() {
			info.StartedAt = boot.Add(time.Duration(ticks) * time.Second / clockTicks)
		}
	}
	if cl, err := os.ReadFile(dir + "/cmdline"); err == nil && len(cl) > 0 {
		for a := range bytes.SplitSeq(bytes.TrimSuffix(cl, []byte{0}), []byte{0}) {
			info.Command = append(info.Command, string(a))
		}
	}
	if info.Command == nil {
		info.Command = []string{}
	}
	return info, true
}

func procList(ctx context.Context, c *Call) error {
	procs := ListProcs()
	if procs == nil {
		procs = []ProcInfo{}
	}
	return c.Enc.Encode(struct {
		Procs []ProcInfo `json:"procs"`
	}{procs})
}

func lookupManaged(enc *json.Encoder, pid int) (*managed, error) {
	procTable.Lock()
	m := procTable.byPid[pid]
	procTable.Unlock()
	if m == nil {
		return nil, replyErr(enc, "not_found", "", "process %d was not started through the API (only those have captured output and stdin), or it exited long ago", pid)
	}
	return m, nil
}

// hangup returns a channel closed when the driver closes the connection
// (or sends anything: nothing is expected).
func hangup(c *Call) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		_, _ = io.Copy(io.Discard, bufio.NewReader(c.Conn))
	}()
	return gone
}

func procLogs(ctx context.Context, c *Call) error {
	var a ProcLogsArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil {
		return replyErr(c.Enc, "invalid", "pid", "bad arguments")
	}
	m, err := lookupManaged(c.Enc, a.Pid)
	if m == nil {
		return err
	}
	procTable.Lock()
	info := m.info
	procTable.Unlock()
	off := m.out.Clamp(a.From)
	if err := c.Enc.Encode(ProcLine{Proc: &info, Offset: off}); err != nil {
		return err
	}
	gone := hangup(c)
	defer func() {
		_ = c.Conn.Close() // ends the hang-up reader
		<-gone
	}()
	for {
		chunks, gap, exited, code, changed := m.out.Since(off)
		if gap > 0 {
			if err := c.Enc.Encode(ProcLine{Gap: gap}); err != nil {
				return err
			}
			off += gap
		}
		for _, ch := range chunks {
			if err := c.Enc.Encode(ProcLine{Stream: ch.Stream, Data: ch.Data}); err != nil {
				return err
			}
			off = ch.Off + int64(len(ch.Data))
		}
		if exited {
			if err := c.Enc.Encode(ProcLine{Exit: &code}); err != nil {
				return err
			}
			return c.Enc.Encode(ProcLine{End: true})
		}
		if !a.Follow {
			return c.Enc.Encode(ProcLine{End: true})
		}
		select {
		case <-changed:
		case <-gone:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func procStdin(ctx context.Context, c *Call) error {
	var a ProcStdinArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil {
		return replyErr(c.Enc, "invalid", "pid", "bad arguments")
	}
	m, err := lookupManaged(c.Enc, a.Pid)
	if m == nil {
		return err
	}
	m.stdinMu.Lock()
	defer m.stdinMu.Unlock()
	if m.stdin == nil {
		return replyErr(c.Enc, "conflict", "", "process %d has exited or its stdin was closed", a.Pid)
	}
	if len(a.Data) > 0 {
		_ = m.stdin.SetWriteDeadline(time.Now().Add(stdinTimeout))
		if _, err := m.stdin.Write(a.Data); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return replyErr(c.Enc, "conflict", "", "process %d does not read its stdin (its pipe is full)", a.Pid)
			}
			return replyErr(c.Enc, "conflict", "", "process %d closed its stdin", a.Pid)
		}
	}
	if a.EOF {
		_ = m.stdin.Close()
		m.stdin = nil
	}
	return c.Enc.Encode(ProcLine{End: true})
}

func procSignal(ctx context.Context, c *Call) error {
	var a ProcSignalArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil || a.Signal <= 0 || a.Signal > 64 {
		return replyErr(c.Enc, "invalid", "signal", "not a signal")
	}
	if a.Pid <= 1 || a.Pid == os.Getpid() {
		return replyErr(c.Enc, "not_found", "", "no process %d in the sandbox", a.Pid)
	}
	if err := signalAs(a.Pid, syscall.Signal(a.Signal)); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return replyErr(c.Enc, "not_found", "", "no process %d in the sandbox", a.Pid)
		}
		return replyErr(c.Enc, "", "", "signal %d: %v", a.Pid, err)
	}
	return c.Enc.Encode(ProcLine{End: true})
}

// signalAs sends sig to pid. The agent has no CAP_KILL, so a process of
// another user than the agent's is signalled from a thread that takes that
// user's uid as its effective uid for the call (credentials are per thread
// under Linux). The thread then takes uid 0 back (its saved uid, which
// needs no capability) and serves on: ending it instead would have the
// runtime make a new one later, which a fork bomb in the sandbox (the
// very process one may be signalling) would deny it (see WarmThreads).
// Only if the switch back fails does the thread end with its goroutine.
func signalAs(pid int, sig syscall.Signal) error {
	err := syscall.Kill(pid, sig)
	if !errors.Is(err, syscall.EPERM) {
		return err
	}
	uid, ok := procUID(pid)
	if !ok {
		return syscall.ESRCH
	}
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			res <- fmt.Errorf("switch to uid %d: %w", uid, e)
			runtime.UnlockOSThread()
			return
		}
		var err error
		if _, _, e := unix.RawSyscall(unix.SYS_KILL, uintptr(pid), uintptr(sig), 0); e != 0 {
			err = e
		}
		// Back to euid 0: the kernel copies the permitted capabilities to
		// the effective ones again. Unless all of that is so, the thread
		// stays locked and ends with this goroutine.
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e == 0 && threadCredsRestored() {
			runtime.UnlockOSThread()
		}
		res <- err
	}()
	return <-res
}

// threadCredsRestored reports whether the calling thread is back to uid 0
// with the agent's capabilities effective (keepCaps).
func threadCredsRestored() bool {
	if r, e, s := unix.Getresuid(); r != 0 || e != 0 || s != 0 {
		return false
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, e := unix.RawSyscall(unix.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return false
	}
	var mask uint32
	for _, c := range keepCaps {
		mask |= 1 << c
	}
	return data[0].Effective == mask && data[0].Permitted == mask && data[0].Inheritable == 0 && data[1] == (unix.CapUserData{})
}

// procUID reads a process's real uid.
func procUID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, err := strconv.Atoi(f[0])
				return n, err == nil
			}
		}
	}
	return 0, false
}
