package security

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox"
)

// The sandbox's root is an unprivileged host user: its uid 0 maps to the
// driver's range, and what it writes in its workspace is owned by that
// range on the host.
func TestUserNamespace(t *testing.T) {
	d := newDriver(t)
	ref := create(t, d, sandbox.Spec{})
	got := strings.Fields(mustSh(t, d, ref, "cat /proc/self/uid_map /proc/self/gid_map"))
	want := []string{"0", "1000000000", "65536", "0", "1000000000", "65536"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("uid_map/gid_map: got %q, want %q", got, want)
	}
	// A second line behind seccomp: the namespace allows no nested ones.
	if got := strings.TrimSpace(mustSh(t, d, ref, "cat /proc/sys/user/max_user_namespaces")); got != "0" {
		t.Errorf("max_user_namespaces inside the sandbox: %s, want 0", got)
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
}

// The seccomp filter is installed in every sandbox process.
func TestSeccompInstalled(t *testing.T) {
	d := newDriver(t)
	ref := create(t, d, sandbox.Spec{})
	got := mustSh(t, d, ref, "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status")
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if !strings.Contains(got, want) {
			t.Errorf("/proc/self/status: want %q in\n%s", want, got)
		}
	}
}

// New namespaces (above all user namespaces, which hand back a full set of
// capabilities) and mounts are refused.
func TestNamespacesAndMountsRefused(t *testing.T) {
	d := newDriver(t)
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
}
