package sandbox

import (
	"context"
	"io"
	"io/fs"
	"net"
	"syscall"
	"time"
)

// Driver runs sandboxes on one backend (local isolation, Modal, Docker).
// Every method is safe for concurrent use. A Driver identifies a sandbox by
// the opaque Ref it returned from Create; the Manager persists that Ref so
// Recover can find the sandbox again after a server restart.
type Driver interface {
	// Create builds (or reuses) the image and starts the sandbox. It returns
	// once the sandbox accepts Exec calls. Build progress goes to req.Log.
	Create(ctx context.Context, req CreateRequest) (Ref, error)
	// Exec runs one command and returns when the command's main process has
	// exited (background processes it started may keep running). Output is
	// copied to req.Stdout/req.Stderr as it arrives. Cancelling ctx kills the
	// command. A sandbox the driver does not know is an error wrapping
	// errs.ErrNotFound.
	Exec(ctx context.Context, ref Ref, req ExecRequest) (ExitStatus, error)
	// Destroy stops every process of the sandbox and frees its resources.
	// It is idempotent: destroying an unknown or destroyed sandbox is nil.
	Destroy(ctx context.Context, ref Ref) error
	// Recover reports whether the sandbox behind ref still runs (after a
	// server restart) and re-adopts it if so.
	Recover(ctx context.Context, ref Ref) (alive bool, err error)
}

// Ref is a driver's handle for one sandbox, persisted by the Manager.
// Drivers encode whatever they need (IDs, paths) in it.
type Ref string

// Mount makes a host path (local driver) visible inside the sandbox.
type Mount struct {
	Source   string
	Target   string
	ReadOnly bool
}

// CreateRequest is everything a driver needs to start one sandbox.
type CreateRequest struct {
	ID      string // the sandbox ID (also used for names and tags)
	OwnerID string
	Spec    Spec
	// Mounts are extra mounts the server adds (e.g. the Claude CLI tools dir).
	// Drivers that cannot bind host paths ignore them and report so through Capabilities.
	Mounts []Mount
	// Log receives human-readable build and start progress. May be nil.
	Log io.Writer
	// RegistryAuth pulls Spec.ImageBase when the spec names a
	// registry_credential (the secret's value; never persisted).
	RegistryAuth *RegistryAuth
	// VolumeOwner is the owner key Spec.VolumeName is stored under
	// (VolumeOwner: "team:<id>" for a team sandbox); empty means OwnerID.
	VolumeOwner string
}

// RegistryAuth is a registry login.
type RegistryAuth struct {
	Username string
	Password string
}

// String keeps the password out of logs and error messages.
func (a *RegistryAuth) String() string { return "RegistryAuth{" + a.Username + ", ***}" }

// GoString keeps the password out of %#v.
func (a *RegistryAuth) GoString() string { return a.String() }

// Signal is delivered to a running exec's process.
type Signal = syscall.Signal

// ExecRequest describes one command in a sandbox.
type ExecRequest struct {
	Argv   []string
	Env    map[string]string
	Dir    string // default /workspace
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Signals, if non-nil, delivers signals (e.g. SIGINT for a graceful
	// cancel) to the command's process while it runs. Closed by the caller.
	Signals <-chan Signal
	// User runs the command as this user name or uid inside the sandbox ("" = the image's user).
	User string
}

// ExitStatus is how an exec ended.
type ExitStatus struct {
	Code      int           `json:"exit_code"`
	Signal    string        `json:"signal,omitempty"`     // e.g. "SIGKILL" when killed by a signal
	OOMKilled bool          `json:"oom_killed,omitempty"` // the sandbox's memory limit killed a process (the command or any other) while it ran
	Duration  time.Duration `json:"-"`
}

// FileInfo describes one entry of a sandbox directory listing.
type FileInfo struct {
	Name    string      `json:"name"`
	Type    string      `json:"type"` // file | dir | symlink | other
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mtime"`
	Target  string      `json:"target,omitempty"` // symlink target
}

// Files is the optional file-operations capability. Paths are absolute
// paths inside the sandbox; implementations refuse paths that escape the
// sandbox root ("..", symlinks pointing outside) with errs.Invalid or
// errs.Forbidden, never following them onto the host.
type Files interface {
	ReadFile(ctx context.Context, ref Ref, path string, w io.Writer) (FileInfo, error)
	WriteFile(ctx context.Context, ref Ref, path string, mode fs.FileMode, r io.Reader) (int64, error)
	Remove(ctx context.Context, ref Ref, path string) error
	ListDir(ctx context.Context, ref Ref, dir string) ([]FileInfo, error)
	Stat(ctx context.Context, ref Ref, path string) (FileInfo, error)
}

// Archiver is the optional tar transfer capability.
type Archiver interface {
	ArchiveOut(ctx context.Context, ref Ref, path string, w io.Writer) error
	ArchiveIn(ctx context.Context, ref Ref, path string, r io.Reader) error
}

// WorkspaceDirer is implemented by drivers whose /workspace is a host
// directory (local driver); snapshots then read and restore it directly.
// The directory's contents are written by the sandbox, which must be taken
// for hostile: every host-side access below dir goes through a directory
// handle the kernel keeps it beneath (os.Root), never a re-resolved path.
type WorkspaceDirer interface {
	WorkspaceDir(ref Ref) (dir string, ids IDMap, err error)
}

// IDMap is how a sandbox's user namespace maps its uids and gids onto the
// host's: sandbox id n is host id HostBase+n for n < Size. The zero value
// is the identity (no user namespace). Host-side code that creates files a
// sandbox will use gives them ToHost ids; code that records ownership
// (snapshots) records FromHost ids, so versions move between drivers.
type IDMap struct {
	HostBase uint32 `json:"host_base"`
	Size     uint32 `json:"size"`
}

// OverflowID is what a sandbox sees for a host id its namespace does not
// map (the kernel's default overflowuid/overflowgid).
const OverflowID = 65534

// Identity reports whether m maps every id to itself.
func (m IDMap) Identity() bool { return m.Size == 0 }

// ToHost returns the host id of sandbox id id (OverflowID's host id, i.e.
// "nobody" in the sandbox, when id is outside the map).
func (m IDMap) ToHost(id uint32) uint32 {
	if m.Size == 0 {
		return id
	}
	if id >= m.Size {
		id = OverflowID
	}
	return m.HostBase + id
}

// FromHost returns the sandbox's view of host id id: OverflowID when the
// namespace does not map it.
func (m IDMap) FromHost(id uint32) uint32 {
	if m.Size == 0 {
		return id
	}
	if id < m.HostBase || id-m.HostBase >= m.Size {
		return OverflowID
	}
	return id - m.HostBase
}

// Volumes is the optional named-volume capability.
type Volumes interface {
	ListVolumes(ctx context.Context, ownerID string) ([]Volume, error)
	// DeleteVolume fails with errs.Conflict while a sandbox mounts it.
	DeleteVolume(ctx context.Context, ownerID, name string) error
}

// Volume is a persistent workspace reused across sandboxes.
type Volume struct {
	Name      string    `json:"name"`
	SizeBytes int64     `json:"size_bytes"` // host disk space it takes (local: its disk image's allocated blocks)
	CreatedAt time.Time `json:"created_at"`
	InUse     bool      `json:"in_use"`
}

// FilesystemSnapshotter is the optional whole-filesystem snapshot capability
// (Modal's SnapshotFilesystem). It returns a driver-specific image reference.
type FilesystemSnapshotter interface {
	SnapshotFilesystem(ctx context.Context, ref Ref) (string, error)
}

// NetListener is the optional capability to open a TCP listener inside the
// sandbox's own network namespace (local driver). The server serves the LLM
// gateway on it, so a sandbox with network "none" reaches the gateway at
// http://<addr> and nothing else. The listener stays valid until Destroy.
type NetListener interface {
	Listen(ctx context.Context, ref Ref, addr string) (net.Listener, error)
}

// WarmPool is implemented by drivers that keep started sandboxes ready
// (the local driver's TECHBOSS_WARM_POOL). A create the pool can serve at
// once is recorded in one database write, as running, instead of an
// insert as creating and an update to running around the driver's start.
type WarmPool interface {
	// TakeWarm returns a started sandbox for req at once, or false when
	// none is ready (Create then starts one). The sandbox is still the
	// pool's until KeepWarm: a server that stops before that destroys it
	// at its next start, as it does the pool's ready ones.
	TakeWarm(req CreateRequest) (Ref, bool)
	// KeepWarm makes a taken sandbox req's: from then on it outlives a
	// server restart (Recover) like a sandbox Create started.
	KeepWarm(ctx context.Context, ref Ref, req CreateRequest) error
}
