package security

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
)

// A fork bomb stays inside pids_limit, and once its exec is cancelled the
// sandbox works again.
func TestForkBombContained(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{PidsLimit: 64})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"/bin/bash", "-c", "bomb() { bomb | bomb & }; bomb; wait"}})
		// The host is fine (this test runs), and so is the sandbox: its exec
		// works again once the bomb's group was killed and its processes are
		// gone (an exec meanwhile may be refused for lack of PIDs).
		deadline := time.Now().Add(30 * time.Second)
		for {
			var out strings.Builder
			st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", "echo alive"}, Stdout: &out})
			if err == nil && st.Code == 0 && out.String() == "alive\n" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sandbox did not recover from the fork bomb within 30 s: last exec %+v %q, %v", st, out.String(), err)
			}
		}
	})
}

// A child of the command killed by the sandbox's memory limit is reported
// as oom_killed, although the command itself survives.
//
// Under gVisor the limit means something else: all of the sandbox's
// memory belongs to one host process, gVisor's kernel, which is what the
// host's OOM killer takes. The hog is still stopped at the limit and
// reported as oom_killed, but the whole sandbox ends with it
// (docs/security.md): the next exec finds it stopped.
func TestMemoryHogReported(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{MemoryMB: 64})
		r := sh(t, d, ref, `x=$(head -c 400000000 /dev/zero | tr '\0' a); echo survived`)
		if !r.st.OOMKilled {
			t.Errorf("memory hog: got %+v (stdout %q), want oom_killed", r.st, r.stdout)
		}
		if rt == local.RuntimeRunsc {
			_, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}})
			if errs.KindOf(err) != errs.NotFound {
				t.Errorf("exec after gVisor's OOM kill: got %v, want the sandbox stopped (not found)", err)
			}
			return
		}
		if got := mustSh(t, d, ref, "echo fine"); got != "fine\n" {
			t.Errorf("after the hog: %q", got)
		}
	})
}
