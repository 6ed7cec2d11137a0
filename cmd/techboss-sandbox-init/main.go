// Command techboss-sandbox-init is the local sandbox driver's static helper.
// Build it with CGO_ENABLED=0. It has two modes:
//
//	techboss-sandbox-init launch CGROUP_PROCS_FILE... -- BWRAP ARGS...
//	    moves itself into the given cgroups, then execs bubblewrap, so every
//	    process of the sandbox starts inside its cgroup (cgroup v1 cannot
//	    place a child at fork time).
//	techboss-sandbox-init agent
//	    runs inside the sandbox: reads its base environment from fd 6 and
//	    serves the driver on the listening socket on fd 3, starting commands
//	    from a thread without capabilities (agent.Spawner).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
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
	i := 0
	pid := []byte(strconv.Itoa(os.Getpid()))
	for ; i < len(args) && args[i] != "--"; i++ {
		if err := os.WriteFile(args[i], pid, 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	if i+1 >= len(args) {
		return fmt.Errorf("launch: missing -- BWRAP ARGS")
	}
	argv := args[i+1:]
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
