package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
)

// reapAfter advances the clock by d and runs the reaper; it returns the
// sandbox's state afterwards.
func (h *sbHarness) reapAfter(id string, d time.Duration) sandbox.State {
	h.t.Helper()
	h.clock.Advance(d)
	if _, err := h.m.Reap(context.Background()); err != nil {
		h.t.Fatalf("reap: %v", err)
	}
	sb, err := h.db.GetSandbox(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return sb.State
}

// TestIdleManagedProcess: a running managed process (a dev server) is
// activity; once it has exited the sandbox idles out.
func TestIdleManagedProcess(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, func(l *sandbox.Limits) { l.DefaultIdleTimeout = time.Minute })
	id := h.createSandbox(h.alice, map[string]any{})
	r := h.do(h.alice, "POST", "/sandbox/"+id+"/processes", map[string]any{"name": "dev", "command": []string{"sleep", "600"}})
	wantStatus(t, r, http.StatusCreated)
	var p sandbox.Process
	r.data(t, &p)
	for range 3 {
		if st := h.reapAfter(id, 2*time.Minute); st != sandbox.Running {
			t.Fatalf("with a managed process running, past the idle timeout: %s, want running", st)
		}
	}
	pid := strconv.Itoa(p.PID)
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+id+"/processes/"+pid+"/signal", map[string]any{"signal": "SIGKILL"}), http.StatusNoContent)
	logs, _ := h.liveSSE(h.alice, "/sandbox/"+id+"/processes/"+pid+"/logs?follow=true")
	waitEvent(t, logs, "exit", "")
	collect(logs) // the stream has ended: its viewer is gone too
	if st := h.reapAfter(id, 2*time.Minute); st != sandbox.Terminated {
		t.Fatalf("after the process exited, past the idle timeout: %s, want terminated", st)
	}
}

// TestIdlePreviewWebSocket: an open WebSocket through the preview proxy
// (a dev server's hot reload in the user's browser) is activity.
func TestIdlePreviewWebSocket(t *testing.T) {
	t.Parallel()
	h := newPreviewHarness(t)
	h.createUser("alice@example.com", auth.RoleMember)
	h.alice = h.mustLogin("alice@example.com")
	tok := h.newToken(h.alice, "cli").Token
	id := h.startPreviewApps(h.alice)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := h.echoPreviewWS(ctx, t, id, tok, "hi")
	defer c.CloseNow()
	idle := sandbox.DefaultLimits().DefaultIdleTimeout + time.Minute
	if st := h.reapAfter(id, idle); st != sandbox.Running {
		t.Fatalf("with the preview's WebSocket open, past the idle timeout: %s, want running", st)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	// The proxy lets go of the sandbox once the connection has ended (its
	// handler returns after the client's close).
	deadline := time.Now().Add(time.Minute)
	for h.reapAfter(id, idle) != sandbox.Terminated {
		if time.Now().After(deadline) {
			t.Fatal("the sandbox is not idle-stopped after the WebSocket closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
