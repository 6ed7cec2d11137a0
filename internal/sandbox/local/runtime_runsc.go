package local

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/netpolicy"
	"github.com/techbossai/techboss/internal/sandbox/local/runsc"
)

// The runtimes a local sandbox can run under (Options.Runtime).
//
// Under RuntimeRunsc, gVisor's runsc runs the same agent on the same
// prepared root (overlay over the image, the sandbox's disk, /workspace,
// volumes and the server's mounts, all mounted by the driver on the host),
// speaking the same protocol: every Driver method works as under
// bubblewrap. What changes is the kernel the workload talks to: gVisor's
// Sentry, a user-space kernel that itself runs under a strict seccomp
// filter on the host, serves every system call; files come through its
// gofer. The differences:
//
//   - User namespace: one per sandbox, not the bubblewrap sandboxes'
//     shared one (runsc creates namespaces below it, which the shared one
//     forbids). Same id range, so files are owned alike on the host.
//   - Network: the sandbox's own network namespace in every mode, and
//     gVisor uses the host kernel's sockets in it (--network=host), so
//     netpolicy (pasta, nftables) applies unchanged and the driver's
//     listeners in the namespace (the model gateway) answer on the
//     sandbox's 127.0.0.1.
//   - seccomp: the filter bubblewrap sandboxes get, installed by the
//     agent on itself (runsc-agent), is applied by gVisor's kernel to the
//     workload; the host kernel sees only the Sentry's own filter.
//   - cgroups: the driver places runsc's processes (Sentry, gofer) in the
//     sandbox's cgroups before runsc starts (runsc-launch), so memory and
//     pids limits bound the whole sandbox.
const (
	RuntimeBwrap = "bwrap"
	RuntimeRunsc = "runsc"
)

// runscRuntime is what a runsc driver needs beyond bubblewrap's.
type runscRuntime struct {
	bin      string // the runsc binary
	platform string // systrap | ptrace
	// init is a copy of the sandbox helper in the driver's run dir, which
	// runsc, started as the sandbox's unprivileged root, may read (the
	// configured one may be in a directory private to host root).
	init string
	// empty and emptyDir are bound over host secrets in host-image
	// sandboxes (runsc binds only directories and regular files).
	empty, emptyDir string
}

// newRunscRuntime checks runsc and the platform and prepares the run dir.
func newRunscRuntime(o Options, runDir string) (*runscRuntime, error) {
	bin := o.Runsc
	if bin == "" {
		bin = "runsc"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("gVisor's runsc not found (%q): run `TECHBOSS_LOCAL_RUNTIME=runsc scripts/deps.sh run`, which builds it into .tools/bin/runsc, or set TECHBOSS_RUNSC_BIN", bin)
	}
	platform := o.RunscPlatform
	switch platform {
	case "":
		platform = "systrap"
	case "systrap", "ptrace":
	default:
		return nil, fmt.Errorf("runsc platform %q: must be systrap or ptrace", platform)
	}
	if out, err := exec.Command(p, "--version").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runsc %s does not run: %w: %s", p, err, out)
	}
	rs := &runscRuntime{bin: p, platform: platform,
		init: filepath.Join(runDir, "techboss-sandbox-init"), empty: filepath.Join(runDir, "empty"), emptyDir: filepath.Join(runDir, "empty.d")}
	if err := copyExecutable(o.InitBinary, rs.init); err != nil {
		return nil, fmt.Errorf("sandbox helper for runsc: %w", err)
	}
	if err := os.WriteFile(rs.empty, nil, 0o444); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(rs.emptyDir, 0o555); err != nil {
		return nil, err
	}
	return rs, nil
}

// copyExecutable copies src to dst (mode 0755) through a temporary file,
// so a sandbox starting meanwhile never sees half of it.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// checkRunsc refuses at create what the gVisor runtime cannot start
// (rather than failing later): an ID so long that the agent's socket path
// (in the run dir) would not fit a Unix socket address.
func (d *Driver) checkRunsc(req sandbox.CreateRequest) error {
	if d.runsc == nil {
		return nil
	}
	// <run dir>/<id>/agent/agent.sock, and the driver's name of it in bundle/.
	if n := len(filepath.Join(d.runDir, req.ID, "bundle", "agent.sock")); n > maxSocketPath {
		return errs.Field("id", fmt.Sprintf("at most %d characters with the gVisor runtime (its agent socket path would be %d bytes, over the %d a Unix socket takes)",
			len(req.ID)-(n-maxSocketPath), n, maxSocketPath))
	}
	return nil
}

// maxSocketPath is the longest path a Unix socket address holds.
const maxSocketPath = 107

// launchRunsc is launch under gVisor: it starts runsc through the helper
// (runsc-launch) in the sandbox's own user and network namespaces, puts
// it into the sandbox's cgroups, connects the network, releases it and
// waits for the agent's first answer.
func (d *Driver) launchRunsc(ctx context.Context, st *state, r startRequest, env []string) error {
	rs := d.runsc
	agentDir, bundle := filepath.Join(st.RunDir, "agent"), filepath.Join(st.RunDir, "bundle")
	for _, p := range []string{agentDir, bundle} {
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("runsc dirs: %w", err)
		}
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sync pipe: %w", err)
	}
	defer syncR.Close()
	defer syncW.Close()
	if err := st.Cgroups.runscLimits(r.limits); err != nil {
		return err
	}
	agentArgs, agentCaps := []string{"runsc-agent"}, []string(nil)
	if r.limits.pids > 0 {
		// gVisor's own pids cgroup, which the agent sets up (it needs
		// CAP_SYS_ADMIN and CAP_DAC_OVERRIDE of gVisor's kernel to mount and
		// write it, then drops them).
		agentArgs = append(agentArgs, strconv.Itoa(r.limits.pids+pidsOverhead))
		agentCaps = []string{"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"}
	}
	c, err := runsc.Start(ctx, runsc.Options{
		Runsc:     rs.bin,
		Platform:  rs.platform,
		StateRoot: filepath.Join(st.RunDir, "runsc"),
		// Two drivers on one host (two test processes) may use one ID.
		ID:            st.ID + "." + d.instance,
		Bundle:        bundle,
		Log:           filepath.Join(st.Dir, "sandbox.log"),
		Root:          st.merged(),
		Mounts:        d.runscMounts(st, r),
		HasTmp:        st.DiskDir != "",
		AgentBinary:   rs.init,
		AgentArgs:     agentArgs,
		AgentCaps:     agentCaps,
		AgentDir:      agentDir,
		Env:           env,
		Network:       r.network,
		IDs:           st.IDs,
		IgnoreCgroups: true,
		Seccomp:       d.seccomp,
		Launcher:      []string{rs.init, "runsc-launch", "--"},
		ExtraFiles:    []*os.File{syncR},
		Started: func(pid int) error {
			st.BwrapPID = pid
			// cgroup v1 cannot place a child at clone time; the
			// helper waits until the driver has moved it.
			for _, f := range st.Cgroups.procsFiles() {
				if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
					return fmt.Errorf("join cgroup: %w", err)
				}
			}
			if r.network {
				n, err := netpolicy.Start(ctx, netpolicy.Options{
					NetNS: netpolicy.NetNSPath(pid), UserNS: userNSPath(pid), Policy: *r.policy, StateDir: st.Dir, Upstreams: d.opts.DNSUpstreams,
					Logger: d.log.With("sandbox_id", st.ID),
				})
				if err != nil {
					return fmt.Errorf("sandbox network: %w", err)
				}
				ns := n.State()
				st.Net, st.Network = &ns, r.spNet
				d.mu.Lock()
				d.nets[st.ID] = n
				d.mu.Unlock()
			}
			if _, err := syncW.Write([]byte{1}); err != nil {
				return fmt.Errorf("release sandbox helper: %w", err)
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("start gVisor: %w", err)
	}
	rst := c.State()
	st.Runsc = &rst
	st.BwrapPID, st.InitPID = rst.RunPid, rst.Pid
	if st.InitStart, err = procStart(st.InitPID); err != nil {
		return fmt.Errorf("gVisor sandbox process: %w", err)
	}
	return nil
}

// runscMounts are the binds bubblewrap's arguments make beyond the root:
// the host's /usr and /etc for host images (secrets masked), and the DNS
// proxy's resolv.conf with a network.
func (d *Driver) runscMounts(st *state, r startRequest) []runsc.Mount {
	var ms []runsc.Mount
	if r.rootfs.Host {
		ms = append(ms, runsc.Mount{Source: "/usr", Target: "/usr", ReadOnly: true}, runsc.Mount{Source: "/etc", Target: "/etc", ReadOnly: true})
		for _, dir := range hostLibDirs() {
			ms = append(ms, runsc.Mount{Source: dir, Target: dir, ReadOnly: true})
		}
		// runsc's gofer opens host files as the sandbox's unprivileged
		// root, which reads none that others may not (it cannot even open
		// them as mount points): only what others may read needs a mask.
		keys, _ := filepath.Glob("/etc/ssh/ssh_host_*")
		for _, f := range append(keys, hostSecretFiles...) {
			if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o004 != 0 {
				ms = append(ms, runsc.Mount{Source: d.runsc.empty, Target: f, ReadOnly: true})
			}
		}
		for _, dir := range hostSecretDirs {
			if fi, err := os.Lstat(dir); err == nil && fi.IsDir() && fi.Mode().Perm()&0o001 != 0 {
				ms = append(ms, runsc.Mount{Source: d.runsc.emptyDir, Target: dir, ReadOnly: true})
			}
		}
	}
	if r.network {
		ms = append(ms, runsc.Mount{Source: filepath.Join(st.RunDir, "resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: true})
	}
	return ms
}

// nsPID is a process in the sandbox's user and network namespaces as the
// host sees them: bubblewrap's init, or under runsc `runsc run` (the
// Sentry runs in namespaces of its own below them).
func (s *state) nsPID() int {
	if s.Runsc != nil {
		return s.BwrapPID
	}
	return s.InitPID
}

// rootPath is the sandbox's root as its processes see it: bubblewrap's
// init's root, or under runsc the prepared root itself (the Sentry's own
// root on the host is an empty directory).
func (s *state) rootPath() string {
	if s.Runsc != nil {
		return s.merged()
	}
	return "/proc/" + strconv.Itoa(s.InitPID) + "/root"
}

// Host cgroup limits under runsc. The host's cgroups hold gVisor itself:
// the Sentry (gVisor's kernel, one process with a thread per running
// task and its own heap), the gofer and, with systrap, a stub process per
// address space. The workload's task limit is enforced inside gVisor
// (runsc-agent); the host limit only bounds gVisor's own threads, with
// room to spare, since a Sentry that cannot create a thread dies with
// the whole sandbox. gVisor does not limit memory itself: memory_mb plus
// the Sentry's own (runscMemoryOverheadMB) is the host cgroup's limit, and
// past it the host's OOM killer takes the biggest process, usually the
// stub mapping the hog's memory (gVisor then ends that process), or the
// Sentry when gVisor's kernel holds the memory itself (tmpfs, pipes), which
// ends the whole sandbox.
const (
	runscPidsFactor       = 4
	runscPidsOverhead     = 256
	runscMemoryOverheadMB = 64
)

// runscLimits rewrites the limits newCgroups wrote for bubblewrap.
func (cg cgroups) runscLimits(l limits) error {
	type limit struct{ ctrl, v1, v2, val string }
	var ls []limit
	if l.pids > 0 {
		n := strconv.Itoa(runscPidsFactor*(l.pids+pidsOverhead) + runscPidsOverhead)
		ls = append(ls, limit{"pids", "pids.max", "pids.max", n})
	}
	if l.memoryMB > 0 {
		b := strconv.FormatInt(int64(l.memoryMB+runscMemoryOverheadMB)<<20, 10)
		// memsw first: it may not be below memory.limit_in_bytes.
		ls = append(ls, limit{"memory", "memory.memsw.limit_in_bytes", "", b}, limit{"memory", "memory.limit_in_bytes", "memory.max", b})
	}
	for _, x := range ls {
		switch cg.Mode {
		case cgroupV1:
			dir := cg.dir(x.ctrl)
			if dir == "" {
				continue
			}
			err := writeFile(filepath.Join(dir, x.v1), x.val)
			if err != nil && x.v1 != "memory.memsw.limit_in_bytes" {
				return err
			}
		case cgroupV2:
			if x.v2 == "" {
				continue
			}
			if err := writeFile(filepath.Join(cg.dir(""), x.v2), x.val); err != nil {
				return err
			}
		}
	}
	return nil
}
