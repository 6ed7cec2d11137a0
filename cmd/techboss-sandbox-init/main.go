// Command techboss-sandbox-init is the local sandbox driver's static helper.
// Build it with CGO_ENABLED=0. It has two modes:
//
//	techboss-sandbox-init launch -- BWRAP ARGS...
//	    started by the driver as uid 0 of the sandbox's new user namespace
//	    (host ids shifted to an unprivileged range). It waits for one byte on
//	    fd 7, which the driver writes once it has put this process into the
//	    sandbox's cgroups (cgroup v1 cannot place a child at fork time, and
//	    from inside the namespace this process may not write the host's
//	    cgroup files), forbids nested user namespaces, and execs bubblewrap.
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
	case "agent":
		return serve()
	default:
		return fmt.Errorf("unknown mode %q", args[0])
	}
}

func launch(args []string) error {
	if len(args) < 2 || args[0] != "--" {
		return fmt.Errorf("usage: launch -- BWRAP ARGS")
	}
	argv := args[1:]
	// The driver writes one byte once the cgroups hold this process; EOF
	// without it means the driver gave up (or died): start nothing.
	sync := os.NewFile(7, "sync")
	var b [1]byte
	if n, err := sync.Read(b[:]); n != 1 {
		return fmt.Errorf("launch: the driver did not release the sandbox: %v", err)
	}
	_ = sync.Close()
	// No user namespaces below this one: the limit is per namespace, and
	// this process is its owner (seccomp refuses them too).
	if err := os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("launch: forbid nested user namespaces: %w", err)
	}
	return syscall.Exec(argv[0], argv, os.Environ())
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
