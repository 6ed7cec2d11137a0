package runsc

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/techbossai/techboss/internal/sandbox/local/runsc/initproto"
)

// Paths inside the container. The agent's directory is a bind mount of
// Options.AgentDir: gVisor creates the socket the agent binds there as a
// host socket (--host-uds=create), which is how the driver reaches it.
const (
	// AgentDir is where Options.AgentDir appears inside the container.
	AgentDir = initproto.AgentDir
	// AgentSocket is the socket the agent listens on, inside the container.
	AgentSocket = initproto.AgentSocket
	// AgentBinary is where Options.AgentBinary appears inside the container.
	AgentBinary = "/run/techboss-init"
)

// Mount is one bind mount into the container.
type Mount struct {
	Source   string // host path
	Target   string // absolute path inside the container
	ReadOnly bool
}

// agentCaps are the capabilities the container's process (the agent)
// starts with: the ones bubblewrap leaves it (it switches users and
// empties the bounding set before any exec), no more.
var agentCaps = []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}

// Spec builds the OCI runtime configuration of o. It holds no secrets:
// the base environment goes to the agent on its stdin, never to disk.
func Spec(o Options) *specs.Spec {
	caps := append(append([]string(nil), agentCaps...), o.AgentCaps...)
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: o.hostname(),
		Root:     &specs.Root{Path: o.Root},
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: o.args(),
			// Only what the agent itself needs to start; commands get
			// the base environment the agent reads from its stdin.
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			NoNewPrivileges: true,
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: 20000, Soft: 20000},
			},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			Resources: o.Resources,
		},
	}
	bind := func(src, dst string, ro bool) {
		opts := []string{"rbind"}
		if ro {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts})
	}
	if o.HasTmp {
		// Named, or gVisor puts a tmpfs of its own over the root's /tmp.
		bind(filepath.Join(o.Root, "tmp"), "/tmp", false)
	} else {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}})
	}
	for _, m := range o.Mounts {
		bind(m.Source, m.Target, m.ReadOnly)
	}
	bind(o.AgentDir, AgentDir, false)
	bind(o.AgentBinary, AgentBinary, true)
	return s
}

// writeSpec writes config.json into the bundle directory.
func writeSpec(bundle string, s *specs.Spec) error {
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("encode runtime spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	return nil
}
