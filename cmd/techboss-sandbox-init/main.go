// Command techboss-sandbox-init is the local sandbox driver's static helper.
// Build it with CGO_ENABLED=0. Its mode under bubblewrap:
//
//	techboss-sandbox-init agent
//	    runs inside the sandbox: reads its base environment from fd 6 and
//	    serves the driver on the listening socket on fd 3, starting commands
//	    that exec into no capability (agent.Spawner).
//
// Under gVisor (TECHBOSS_LOCAL_RUNTIME=runsc) it has three more:
// runsc-launch, runsc-agent and runsc-serve (runsc.go).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"

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
		return fmt.Errorf("usage: techboss-sandbox-init agent")
	}
	switch args[0] {
	case "agent":
		return serve()
	case "runsc-launch":
		return runscLaunch(args[1:])
	case "runsc-agent":
		return runscAgent(args[1:])
	case "runsc-serve":
		return runscServe()
	default:
		return fmt.Errorf("unknown mode %q", args[0])
	}
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
	return serveOn(l, init.Env)
}

// warmThreads is how many OS threads the agent makes before it starts a
// command in an idle sandbox (agent.WarmThreads).
const warmThreads = 10

// serveOn serves the driver on l until the agent is killed (a signal's
// default action ends it). It does not catch SIGTERM: os/signal keeps a
// thread of its own locked for good, and the runtime a template thread
// beside it, two host tasks per sandbox for a shutdown that has nothing to
// save (the driver ends a sandbox with SIGKILL).
func serveOn(l net.Listener, env []string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	agent.ResetIgnoredSignals() // commands start with every signal's default action
	ctx := context.Background()
	sp, err := agent.NewSpawner(ctx, warmThreads)
	if err != nil {
		return err
	}
	return agent.Serve(ctx, l, sp, env, log)
}
