// Package runsc runs a local sandbox's agent under gVisor (runsc) instead
// of bubblewrap: the same prepared root directory, the same agent and the
// same agent protocol, with gVisor's user-space kernel between the
// workload and the host's.
//
// runsc hands a container only stdin, stdout and stderr, not arbitrary
// file descriptors. So the agent gets its base environment on stdin
// (agent.Init, then EOF) and listens on AgentSocket, a path in a
// bind-mounted host directory; with --host-uds=create gVisor backs that
// socket with a host socket at Options.AgentDir/agent.sock, and the
// driver dials a second name of it in the bundle (see Start).
// Descriptors the driver passes over it (SCM_RIGHTS) arrive in the
// sandbox as host-backed files, so command output still flows through
// host pipes.
//
// What the agent does differently under runsc (techboss-sandbox-init
// runsc-agent): it reads agent.Init from stdin instead of fd 6 and listens
// on AgentSocket instead of taking fd 3. Everything else (bounding set,
// capset, no_new_privs, CLONE_PIDFD, user switches) works as under
// bubblewrap.
//
// gVisor is built from source by scripts/deps.sh (Debian's 2022-12 runsc
// has no systrap platform, fails statx with AT_NO_AUTOMOUNT, so GNU `ls`
// and `stat`, and refuses networking on kernels like this one's).
package runsc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/netns"
	"github.com/techbossai/techboss/internal/sandbox/local/runsc/initproto"
)

// Options describe one container.
type Options struct {
	// Runsc is the runsc binary. Default: runsc on PATH.
	Runsc string
	// StateRoot is runsc's --root: where it keeps its containers' state.
	// One per driver; it must survive a server restart for re-adoption.
	StateRoot string
	// ID names the container (the sandbox ID plus whatever keeps two
	// drivers on one host apart).
	ID string
	// Bundle is a directory of the sandbox's own where config.json and
	// the container's log are written.
	Bundle string
	// Root is the prepared root directory (the driver's overlay, with
	// /workspace and the server's mounts already bound into it).
	Root string
	// Mounts are further bind mounts, e.g. the host's /usr for host images.
	Mounts []Mount
	// HasTmp says Root already has /tmp mounted (the sandbox's disk);
	// otherwise the container gets a tmpfs there.
	HasTmp bool
	// AgentBinary is the static techboss-sandbox-init on the host; it is
	// bound read-only at AgentBinary inside.
	AgentBinary string
	// AgentArgs are its arguments (default: "agent"). The agent must read
	// agent.Init from stdin and listen on AgentSocket.
	AgentArgs []string
	// AgentCaps are capabilities (of gVisor's kernel) the agent starts
	// with beyond CAP_SETUID, CAP_SETGID and CAP_SETPCAP, for its own
	// setup; it must drop them before it starts any command.
	AgentCaps []string
	// AgentDir is an empty host directory of the sandbox's own, bound at
	// AgentDir inside; the agent's socket appears in it.
	AgentDir string
	// Env is the sandbox's base environment, written to the agent's stdin.
	Env []string
	// Network: every container starts in a new network namespace (owned
	// by the sandbox's user namespace) and uses the host kernel's sockets
	// in it (--network=host), with its loopback up: a listener the driver
	// opens in that namespace (the model gateway) is reachable on the
	// sandbox's 127.0.0.1, which gVisor's own stack (--network=sandbox)
	// would keep to itself. Without Network the namespace has only that
	// loopback; with it, the caller connects the namespace (netpolicy:
	// pasta and nftables) in Started, before runsc runs.
	Network bool
	// Platform is gVisor's platform: "systrap" (default; no KVM needed),
	// "ptrace" or "kvm".
	Platform string
	// Hostname defaults to "sandbox".
	Hostname string
	// Resources become the spec's linux.resources. runsc applies them
	// through cgroups only without IgnoreCgroups.
	Resources *specs.LinuxResources
	// IgnoreCgroups passes --ignore-cgroups: the caller places runsc's
	// processes in cgroups itself (they inherit the starting process's).
	IgnoreCgroups bool
	// IDs, when not the identity, starts runsc as uid 0 of a new user
	// namespace mapping the sandbox's ids onto this host range, as the
	// local driver starts bubblewrap: files the sandbox creates (through
	// gVisor's gofer) belong to HostBase+uid, and runsc itself holds no
	// capability in the host's namespace. StateRoot, Bundle and AgentDir
	// are handed to the namespace's root; AgentBinary and Root must be
	// reachable by it.
	IDs sandbox.IDMap
	// Launcher, when set, is prepended to runsc's command line: e.g. the
	// local driver's helper (`techboss-sandbox-init launch --`), which
	// waits for the driver's go-ahead before it execs runsc. ExtraFiles
	// become its fds 3, 4, ... (the sync pipe).
	Launcher   []string
	ExtraFiles []*os.File
	// Started, when set, is called with the PID of the started process
	// (the launcher, or runsc) before Start waits for the agent: the
	// place to move it into cgroups (every process runsc starts inherits
	// them, its sandbox and gofer included) and then release it.
	Started func(pid int) error
	// Seccomp, when set, is a seccomp program (struct sock_filter array)
	// handed to the agent with its environment: it installs it on itself
	// after its setup, and gVisor's kernel applies it to the agent and
	// everything it starts.
	Seccomp []byte
	// Log is the file the agent's and runsc's output go to (default:
	// Bundle/container.log).
	Log string
	// Debug writes runsc's debug logs (with strace) into Bundle/debug/.
	Debug bool
}

func (o Options) hostname() string {
	if o.Hostname != "" {
		return o.Hostname
	}
	return "sandbox"
}

func (o Options) args() []string {
	a := o.AgentArgs
	if len(a) == 0 {
		a = []string{"agent"}
	}
	return append([]string{AgentBinary}, a...)
}

// flags are runsc's global flags for the container; every command on it
// must use the same.
func (s State) flags() []string {
	f := []string{
		"--root", s.StateRoot,
		"--platform", s.Platform,
		"--network", s.Network,
		// The agent's socket, created inside, must be reachable from the
		// host: a host socket made by the gofer.
		"--host-uds", "create",
		// The host (the driver's file and archive calls, volumes) writes
		// into the root while the sandbox runs: no cached view of it.
		"--file-access", "shared",
		// Writes go to the root the driver made, not to gVisor's memory.
		"--overlay2", "none",
	}
	if s.IgnoreCgroups {
		f = append(f, "--ignore-cgroups")
	}
	if s.Debug {
		f = append(f, "--debug", "--strace", "--debug-log", filepath.Join(s.Bundle, "debug")+"/")
	}
	return f
}

// State is what a caller persists to find a container again after a
// restart (Adopt).
type State struct {
	Runsc         string `json:"runsc"`
	StateRoot     string `json:"state_root"`
	ID            string `json:"id"`
	Bundle        string `json:"bundle"`
	Socket        string `json:"socket"` // host path of the agent's socket
	Log           string `json:"log"`
	Platform      string `json:"platform"`
	Network       string `json:"network"`
	IgnoreCgroups bool   `json:"ignore_cgroups,omitempty"`
	Debug         bool   `json:"debug,omitempty"`
	// Pid is the sandbox process (gVisor's kernel) on the host.
	Pid int `json:"pid"`
	// RunPid is `runsc run`, the container's supervisor (the driver's
	// child until a restart): it reaps the sandbox and gofer processes
	// and removes runsc's state of the container when it ends. RunStart
	// is its start time (/proc/PID/stat field 22), against PID reuse.
	RunPid   int    `json:"run_pid"`
	RunStart uint64 `json:"run_start"`
}

// Container is a started container whose agent has answered.
type Container struct {
	st State
	// child is set when RunPid is this process's child (not adopted).
	child bool
}

// State returns what to persist for Adopt.
func (c *Container) State() State { return c.st }

// Socket is the host path of the agent's socket.
func (c *Container) Socket() string { return c.st.Socket }

// Pid is the host PID of the sandbox process.
func (c *Container) Pid() int { return c.st.Pid }

// Start creates and starts the container and returns once its agent
// accepts connections (or ctx is done). On failure nothing is left behind
// but the bundle directory's files.
func Start(ctx context.Context, o Options) (*Container, error) {
	if o.Runsc == "" {
		p, err := exec.LookPath("runsc")
		if err != nil {
			return nil, fmt.Errorf("runsc: %w", err)
		}
		o.Runsc = p
	}
	if o.Platform == "" {
		o.Platform = "systrap"
	}
	st := State{
		Runsc: o.Runsc, StateRoot: o.StateRoot, ID: o.ID, Bundle: o.Bundle,
		Socket: filepath.Join(o.AgentDir, filepath.Base(AgentSocket)), Platform: o.Platform,
		Network: "host", IgnoreCgroups: o.IgnoreCgroups, Debug: o.Debug,
	}
	if len(st.Socket) > 107 {
		return nil, fmt.Errorf("agent socket path %s is too long for a Unix socket", st.Socket)
	}
	if err := os.MkdirAll(o.StateRoot, 0o700); err != nil {
		return nil, fmt.Errorf("runsc state dir: %w", err)
	}
	if err := writeSpec(o.Bundle, Spec(o)); err != nil {
		return nil, err
	}
	if o.Log == "" {
		o.Log = filepath.Join(o.Bundle, "container.log")
	}
	st.Log = o.Log
	log, err := os.OpenFile(o.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container log: %w", err)
	}
	defer log.Close()
	if !o.IDs.Identity() {
		root := int(o.IDs.ToHost(0))
		for _, p := range []string{o.StateRoot, o.Bundle, o.AgentDir, filepath.Join(o.Bundle, "config.json")} {
			if err := os.Lchown(p, root, root); err != nil {
				return nil, fmt.Errorf("hand %s to the sandbox's root: %w", p, err)
			}
		}
	}
	envR, envW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("env pipe: %w", err)
	}
	defer envR.Close()
	defer envW.Close()

	c := &Container{st: st, child: true}
	pidFile := filepath.Join(o.Bundle, "sandbox.pid")
	// Not detached: `runsc run` stays as the container's supervisor, the
	// parent of its sandbox and gofer processes, as bubblewrap is of the
	// sandbox's init. Detached, they would be orphans that only the
	// host's init reaps (slowly here: runsc delete then waits 1-1.5 s).
	args := append(append([]string{st.Runsc}, st.flags()...), "run", "--bundle", o.Bundle, "--pid-file", pidFile, o.ID)
	args = append(append([]string(nil), o.Launcher...), args...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.ExtraFiles = o.ExtraFiles
	// Not the caller's environment (a server's holds its keys): runsc,
	// its gofer and gVisor's kernel run as the sandbox's root, and their
	// /proc/PID/environ would be its to read were it to escape.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	// The container's stdio are runsc's: stdin carries the environment,
	// the agent's log and runsc's own errors go to the container log.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = envR, log, log
	// Own session: the sandbox must not get the server's terminal signals
	// nor die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// A network namespace of its own in every mode (see Options.Network).
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	if !o.IDs.Identity() {
		// runsc needs user namespaces below this one (its sandbox process
		// runs in one): unlike bubblewrap's, this namespace must not
		// forbid them.
		ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(o.IDs.HostBase), Size: int(o.IDs.Size)}}
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings, cmd.SysProcAttr.GidMappings = ids, ids
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start runsc: %w", err)
	}
	c.st.RunPid = cmd.Process.Pid
	c.st.RunStart, _ = procStart(c.st.RunPid)
	// Reaped in Delete (or by whoever inherits it after a restart).
	_ = cmd.Process.Release()
	envR.Close()
	if err := loopbackUp(c.st.RunPid); err != nil {
		c.destroy()
		return nil, err
	}
	if o.Started != nil {
		if err := o.Started(c.st.RunPid); err != nil {
			c.destroy()
			return nil, err
		}
	}
	// The pipe holds the environment (up to 1 MiB) until the agent reads
	// it; EPIPE means the container died, which waitAgent reports.
	if b, err := json.Marshal(Init{Env: o.Env, Seccomp: o.Seccomp}); err == nil {
		_, _ = envW.Write(b)
	}
	envW.Close()
	if err := c.waitAgent(ctx, pidFile); err != nil {
		c.destroy()
		return nil, fmt.Errorf("agent did not answer: %w: %s", err, c.logTail())
	}
	// The agent's directory is the workload's to write (gVisor makes the
	// socket there, as the container's root): it may remove the socket or
	// put its own in its place. The driver dials a second name of the
	// socket's inode, in the bundle, which the container cannot see.
	link := filepath.Join(o.Bundle, filepath.Base(AgentSocket))
	if err := os.Link(c.st.Socket, link); err != nil {
		c.destroy()
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	c.st.Socket = link
	return c, nil
}

// loopbackUp brings up the loopback of pid's network namespace.
func loopbackUp(pid int) error {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return fmt.Errorf("sandbox network namespace: %w", err)
	}
	defer ns.Close()
	err = netns.Do(int(ns.Fd()), func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	})
	if err != nil {
		return fmt.Errorf("sandbox loopback: %w", err)
	}
	return nil
}

// Init is what the agent reads on its stdin: agent.Init plus the seccomp
// program it installs on itself.
type Init = initproto.Init

// logTail is the end of the container's log: runsc's errors and the
// agent's.
func (c *Container) logTail() string {
	b, _ := os.ReadFile(c.st.Log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return strings.TrimSpace(string(b))
}

// waitAgent waits until the agent's socket accepts a connection. The
// socket appears when the agent binds it, so until then dialing fails
// with ENOENT (or ECONNREFUSED); both are retried at a short interval
// while `runsc run` lives.
func (c *Container) waitAgent(ctx context.Context, pidFile string) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", c.st.Socket)
		if err == nil {
			if b, err := os.ReadFile(pidFile); err == nil {
				_, _ = fmt.Sscan(string(b), &c.st.Pid)
			}
			return conn.Close()
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		if !c.alive() {
			return errors.New("runsc exited")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// alive reports whether `runsc run` still runs (a zombie does not).
func (c *Container) alive() bool {
	if c.child {
		var ws syscall.WaitStatus
		if n, err := syscall.Wait4(c.st.RunPid, &ws, syscall.WNOHANG, nil); n == c.st.RunPid || err != nil {
			c.child = false // reaped: from now on /proc says it is gone
			return false
		}
		return true
	}
	start, err := procStart(c.st.RunPid)
	if err != nil || start != c.st.RunStart {
		return false
	}
	st, err := procState(c.st.RunPid)
	return err == nil && st != 'Z' && st != 'X'
}

// Adopt finds a container again from its persisted state (after a
// server restart `runsc run` is no longer the caller's child). It reports
// false (and no error) when the container is gone.
func Adopt(ctx context.Context, st State) (*Container, bool, error) {
	c := &Container{st: st}
	if !c.alive() {
		return nil, false, nil
	}
	out, err := exec.CommandContext(ctx, st.Runsc, append(st.flags(), "state", st.ID)...).Output()
	if err != nil {
		return nil, false, nil // runsc knows no such container
	}
	var s specs.State
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, false, fmt.Errorf("runsc state %s: %w", st.ID, err)
	}
	if s.Status != specs.StateRunning || s.Pid != st.Pid {
		return nil, false, nil
	}
	return c, true, nil
}

// Delete stops the container and waits until runsc has reaped its
// processes (so the caller may unmount the root) and removed its state.
// The bundle and the agent directory are the caller's to remove.
func (c *Container) Delete(ctx context.Context) error {
	// SIGKILL to gVisor's kernel ends every process of the container at
	// once (its ptrace stubs die with it); `runsc run` then tears down
	// the gofer and the state. `runsc kill` would do the same in a
	// process of its own.
	if c.st.Pid == 0 {
		if b, err := os.ReadFile(filepath.Join(c.st.Bundle, "sandbox.pid")); err == nil {
			_, _ = fmt.Sscan(string(b), &c.st.Pid)
		}
	}
	if c.alive() {
		if c.st.Pid > 0 {
			_ = syscall.Kill(c.st.Pid, syscall.SIGKILL)
		} else {
			// Not started yet: runsc delete below removes the rest.
			_ = syscall.Kill(c.st.RunPid, syscall.SIGKILL)
		}
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for c.alive() {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(c.st.RunPid, syscall.SIGKILL)
			return fmt.Errorf("delete container %s: %w", c.st.ID, ctx.Err())
		case <-t.C:
		}
	}
	// What a killed `runsc run` (or a crash) left behind.
	if leftovers, _ := filepath.Glob(filepath.Join(c.st.StateRoot, c.st.ID+"_sandbox:*")); len(leftovers) > 0 {
		out, err := exec.CommandContext(ctx, c.st.Runsc, append(c.st.flags(), "delete", "--force", c.st.ID)...).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "does not exist") {
			return fmt.Errorf("runsc delete %s: %w: %s", c.st.ID, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// destroy is Delete on a failed start, with its own deadline.
func (c *Container) destroy() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.Delete(ctx)
}

// procStart returns the start time of pid (field 22 of /proc/PID/stat).
func procStart(pid int) (uint64, error) {
	st, err := procStat(pid)
	return st.Starttime, err
}

// procStat reads /proc/PID/stat.
func procStat(pid int) (procfs.ProcStat, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
}

// procState returns the state letter of /proc/PID/stat (R, S, Z, X, ...).
func procState(pid int) (byte, error) {
	st, err := procStat(pid)
	if err != nil || st.State == "" {
		return 0, fmt.Errorf("process %d: no state: %v", pid, err)
	}
	return st.State[0], nil
}
