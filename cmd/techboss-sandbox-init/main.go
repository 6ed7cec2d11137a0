// Command techboss-sandbox-init is the local sandbox driver's static helper.
// Build it with CGO_ENABLED=0. It has two modes:
//
//	techboss-sandbox-init launch --ids BASE:SIZE -- BWRAP ARGS...
//	    started by the driver (host root). It waits for one byte on fd 7,
//	    which the driver writes once it has put this process into the
//	    sandbox's cgroups (cgroup v1 cannot place a child at fork time),
//	    starts "userns -- BWRAP ARGS" as uid 0 of a new user namespace
//	    mapping SIZE ids onto the host's from BASE, and exits.
//	techboss-sandbox-init userns -- BWRAP ARGS...
//	    forbids nested user namespaces and execs bubblewrap.
//	techboss-sandbox-init agent
//	    runs inside the sandbox: reads its base environment from fd 6 and
//	    serves the driver on the listening socket on fd 3, starting commands
//	    from a thread without capabilities (agent.Spawner).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "techboss-sandbox-init:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: techboss-sandbox-init launch|agent")
	}
	switch args[0] {
	case "launch":
		return launch(args[1:])
	case "userns":
		return userns(args[1:])
	case "agent":
		return serve()
	default:
		return fmt.Errorf("unknown mode %q", args[0])
	}
}

func launch(args []string) error {
	var base, size uint64
	if len(args) < 4 || args[0] != "--ids" || args[2] != "--" {
		return fmt.Errorf("usage: launch --ids BASE:SIZE -- BWRAP ARGS")
	}
	if _, err := fmt.Sscanf(args[1], "%d:%d", &base, &size); err != nil || size == 0 || base+size > 1<<32 {
		return fmt.Errorf("launch: bad --ids %q", args[1])
	}
	argv := args[3:]
	// The driver writes one byte once the cgroups hold this process; EOF
	// without it means the driver gave up (or died): start nothing.
	sync := os.NewFile(7, "sync")
	var b [1]byte
	if n, err := sync.Read(b[:]); n != 1 {
		return fmt.Errorf("launch: the driver did not release the sandbox: %v", err)
	}
	_ = sync.Close()
	// bubblewrap starts as uid 0 of a new user namespace mapping the
	// sandbox's ids onto the host range (this process, host root, writes
	// the maps), through this helper's "userns" step. It inherits fds 0-6
	// and 8 as they are.
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: int(size)}}
	files := make([]*os.File, 9)
	for fd := range files {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fd != 7 && err == nil {
			files[fd] = os.NewFile(uintptr(fd), "")
		}
	}
	p, err := os.StartProcess("/proc/self/exe", append([]string{os.Args[0], "userns", "--"}, argv...), &os.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: files,
		Sys: &syscall.SysProcAttr{
			Cloneflags:                 syscall.CLONE_NEWUSER,
			UidMappings:                ids,
			GidMappings:                ids,
			GidMappingsEnableSetgroups: true, // the agent sets image users' groups
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
		},
	})
	if err != nil {
		return fmt.Errorf("launch: start bubblewrap in its user namespace: %w", err)
	}
	_ = p.Release()
	return nil
}

// userns runs as uid 0 of the sandbox's new user namespace: it forbids
// nested user namespaces (the limit is per namespace, and this process is
// its owner; seccomp refuses them too), then execs bubblewrap.
func userns(args []string) error {
	if len(args) < 2 || args[0] != "--" {
		return fmt.Errorf("usage: userns -- BWRAP ARGS")
	}
	if err := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("userns: forbid nested user namespaces: %w", err)
	}
	return syscall.Exec(args[1], args[1:], os.Environ())
}

func serve() error {
	// fd 6 carries the sandbox's base environment (agent.Init), then EOF.
	var init agent.Init
	if f := os.NewFile(6, "init"); f != nil {
		if err := json.NewDecoder(f).Decode(&init); err != nil {
			return fmt.Errorf("read init on fd 6: %w", err)
		}
		_ = f.Close()
	}
	// Only fd 0-3 are ours; anything else inherited (the agent binary's own
	// fd, bubblewrap's) is closed so commands never see it.
	_ = unix.CloseRange(4, ^uint(0), 0)
	f := os.NewFile(3, "listener")
	l, err := net.FileListener(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("listener on fd 3: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	sp, err := agent.NewSpawner(ctx)
	if err != nil {
		return err
	}
	go agent.WarmThreads(10)
	return agent.Serve(ctx, l, sp, init.Env, log)
}
