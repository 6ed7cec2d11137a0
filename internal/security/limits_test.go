package security

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
)

// A fork bomb stays inside pids_limit, and once its exec is cancelled the
// sandbox works again.
func TestForkBombContained(t *testing.T) {
	d := newDriver(t)
	ref := create(t, d, sandbox.Spec{PidsLimit: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"/bin/bash", "-c", "bomb() { bomb | bomb & }; bomb; wait"}})
	// The host is fine (this test runs), and so is the sandbox: its exec
	// works again within a few tries once the bomb's group was killed.
	var last result
	for i := 0; i < 50; i++ {
		var out strings.Builder
		st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", "echo alive"}, Stdout: &out})
		if err == nil && st.Code == 0 && out.String() == "alive\n" {
			return
		}
		last = result{st: st, stdout: out.String()}
	}
	t.Fatalf("the sandbox did not recover from the fork bomb: last exec %+v", last)
}

// A child of the command killed by the sandbox's memory limit is reported
// as oom_killed, although the command itself survives.
func TestMemoryHogReported(t *testing.T) {
	d := newDriver(t)
	ref := create(t, d, sandbox.Spec{MemoryMB: 64})
	r := sh(t, d, ref, `x=$(head -c 400000000 /dev/zero | tr '\0' a); echo survived`)
	if !r.st.OOMKilled {
		t.Errorf("memory hog: got %+v (stdout %q), want oom_killed", r.st, r.stdout)
	}
	if got := mustSh(t, d, ref, "echo fine"); got != "fine\n" {
		t.Errorf("after the hog: %q", got)
	}
}
