package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capabilities the agent keeps: it switches users for execs. Everything
// it starts ends up with none (see dropPrivileges).
var keepCaps = []uint{unix.CAP_SETUID, unix.CAP_SETGID}

// dropPrivileges empties the bounding, ambient and inheritable sets of
// every thread of the agent, sets no_new_privs on each and keeps only
// keepCaps effective and permitted. Capabilities are per thread in Linux,
// hence AllThreadsSyscall (the runtime's threads to come are cloned from
// these). A process it starts, root or not, then execs into no capability
// at all: after exec a root process's permitted set is its bounding,
// ambient and inheritable sets, all empty, and no_new_privs stops setuid
// and file capabilities. It needs CAP_SETPCAP (bwrap --cap-add) for the
// bounding set, and drops it. Done once at start: AllThreadsSyscall stops
// the world for each call.
func dropPrivileges() error {
	last := 63
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 && e != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); e != 0 {
		return fmt.Errorf("clear ambient capabilities: %w", e)
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return fmt.Errorf("set no_new_privs: %w", e)
	}
	var mask uint32
	for _, c := range keepCaps {
		mask |= 1 << c
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{{Effective: mask, Permitted: mask}}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

// Spawner starts every command of the sandbox, one at a time, once the
// agent has its spare threads (see WarmThreads), and lets them go again
// when the sandbox has been empty for a while (see shedThreads): the
// threads matter only while a process of the sandbox could take every
// PID, and each is a host task, which an idle sandbox should not cost.
type Spawner struct {
	warm  int           // spare threads: WarmThreads(warm) before a start
	turn  chan struct{} // holds one token: whoever has it starts, or sheds
	check *time.Timer   // the next look for an empty sandbox (idle)
	// looking is set while check is set to fire: a request then leaves it
	// be (touch).
	looking atomic.Bool
	// Under turn:
	spare  bool          // WarmThreads has run since the last shed
	every  time.Duration // until check fires
	closed bool          // ctx is done: no more looks
}

// NewSpawner readies the agent to start commands until ctx is done: it
// caps the runtime at maxProcs processors, drops the agent's privileges
// and makes warm spare threads.
func NewSpawner(ctx context.Context, warm int) (*Spawner, error) {
	runtime.GOMAXPROCS(maxProcs)
	if err := dropPrivileges(); err != nil {
		return nil, err
	}
	// The spare threads are made at once, in the background: a new
	// sandbox's first command comes soon (the driver's create answers
	// meanwhile). Until they exist, the token is the warm-up's.
	s := &Spawner{warm: warm, turn: make(chan struct{}, 1), every: idleAfter}
	s.check = time.AfterFunc(time.Hour, s.idle)
	s.check.Stop()
	go func() {
		WarmThreads(warm)
		s.spare = true
		s.lookIn(s.every)
		s.turn <- struct{}{}
	}()
	context.AfterFunc(ctx, func() {
		<-s.turn
		s.closed = true
		s.check.Stop()
		s.turn <- struct{}{}
	})
	return s, nil
}

// Start starts a process, after the spare threads exist.
func (s *Spawner) Start(ctx context.Context, path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	select {
	case <-s.turn:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { s.turn <- struct{}{} }()
	s.ready()
	return os.StartProcess(path, argv, attr)
}

// Prewarm makes the spare threads now if the agent let them go, so that a
// command expected soon (a sandbox just taken from the warm pool) does not
// wait for them: the driver asks while its create answers.
func (s *Spawner) Prewarm(ctx context.Context) {
	select {
	case <-s.turn:
	case <-ctx.Done():
		return
	}
	defer func() { s.turn <- struct{}{} }()
	s.ready()
}

// ready makes the spare threads if the agent let them go and puts the
// next look for an empty sandbox idleAfter from now. The caller holds
// turn.
func (s *Spawner) ready() {
	if !s.spare {
		WarmThreads(s.warm)
		s.spare = true
	}
	if !s.closed {
		s.every = idleAfter
		s.lookIn(s.every)
	}
}

// lookIn sets the next look for an empty sandbox d from now.
func (s *Spawner) lookIn(d time.Duration) {
	s.looking.Store(true)
	s.check.Reset(d)
}

// touch makes sure a look for an empty sandbox comes after a request,
// without putting off one already set: serving requests can make the
// runtime start threads (a system call that blocks hands its processor
// to another), and an idle sandbox should not keep them.
func (s *Spawner) touch() {
	if s.looking.CompareAndSwap(false, true) {
		s.check.Reset(idleAfter)
	}
}

// idle ends the spare threads when nothing but the agent and the
// sandbox's init runs; otherwise it looks again later, less often the
// longer the sandbox stays busy.
func (s *Spawner) idle() {
	<-s.turn
	defer func() { s.turn <- struct{}{} }()
	s.looking.Store(false)
	if s.closed {
		return
	}
	if othersRun() {
		s.every = min(2*s.every, maxIdleCheck)
		s.lookIn(s.every)
		return
	}
	shedThreads(idleThreads)
	s.spare = false
}

// idleAfter is how long after its last start the agent first looks for an
// empty sandbox; maxIdleCheck the longest it waits between looks.
const (
	idleAfter    = 5 * time.Second
	maxIdleCheck = time.Minute
)

// othersRun reports whether the sandbox's PID namespace holds a process
// other than the agent and PID 1 (bubblewrap's init, or runsc-agent
// under gVisor), which reaps but never forks. When /proc cannot be read,
// it says yes.
func othersRun() bool {
	d, err := os.Open("/proc")
	if err != nil {
		return true
	}
	defer d.Close()
	self := strconv.Itoa(os.Getpid())
	for {
		names, err := d.Readdirnames(64)
		for _, n := range names {
			if n != "1" && n != self && n[0] >= '0' && n[0] <= '9' {
				return true
			}
		}
		if err != nil {
			return !errors.Is(err, io.EOF)
		}
	}
}

// idleThreads is how many threads shedThreads leaves: the runtime's
// sysmon and template thread (LockOSThread starts it) and one to run
// goroutines on; one more may stay (the main thread cannot end, or one
// was waiting in the poller).
const idleThreads = 3

// shedThreads ends the agent's threads beyond keep. A goroutine that
// returns while locked to its thread ends that thread; locked all at once,
// the goroutines hold as many distinct threads. The main thread cannot
// end (the runtime parks it for good instead), so a goroutine on it
// unlocks. Only ever called when no process of the sandbox can take the
// PIDs of threads the runtime may make meanwhile.
func shedThreads(keep int) {
	n := countThreads() - keep
	if n <= 2 {
		// What a shed leaves anyway (see idleThreads): a look after each
		// request to an idle agent would otherwise end a thread that the
		// next request makes again.
		return
	}
	var locked, done sync.WaitGroup
	release := make(chan struct{})
	mainThread := os.Getpid() // its thread ID is the process ID
	for range n {
		locked.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			locked.Done()
			<-release
			if unix.Gettid() == mainThread {
				runtime.UnlockOSThread()
			}
		}()
	}
	locked.Wait()
	close(release)
	done.Wait()
}

// countThreads is the number of the agent's threads (0 if unknown).
func countThreads() int {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return 0
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	return len(names)
}

// maxProcs caps the agent's GOMAXPROCS (see WarmThreads): it serves one
// sandbox and does little but fork and wait. Without the cap, a many-core
// host would start a thread per core for the collector alone.
const maxProcs = 1

// WarmThreads makes the Go runtime start n OS threads now, while the
// sandbox's pids limit has room. Threads count against the limit like
// processes do, and the runtime aborts (taking the sandbox with it) when
// it cannot create one, which a fork bomb can cause at any moment; so the
// Spawner starts nothing before they exist (a warm-up still under way
// when a bomb went off once killed the agent). The runtime keeps idle
// threads for reuse, and the agent needs at most maxProcs, the runtime's
// own two, one waiting in the poller and the few that short system calls
// occupy: commands are waited for through the poller (waitExited), and
// exec starts are bounded (Serve). All of this fits in the driver's pids
// overhead.
func WarmThreads(n int) {
	// Each goroutine holds its own thread while locked to it, so n of them
	// locked at once means n threads exist; unlocked, they go back to the
	// runtime's idle list rather than away. (With a processor each, the
	// runtime would start them side by side, faster than one after the
	// other, but the processors' memory stays: 0.4 MiB more per idle agent.)
	var locked, done sync.WaitGroup
	release := make(chan struct{})
	for range n {
		locked.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			locked.Done()
			<-release
		}()
	}
	locked.Wait()
	close(release)
	done.Wait()
}

// maxStarting bounds the execs between their request and their start reply:
// each may briefly hold a thread in a system call (user lookup, PATH
// search), and more threads than WarmThreads made could not be had under
// a fork bomb. The Spawner starts one at a time anyway.
const maxStarting = 2

// Serve accepts driver connections on l until ctx is done or l fails.
// It returns after every connection handler has finished. base is the
// sandbox's environment, merged under every exec's own.
func Serve(ctx context.Context, l net.Listener, sp *Spawner, base []string, log *slog.Logger) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	starting := make(chan struct{}, maxStarting)
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		sp.touch()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if err := handle(ctx, c.(*net.UnixConn), sp, base, starting); err != nil {
				log.Debug("request failed", "err", err)
			}
		}()
	}
}

func handle(ctx context.Context, c *net.UnixConn, sp *Spawner, base []string, starting chan struct{}) error {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	var files []*os.File
	var call *Call
	defer func() {
		if call != nil {
			files = call.Files // what the op did not take
		}
		for _, f := range files {
			_ = f.Close()
		}
	}()
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return fmt.Errorf("parse control message: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "stdio"))
			}
		}
	}
	req, err := DecodeRequest(buf[:n], c)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(c)
	switch req.Op {
	case "ping":
		return enc.Encode(Reply{Pid: os.Getpid()})
	case "warm":
		sp.Prewarm(ctx)
		return enc.Encode(Reply{Pid: os.Getpid()})
	case "exec":
		return runExec(ctx, c, enc, req, sp, base, files, starting)
	default:
		if op, ok := ops[req.Op]; ok {
			call = &Call{Conn: c, Enc: enc, Req: req, Spawner: sp, Base: base, Files: files}
			return op(ctx, call)
		}
		return enc.Encode(Reply{Error: "unknown op " + req.Op, Code: 126})
	}
}

func runExec(ctx context.Context, c *net.UnixConn, enc *json.Encoder, req Request, sp *Spawner, base []string, passed []*os.File, starting chan struct{}) error {
	if len(req.Argv) == 0 {
		return enc.Encode(Reply{Error: "empty argv", Code: 126})
	}
	select {
	case starting <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	p, pidfd, tag, err := startExec(ctx, enc, req, sp, base, passed)
	<-starting
	if err != nil || p == nil {
		return err
	}
	if pidfd != nil {
		defer pidfd.Close()
	}
	return waitExec(c, enc, p, pidfd, tag)
}

// startExec starts the command of req. A nil process (and error) means
// the failure was reported to the driver already. pidfd, when not nil,
// becomes readable when the process exits.
func startExec(ctx context.Context, enc *json.Encoder, req Request, sp *Spawner, base []string, passed []*os.File) (*os.Process, *os.File, string, error) {
	failed := func(rep Reply) (*os.Process, *os.File, string, error) { return nil, nil, "", enc.Encode(rep) }
	stdio := make([]*os.File, 3)
	next := 0
	var devnull *os.File
	for i := range 3 {
		if req.Fds[i] && next < len(passed) {
			stdio[i] = passed[next]
			next++
			continue
		}
		if devnull == nil {
			f, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
			if err != nil {
				return failed(Reply{Error: "open /dev/null: " + err.Error(), Code: 126})
			}
			devnull = f
			defer devnull.Close()
		}
		stdio[i] = devnull
	}
	env := MergeEnv(base, req.Env)
	tag := newExecTag()
	if tag != "" {
		env = MergeEnv(env, []string{execTagVar + "=" + tag})
	}
	cred, home, err := credential(req.User)
	if err != nil {
		return failed(Reply{Error: err.Error(), Code: 126})
	}
	if home != "" && lookupEnv(env, "HOME") == "" {
		env = append(env, "HOME="+home)
	}
	path, err := lookPath(req.Argv[0], lookupEnv(env, "PATH"))
	if err != nil {
		return failed(Reply{Error: err.Error(), Code: 127})
	}
	dir := req.Dir
	if dir == "" {
		dir = "/"
	}
	// The command leads its own process group, so that cancelling the exec
	// kills whatever it started (a fork bomb included: a group kill and a
	// fork in the group are atomic to each other).
	pidfd := -1
	p, err := sp.Start(ctx, path, req.Argv, &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: stdio,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: cred, PidFD: &pidfd},
	})
	if err != nil {
		code := 126
		if errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "chdir") {
			code = 127
		}
		rep := Reply{Error: err.Error(), Code: code}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			rep.Errno = int(errno)
		}
		return failed(rep)
	}
	exit := pidfdFile(pidfd)
	// Prefer the workload over the agent when the sandbox's memory limit
	// triggers the OOM killer (raising needs no privilege; best effort: a
	// command already running as another user keeps the default).
	_ = os.WriteFile("/proc/"+strconv.Itoa(p.Pid)+"/oom_score_adj", []byte("500"), 0)
	// Our copies of the pipe ends must close now, or the driver never sees EOF.
	for _, f := range passed {
		_ = f.Close()
	}
	if err := enc.Encode(Reply{Pid: p.Pid}); err != nil {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		_, _ = p.Wait()
		if exit != nil {
			_ = exit.Close()
		}
		return nil, nil, "", err
	}
	return p, exit, tag, nil
}

// pidfdFile wraps a process's pidfd (-1: none) for the runtime's poller.
func pidfdFile(pidfd int) *os.File {
	if pidfd < 0 {
		return nil
	}
	// Non-blocking, so that os.NewFile registers it with the poller.
	if err := unix.SetNonblock(pidfd, true); err != nil {
		_ = unix.Close(pidfd)
		return nil
	}
	return os.NewFile(uintptr(pidfd), "pidfd")
}

// waitExited returns once the process behind pidfd has exited. It waits in
// the runtime's poller: a wait system call blocks a thread for as long as
// the command runs, one per running command, and the agent must not need
// new threads while a fork bomb holds every PID (see WarmThreads).
func waitExited(pidfd *os.File) {
	if pidfd == nil {
		return
	}
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		// Done when readable, or when polling fails: Wait then blocks.
		return err != unix.EINTR && (err != nil || n > 0)
	})
}

// waitExec relays control lines to the started command p until it exits,
// then reports its exit status.
func waitExec(c *net.UnixConn, enc *json.Encoder, p *os.Process, pidfd *os.File, tag string) error {
	// Control lines until the driver hangs up; a hang-up before the exit kills.
	exited := make(chan struct{})
	ctlDone := make(chan struct{})
	var signalled atomic.Bool
	go func() {
		defer close(ctlDone)
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var ctl Control
			if json.Unmarshal(sc.Bytes(), &ctl) != nil {
				continue
			}
			select {
			case <-exited:
				return
			default:
			}
			if ctl.Kill {
				killTree(p.Pid, tag)
			} else if ctl.Signal > 0 {
				signalled.Store(true)
				_ = syscall.Kill(p.Pid, syscall.Signal(ctl.Signal))
			}
		}
		select {
		case <-exited:
		default:
			killTree(p.Pid, tag)
		}
	}()
	waitExited(pidfd)
	ps, werr := p.Wait() // at once: the process has exited
	close(exited)
	if signalled.Load() {
		// Stopped from outside (a cancelled agent run gets SIGINT): what
		// it left running goes too, before the exit is reported.
		killTree(0, tag)
	}
	rep := Reply{Exited: true}
	if werr != nil {
		rep.Error = werr.Error()
		rep.Code = 126
	} else if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			rep.Signal = int(ws.Signal())
			rep.Code = 128 + int(ws.Signal())
		} else {
			rep.Code = ws.ExitStatus()
		}
	}
	err := enc.Encode(rep)
	// Unblock the control reader: the driver closes after reading Exit.
	_ = c.CloseWrite()
	<-ctlDone
	return err
}

// MergeEnv returns base with every KEY=value of over replacing or adding.
func MergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	idx := make(map[string]int, len(out))
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func lookupEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: command not found", name)
}

// credential resolves "name", "uid", "name:group" or "uid:gid" against the
// sandbox's own /etc/passwd and /etc/group. Empty or root needs no switch.
func credential(spec string) (*syscall.Credential, string, error) {
	if spec == "" || spec == "root" || spec == "0" || spec == "0:0" {
		home := "/root"
		if u, err := user.LookupId("0"); err == nil && u.HomeDir != "" {
			home = u.HomeDir
		}
		return nil, home, nil
	}
	name, group, _ := strings.Cut(spec, ":")
	var uid, gid uint64
	var home string
	var groups []uint32
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	if err == nil {
		uid, _ = strconv.ParseUint(u.Uid, 10, 32)
		gid, _ = strconv.ParseUint(u.Gid, 10, 32)
		home = u.HomeDir
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	} else if n, perr := strconv.ParseUint(name, 10, 32); perr == nil {
		uid, gid = n, n
	} else {
		return nil, "", fmt.Errorf("unknown user %q", name)
	}
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ = strconv.ParseUint(g.Gid, 10, 32)
		} else if n, perr := strconv.ParseUint(group, 10, 32); perr == nil {
			gid = n
		} else {
			return nil, "", fmt.Errorf("unknown group %q", group)
		}
	}
	if home == "" {
		home = "/"
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, home, nil
}
