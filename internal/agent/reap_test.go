package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/modeltest"
)

// bgMarker is the job the agent's Bash tool leaves in the background in
// TestCancelStopsToolProcesses; no other process has it in its command line.
// (Not a sleep: the CLI refuses long standalone sleeps.)
const bgMarker = "timeout 3127 tail -f /dev/null"

// running lists the sandbox's processes whose command line holds marker,
// read from /proc by a fresh exec.
func (e *env) running(owner, sbID, marker string) []string {
	e.t.Helper()
	out := e.exec(owner, sbID, "sh", "-c", `for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); [ -n "$c" ] && echo "${p#/proc/} $c"; done; true`)
	var found []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, marker) {
			found = append(found, l)
		}
	}
	return found
}

// TestCancelStopsToolProcesses: cancelling a run stops what it started in
// the sandbox: the command its Bash tool runs (the CLI stops that one
// itself on SIGINT) and a job an earlier tool call left in the background,
// outside the CLI's process tree.
func TestCancelStopsToolProcesses(t *testing.T) {
	e := newEnv(t, envOpts{grace: 20 * time.Second},
		modeltest.Bash(bgMarker+" > /dev/null 2>&1 &"), modeltest.Bash("timeout 3128 tail -f /dev/null; echo slept"), modeltest.Text("never"))
	sb := e.sandbox("alice")
	r := e.start("alice", sb.ID, "sleep for a long time", agent.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for len(e.running("alice", sb.ID, "timeout 3128")) == 0 || len(e.running("alice", sb.ID, bgMarker)) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the Bash tool never started its commands")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := e.svc.Cancel(ctx, "alice", r.ID); err != nil {
		t.Fatal(err)
	}
	got, evs := e.wait("alice", r.ID)
	if got.Status != agent.Cancelled {
		t.Fatalf("run %s (%s), events %v", got.Status, got.Error, types(evs))
	}
	for _, m := range []string{bgMarker, "timeout 3128"} {
		if left := e.running("alice", sb.ID, m); len(left) > 0 {
			t.Errorf("processes the run started are still running after cancel:\n%s", strings.Join(left, "\n"))
		}
	}
}
