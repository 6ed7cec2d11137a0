package modal_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// liveDriver returns a driver talking to real Modal, or skips saying what
// is missing. `make test-modal` sets TECHBOSS_MODAL_LIVE=1.
func liveDriver(t *testing.T) *modal.Driver {
	t.Helper()
	if os.Getenv("TECHBOSS_MODAL_LIVE") != "1" || os.Getenv("MODAL_TOKEN_ID") == "" || os.Getenv("MODAL_TOKEN_SECRET") == "" {
		t.Skip("why: live Modal tests need MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (a Modal account token) and TECHBOSS_MODAL_LIVE=1; run `make test-modal`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := modal.New(ctx, modal.Options{AppName: "techboss-live-test", Environment: os.Getenv("MODAL_ENVIRONMENT")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// TestLiveCreateExecTerminate creates alpine:3.21 with the Claude image
// commands on real Modal, runs commands, runs Claude when
// ANTHROPIC_API_KEY is set, and terminates.
func TestLiveCreateExecTerminate(t *testing.T) {
	d := liveDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	env := map[string]string{}
	if k := os.Getenv("ANTHROPIC_API_KEY"); k != "" {
		env["ANTHROPIC_API_KEY"] = k
	}
	var log bytes.Buffer
	ref, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "live-test", Log: &log, Spec: sandbox.Spec{
		ImageBase:          "alpine:3.21",
		DockerfileCommands: modal.ClaudeDockerfileCommands,
		Network:            sandbox.Network{Mode: "full"},
		Env:                env,
		IdleTimeoutS:       600,
		MaxLifetimeS:       1200,
	}})
	if err != nil {
		t.Fatalf("Create: %v\n%s", err, log.String())
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background(), ref); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	var out, errb bytes.Buffer
	st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "pwd; cat /etc/alpine-release; claude --version; echo err >&2; exit 3"}, Stdout: &out, Stderr: &errb})
	if err != nil || st.Code != 3 || !strings.HasPrefix(out.String(), "/workspace\n3.21") || errb.String() != "err\n" {
		t.Errorf("exec: got %+v %v stdout %q stderr %q", st, err, out.String(), errb.String())
	}
	alive, err := d.Recover(ctx, ref)
	if err != nil || !alive {
		t.Errorf("Recover: got %v, %v", alive, err)
	}
	// File watching: the image has python3 (ClaudeDockerfileCommands).
	wctx, stopWatch := context.WithCancel(ctx)
	events := make(chan sandbox.WatchEvent, 16)
	watchDone := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		watchDone <- d.Watch(wctx, ref, "/workspace", true, func() { close(ready) }, func(ev sandbox.WatchEvent) error {
			events <- ev
			return nil
		})
	}()
	select {
	case <-ready:
		if _, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo hi > /workspace/live.txt"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Type != "create" || ev.Path != "/workspace/live.txt" {
				t.Errorf("watch: first event %+v", ev)
			}
		case <-time.After(time.Minute):
			t.Error("watch: no event within a minute")
		}
		stopWatch()
		if err := <-watchDone; err != nil {
			t.Errorf("watch ended with %v", err)
		}
	case err := <-watchDone:
		t.Errorf("watch: %v", err)
	}
	stopWatch()
	if env["ANTHROPIC_API_KEY"] != "" {
		out.Reset()
		errb.Reset()
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{
			Argv:   []string{"claude", "-p", "Reply with exactly: pong", "--output-format", "stream-json", "--verbose"},
			Env:    map[string]string{"IS_SANDBOX": "1"},
			Stdout: &out, Stderr: &errb,
		})
		if err != nil || st.Code != 0 || !strings.Contains(out.String(), `"type":"result"`) {
			t.Errorf("claude: got %+v %v\nstdout %s\nstderr %s", st, err, out.String(), errb.String())
		}
	} else {
		t.Log("ANTHROPIC_API_KEY not set: skipped the Claude run")
	}
	if err := d.Destroy(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if alive, err := d.Recover(ctx, ref); err != nil || alive {
		t.Errorf("Recover after Destroy: got %v, %v; want false", alive, err)
	}
}
