package security

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
)

// A fork bomb stays inside pids_limit, and once its exec is cancelled the
// sandbox works again.
func TestForkBombContained(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		data := t.TempDir()
		d := newDriverWith(t, rt, local.Options{DataDir: data})
		ref := create(t, d, sandbox.Spec{PidsLimit: 64})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"/bin/bash", "-c", "bomb() { bomb | bomb & }; bomb; wait"}})
		// The host is fine (this test runs), and so is the sandbox: its exec
		// works again once the bomb's group was killed and its processes are
		// gone (an exec meanwhile may be refused for lack of PIDs).
		deadline := time.Now().Add(90 * time.Second) // generous: a loaded host reaps slowly
		for {
			var out strings.Builder
			st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", "echo alive"}, Stdout: &out})
			if err == nil && st.Code == 0 && out.String() == "alive\n" {
				return
			}
			if time.Now().After(deadline) {
				// Its log says how it ended (under gVisor, the Sentry's and the agent's).
				b, _ := os.ReadFile(filepath.Join(data, "sandboxes", string(ref), "sandbox.log"))
				t.Fatalf("the sandbox did not recover from the fork bomb within 90 s: last exec %+v %q, %v\nsandbox.log (end):\n%s", st, out.String(), err, b[max(0, len(b)-8192):])
			}
		}
	})
}

// A child of the command killed by the sandbox's memory limit is reported
// as oom_killed, although the command itself survives.
//
// Under gVisor the limit is the host cgroup's around gVisor itself, and
// the host's OOM killer takes the biggest of its processes: for memory a
// process of the workload allocated, the systrap stub that maps it, and
// gVisor then ends that process as the kernel would; the sandbox goes on.
// (When memory gVisor's kernel holds itself, such as tmpfs files and pipe
// buffers, makes the Sentry the biggest, it is the victim and the whole
// sandbox ends; docs/security.md.) The pipeline below is slow enough
// through gVisor's pipes to take minutes on a busy host; a string doubling
// in awk reaches the limit at once.
func TestMemoryHogReported(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{MemoryMB: 64})
		hog := `x=$(head -c 400000000 /dev/zero | tr '\0' a); echo survived`
		if rt == local.RuntimeRunsc {
			hog = `awk 'BEGIN { s = "x"; while (1) s = s s }'; echo survived`
			// Which of gVisor's processes the host's OOM killer takes is
			// the biggest at that instant: now and then the Sentry (the
			// whole sandbox ends, as docs/security.md says). That outcome
			// is retried in a new sandbox, up to three times; the workload
			// must be the victim in one of them.
			for attempt := 1; attempt < 3; attempt++ {
				var out bytes.Buffer
				st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"/bin/sh", "-c", hog}, Stdout: &out})
				if err == nil {
					if !st.OOMKilled {
						t.Errorf("memory hog: got %+v (stdout %q), want oom_killed", st, out.String())
					}
					if got := mustSh(t, d, ref, "echo fine"); got != "fine\n" {
						t.Errorf("after the hog: %q", got)
					}
					return
				}
				t.Logf("attempt %d: the sandbox ended (%v): the Sentry was the OOM victim; again in a new sandbox", attempt, err)
				ref = create(t, d, sandbox.Spec{MemoryMB: 64})
			}
		}
		r := sh(t, d, ref, hog)
		if !r.st.OOMKilled {
			t.Errorf("memory hog: got %+v (stdout %q), want oom_killed", r.st, r.stdout)
		}
		if got := mustSh(t, d, ref, "echo fine"); got != "fine\n" {
			t.Errorf("after the hog: %q", got)
		}
	})
}
