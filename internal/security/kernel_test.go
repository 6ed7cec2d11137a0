package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
)

// The sandbox's root is an unprivileged host user: its uid 0 maps to the
// driver's range, and what it writes in its workspace is owned by that
// range on the host.
func TestUserNamespace(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{})
		if rt == local.RuntimeRunsc {
			// Inside gVisor, /proc/self/uid_map and max_user_namespaces
			// are its own kernel's (an identity map): what must hold is
			// that on the host every process of the sandbox (runsc, its
			// gofer, gVisor's kernel and its stubs) runs as an id of the
			// range, never as root.
			pids := sandboxHostPids(t, ref)
			if len(pids) < 3 {
				t.Fatalf("got %d host processes in the sandbox's cgroups, want runsc, gofer and sandbox at least", len(pids))
			}
			for _, pid := range pids {
				for _, key := range []string{"Uid:", "Gid:"} {
					ids := procStatusField(t, pid, key)
					for _, f := range ids {
						if id, _ := strconv.Atoi(f); id < 1000000000 || id >= 1000000000+65536 {
							t.Errorf("host process %d of the sandbox: %s %v, want ids of the sandbox range only", pid, key, ids)
						}
					}
				}
			}
		} else {
			got := strings.Fields(mustSh(t, d, ref, "cat /proc/self/uid_map /proc/self/gid_map"))
			want := []string{"0", "1000000000", "65536", "0", "1000000000", "65536"}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("uid_map/gid_map: got %q, want %q", got, want)
			}
			// A second line behind seccomp: the namespace allows no nested ones.
			if got := strings.TrimSpace(mustSh(t, d, ref, "cat /proc/sys/user/max_user_namespaces")); got != "0" {
				t.Errorf("max_user_namespaces inside the sandbox: %s, want 0", got)
			}
		}
		mustSh(t, d, ref, "echo x > /workspace/owned && id -u")
		ws, _, err := d.WorkspaceDir(ref)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(filepath.Join(ws, "owned"))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000000000 || st.Gid != 1000000000 {
			t.Errorf("file written by the sandbox's root: host owner %d:%d, want 1000000000:1000000000", st.Uid, st.Gid)
		}
		// Host root's files are nobody's inside: the sandbox cannot claim them.
		if got := strings.TrimSpace(mustSh(t, d, ref, "stat -c %u /usr/bin/env")); got != "65534" {
			t.Errorf("host root's /usr/bin/env seen as uid %s, want 65534 (unmapped)", got)
		}
	})
}

// The seccomp filter is installed in every sandbox process. Under gVisor
// the /proc/self/status read inside is gVisor's kernel's: the filter is
// enforced by gVisor on the workload's system calls, and on the host
// gVisor's own processes run under gVisor's filter, which the test checks
// too.
func TestSeccompInstalled(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{})
		got := mustSh(t, d, ref, "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status")
		for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
			if !strings.Contains(got, want) {
				t.Errorf("/proc/self/status: want %q in\n%s", want, got)
			}
		}
		if rt != local.RuntimeRunsc {
			return
		}
		// gVisor's kernel (the process that runs the workload's code) is
		// filtered on the host.
		filtered := 0
		for _, pid := range sandboxHostPids(t, ref) {
			if f := procStatusField(t, pid, "Seccomp:"); len(f) == 1 && f[0] == "2" {
				filtered++
			}
		}
		if filtered == 0 {
			t.Error("no host process of the gVisor sandbox runs under a seccomp filter")
		}
	})
}

// sandboxHostPids lists the host processes in the sandbox's cgroups (the
// driver names them <sandbox id>.<instance>, under cgroup v1 or v2).
func sandboxHostPids(t *testing.T, ref sandbox.Ref) []int {
	t.Helper()
	files, _ := filepath.Glob("/sys/fs/cgroup/*/techboss/" + string(ref) + ".*/cgroup.procs")
	v2, _ := filepath.Glob("/sys/fs/cgroup/techboss/" + string(ref) + ".*/cgroup.procs")
	seen := map[int]bool{}
	var out []int
	for _, f := range append(files, v2...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// procStatusField returns the fields after key in /proc/PID/status.
func procStatusField(t *testing.T, pid int, key string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil // exited meanwhile (a stub)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}

// New namespaces (above all user namespaces, which hand back a full set of
// capabilities) and mounts are refused.
func TestNamespacesAndMountsRefused(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{Network: sandbox.Network{Mode: "full"}})
		for _, cmd := range []string{
			"unshare -U true",
			"unshare -Ur true",
			"unshare -m true",
			"unshare -n true",
			"unshare -p -f true",
			"mkdir -p /tmp/m && mount -t tmpfs t /tmp/m",
			"mount --bind /workspace /tmp",
			"nsenter -t 1 -U true",
		} {
			r := sh(t, d, ref, cmd+" 2>&1")
			if r.st.Code == 0 {
				t.Errorf("%q succeeded inside the sandbox (stdout %q)", cmd, r.stdout)
			}
		}
	})
}
