package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/sandbox/local/runsc/initproto"
)

// The modes of the gVisor runtime (TECHBOSS_LOCAL_RUNTIME=runsc):
//
//	techboss-sandbox-init runsc-launch -- RUNSC ARGS...
//	    started by the driver as uid 0 of the sandbox's own user namespace
//	    (runsc needs to create namespaces below it, so it cannot join the
//	    bubblewrap sandboxes' shared one). It waits for one byte on fd 3,
//	    which the driver writes once it has put this process into the
//	    sandbox's cgroups and connected its network namespace, then execs
//	    runsc; every process runsc starts inherits the cgroups.
//	techboss-sandbox-init runsc-agent [PIDS]
//	    the container's PID 1 under gVisor: runsc passes a container only
//	    fds 0-2, so it reads initproto.Init from stdin, listens on
//	    initproto.AgentSocket, installs the seccomp filter, starts the agent
//	    (the "agent" mode, with the listener and environment on the fds it
//	    takes under bubblewrap) and reaps orphans.
//	    With PIDS, it first confines itself (and so every command) to a
//	    pids cgroup of gVisor's kernel allowing that many tasks (see
//	    limitTasks).

// runscLaunch is the runsc-launch mode.
func runscLaunch(args []string) error {
	if len(args) < 2 || args[0] != "--" {
		return fmt.Errorf("usage: runsc-launch -- RUNSC ARGS")
	}
	argv := args[1:]
	sync := os.NewFile(3, "sync")
	var b [1]byte
	if n, err := sync.Read(b[:]); n != 1 {
		return fmt.Errorf("runsc-launch: the driver did not release the sandbox: %v", err)
	}
	_ = sync.Close()
	return syscall.Exec(argv[0], argv, os.Environ())
}

// runscAgent is the runsc-agent mode.
func runscAgent(args []string) error {
	pids := 0
	if len(args) == 1 {
		n, err := strconv.Atoi(args[0])
		if err != nil || n <= 0 {
			return fmt.Errorf("runsc-agent: pids limit %q", args[0])
		}
		pids = n
	}
	var init initproto.Init
	if err := json.NewDecoder(os.Stdin).Decode(&init); err != nil {
		return fmt.Errorf("read init on stdin: %w", err)
	}
	// The agent proper is a child (runsc-serve) that gets the
	// environment on fd 6, as under bubblewrap: this process is the
	// container's PID 1, to which gVisor reparents every orphan, and it
	// reaps them as bubblewrap's init does. The agent waits for its own
	// commands by pidfd, so it must not be the reaper.
	initR, initW, err := os.Pipe()
	if err != nil {
		return err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	agentProc, err := os.StartProcess(self, []string{self, "runsc-serve"}, &os.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []*os.File{null, os.Stdout, os.Stderr, nil, nil, nil, initR},
	})
	if err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	_ = initR.Close()
	_ = null.Close()
	// The agent waits for its environment before it serves: by then it
	// is in its pids cgroup, and so is everything it starts. This process
	// stays outside, so the workload cannot starve the reaper of threads.
	if pids > 0 {
		if err := limitTasks(agentProc.Pid, pids); err != nil {
			return fmt.Errorf("runsc-agent: %w", err)
		}
	}
	// The capabilities it may have started with for the cgroup
	// (CAP_SYS_ADMIN and CAP_DAC_OVERRIDE of gVisor's kernel), beyond
	// what the agent keeps, are dropped from every thread of both (the
	// agent's were inherited, and it drops them too; see runscServe).
	if err := keepOnly(unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SETPCAP); err != nil {
		return fmt.Errorf("runsc-agent: %w", err)
	}
	if len(init.Seccomp) > 0 {
		if err := installSeccomp(init.Seccomp); err != nil {
			return fmt.Errorf("runsc-agent: %w", err)
		}
	}
	// The pipe holds the environment until the agent reads it.
	if err := json.NewEncoder(initW).Encode(init); err != nil {
		return fmt.Errorf("hand the agent its environment: %w", err)
	}
	_ = initW.Close()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reap: %w", err)
		}
		if pid == agentProc.Pid {
			// The agent is gone: so is the sandbox.
			return fmt.Errorf("agent exited: %v", ws)
		}
	}
}

// runscServe is the runsc-serve mode: the agent under gVisor, which
// listens on initproto.AgentSocket itself and otherwise serves as the
// "agent" mode does.
func runscServe() error {
	var init initproto.Init
	f := os.NewFile(6, "init")
	if err := json.NewDecoder(f).Decode(&init); err != nil {
		return fmt.Errorf("read init on fd 6: %w", err)
	}
	_ = f.Close()
	if err := keepOnly(unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SETPCAP); err != nil {
		return fmt.Errorf("runsc-serve: %w", err)
	}
	if len(init.Seccomp) > 0 {
		if err := installSeccomp(init.Seccomp); err != nil {
			return fmt.Errorf("runsc-serve: %w", err)
		}
	}
	// Nothing else to close: runsc-agent passed only fds 0-2 and 6 (and
	// closing more would close the Go runtime's poller, which reading fd
	// 6 may have started).
	l, err := net.Listen("unix", initproto.AgentSocket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", initproto.AgentSocket, err)
	}
	return serveOn(l, init.Env)
}

// limitTasks puts process pid into a new pids cgroup of gVisor's kernel
// limited to n tasks; commands it starts inherit it. Under gVisor the
// host's pids cgroup counts the Sentry's threads, not the workload's
// tasks, and a Sentry that cannot create a thread dies with every process
// of the sandbox: the workload's limit must be gVisor's own. The
// hierarchy is mounted only for this (the workload, without
// CAP_SYS_ADMIN, cannot mount it to raise the limit).
func limitTasks(pid, n int) error {
	dir, err := os.MkdirTemp("/", ".techboss-cg-")
	if err != nil {
		return fmt.Errorf("cgroup mount point: %w", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "pids"); err != nil {
		return fmt.Errorf("mount gVisor's pids cgroup: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	cg := filepath.Join(dir, "sandbox")
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("pids cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte(strconv.Itoa(n)), 0); err != nil {
		return fmt.Errorf("pids cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("join pids cgroup: %w", err)
	}
	return nil
}

// installSeccomp installs prog (struct sock_filter array) on every thread
// of the agent (TSYNC), after its own setup needed what it refuses
// (mount). no_new_privs is already set (the runtime spec's).
func installSeccomp(prog []byte) error {
	if len(prog)%8 != 0 || len(prog) == 0 || len(prog)/8 > 0xffff {
		return fmt.Errorf("seccomp program of %d bytes", len(prog))
	}
	fprog := unix.SockFprog{Len: uint16(len(prog) / 8), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if _, _, e := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("install seccomp filter: %w", e)
	}
	return nil
}

// keepOnly sets every thread's effective and permitted capabilities to
// caps (capabilities are per thread).
func keepOnly(caps ...uint) error {
	var mask uint32
	for _, c := range caps {
		mask |= 1 << c
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{{Effective: mask, Permitted: mask}}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}
