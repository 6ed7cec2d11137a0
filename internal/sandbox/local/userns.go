package local

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
)

// The driver's sandboxes share one user namespace: uid and gid 0..Size-1
// inside are HostBase.. on the host, the same range every sandbox already
// mapped to when each had a namespace of its own. Sharing it lets the
// driver start bubblewrap with a plain fork (vfork: Go cannot vfork into a
// new user namespace, and a full fork of the server costs ~10 ms) and
// saves bubblewrap creating and mapping one per start.
//
// What sharing does not change: each sandbox still has its own mount, pid,
// ipc, uts, network and cgroup namespaces, so one sandbox's processes
// cannot see, signal or ptrace another's; no sandbox process holds a
// capability beyond the agent's CAP_SETUID/SETGID/SETPCAP, and seccomp
// refuses setns. What it does change: pasta, which joins a sandbox's user
// namespace to configure its network, holds its capabilities in the
// shared namespace (docs/security.md).
//
// The namespace's owner is HostBase (its creator), so bubblewrap run as
// host uid HostBase may join it (setns needs CAP_SYS_ADMIN there, which
// the owner has). Nested user namespaces are forbidden in it
// (max_user_namespaces 0), as the per-sandbox helper did before.

// userNS returns the open shared user namespace, creating it on first use.
func (d *Driver) userNS() (*os.File, error) {
	d.usernsMu.Lock()
	defer d.usernsMu.Unlock()
	if d.userns != nil {
		return d.userns, nil
	}
	f, err := newUserNS(d.bwrap, d.opts.IDs)
	if err != nil {
		return nil, err
	}
	d.userns = f
	return f, nil
}

// usernsTimeout bounds creating the shared user namespace (a few
// milliseconds when all is well).
const usernsTimeout = 30 * time.Second

// newUserNS creates a user namespace owned by ids.HostBase with uids and
// gids 0..Size-1 mapped to ids, forbids nested user namespaces in it, and
// returns a descriptor that keeps it alive.
func newUserNS(bwrap string, ids sandbox.IDMap) (*os.File, error) {
	// The parent-death signal (Pdeathsig, below) fires when the thread that
	// forked the child ends, not the process, and the runtime ends threads
	// (a goroutine that entered a sandbox's namespace may exit locked).
	// Killed after it reported its child but before it let the child go,
	// bubblewrap leaves the child waiting for good. This goroutine keeps
	// its thread until bubblewrap has exited.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	infoR, infoW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer infoR.Close()
	blockR, blockW, err := os.Pipe()
	if err != nil {
		infoW.Close()
		return nil, err
	}
	defer blockW.Close()
	var stderr strings.Builder
	// bubblewrap, not a Go fork: the namespace's owner is the euid of the
	// process that creates it, which must be HostBase. It waits on fd 4
	// until the maps are written; the child then sets the limit (as root
	// of the new namespace, which holds CAP_SYS_RESOURCE there) and exits.
	cmd := exec.Command(bwrap,
		"--unshare-user", "--userns-block-fd", "4", "--info-fd", "3",
		"--uid", "0", "--gid", "0",
		"--cap-add", "CAP_SYS_RESOURCE",
		// Only what the shell needs, not the host's whole tree: bubblewrap
		// fails when a mount in what it copies goes away meanwhile, and
		// sandboxes' roots under /run come and go all the time.
		"--ro-bind", "/usr", "/usr",
		"--ro-bind-try", "/bin", "/bin", "--ro-bind-try", "/lib", "/lib", "--ro-bind-try", "/lib64", "/lib64",
		"--proc", "/proc",
		"--", "/bin/sh", "-c", "echo 0 > /proc/sys/user/max_user_namespaces")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.ExtraFiles = []*os.File{infoW, blockR}
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: ids.HostBase, Gid: ids.HostBase, Groups: []uint32{}},
		Setsid:     true,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		infoW.Close()
		blockR.Close()
		return nil, fmt.Errorf("user namespace: start bubblewrap: %w", err)
	}
	infoW.Close()
	blockR.Close()
	// Whatever goes wrong, creating the namespace ends: bubblewrap and its
	// child (its own process group) are killed past the deadline.
	killAll := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	deadline := time.AfterFunc(usernsTimeout, killAll)
	defer deadline.Stop()
	_ = infoR.SetReadDeadline(time.Now().Add(usernsTimeout))
	fail := func(err error) (*os.File, error) {
		killAll()
		_ = cmd.Wait()
		return nil, fmt.Errorf("user namespace: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.NewDecoder(infoR).Decode(&info); err != nil || info.ChildPID == 0 {
		return fail(fmt.Errorf("bubblewrap reported no child: %v", err))
	}
	proc := filepath.Join("/proc", strconv.Itoa(info.ChildPID))
	m := fmt.Sprintf("0 %d %d\n", ids.HostBase, ids.Size)
	for _, f := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(filepath.Join(proc, f), []byte(m), 0); err != nil {
			return fail(fmt.Errorf("write %s: %w", f, err))
		}
	}
	ns, err := os.Open(filepath.Join(proc, "ns", "user"))
	if err != nil {
		return fail(err)
	}
	if _, err := blockW.Write([]byte{1}); err != nil {
		ns.Close()
		return fail(fmt.Errorf("release: %w", err))
	}
	blockW.Close()
	if err := cmd.Wait(); err != nil {
		ns.Close()
		return nil, fmt.Errorf("user namespace: forbid nested namespaces: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return ns, nil
}
