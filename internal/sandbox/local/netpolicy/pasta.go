package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/procfs"
)

// pastaSafety are the flags that keep pasta outbound-only. pasta's default
// for each is "auto", which forwards every port bound on one side into the
// other: with -T/-U auto a service on the host's 127.0.0.1 appears on the
// sandbox's 127.0.0.1, and with -t/-u auto the sandbox's listeners appear on
// the host. Without --no-map-gw, connections to the gateway address reach
// the host's loopback.
var pastaSafety = []string{"-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw"}

// startPasta connects the namespace nsf to the host's network with pasta
// and returns once pasta has configured it: pasta forks into the background
// after its initialisation, so its first process exiting is the readiness
// signal, and the pid file it writes names the daemon. The daemon is in
// its own session and re-parented to init: it outlives the server.
func startPasta(ctx context.Context, bin, dir string, nsf, usf *os.File, safety []string) (State, error) {
	pidFile := filepath.Join(dir, "pasta.pid")
	logPath := filepath.Join(dir, "pasta.log")
	_ = os.Remove(pidFile)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return State{}, fmt.Errorf("pasta log: %w", err)
	}
	defer logf.Close()
	args := []string{
		"--quiet", "--log-file", logPath, "--pid", pidFile,
		// pasta drops to nobody before it enters the namespaces, which then
		// fails (setns needs CAP_SYS_ADMIN over them). As uid 0 it still
		// sheds all but CAP_SYS_ADMIN and CAP_NET_BIND_SERVICE and runs
		// under its own seccomp filter with no_new_privs, in its own mount,
		// PID, IPC and UTS namespaces. Given the sandbox's user namespace,
		// those two capabilities are held in that namespace only: none in
		// the host's.
		"--runas", "0",
		"--config-net",
		// Descriptors, not /proc/<pid>/ns/*: pasta opens the paths after
		// shedding CAP_SYS_PTRACE, and the sandbox's processes may hold
		// capabilities pasta no longer has.
		"--netns", "/proc/self/fd/3",
	}
	files := []*os.File{nsf}
	if usf != nil {
		args = append(args, "--userns", "/proc/self/fd/4")
		files = append(files, usf)
	} else {
		args = append(args, "--netns-only")
	}
	args = append(args, safety...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(logPath)
		return State{}, fmt.Errorf("start pasta: %w: %s", err, strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return State{}, fmt.Errorf("pasta pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return State{}, fmt.Errorf("pasta pid file: bad pid %q", b)
	}
	start, err := procStart(pid)
	if err != nil {
		return State{}, fmt.Errorf("pasta exited after starting: %w", err)
	}
	return State{PastaPID: pid, PastaStart: start}, nil
}

// procStart returns a process's start time (clock ticks since boot), which
// with its pid names it across pid reuse.
func procStart(pid int) (uint64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	if st.State == "Z" || st.State == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return st.Starttime, nil
}

// pastaAlive reports whether the process st names is still running.
func pastaAlive(st State) bool {
	start, err := procStart(st.PastaPID)
	return err == nil && start == st.PastaStart
}

// stopPasta ends the pasta process st names: SIGTERM, then SIGKILL after
// grace, and returns once it has exited. The pidfd is opened before the
// start time is checked, so a recycled pid is never signalled.
func stopPasta(st State, grace time.Duration) error {
	if st.PastaPID <= 1 {
		return nil
	}
	fd, err := unix.PidfdOpen(st.PastaPID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop pasta: %w", err)
	}
	defer unix.Close(fd)
	if start, err := procStart(st.PastaPID); err != nil || start != st.PastaStart {
		return nil // gone, or the pid belongs to another process now
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return nil
			}
			return fmt.Errorf("stop pasta: %w", err)
		}
		if waitExit(fd, grace) {
			reap(st.PastaPID)
			return nil
		}
	}
	return fmt.Errorf("stop pasta: pid %d did not exit", st.PastaPID)
}

// waitExit waits up to d for the process behind pidfd to exit.
func waitExit(pidfd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms < 0 {
			ms = 0
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, ms)
		if err == nil {
			return n > 0
		}
		if !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

// reap collects pid if it is our child (when the server is a child
// subreaper); otherwise init does.
func reap(pid int) {
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}
