// Package local is the embedded default sandbox driver: Linux isolation with
// bubblewrap (new PID, IPC, UTS, mount, network and cgroup namespaces, no
// capabilities), a writable overlayfs root per sandbox over a read-only
// image, /workspace bound to a volume directory, and a cgroup per sandbox
// (v1 or v2) for limits and for killing everything at Destroy.
//
// Each sandbox is one long-lived bubblewrap whose command is the agent
// (cmd/techboss-sandbox-init). Execs are requests over a Unix socket to that
// agent, which starts the command inside the running sandbox with the
// caller's pipe ends, so background processes, /tmp and the PID namespace are
// shared by all execs of a sandbox. bubblewrap runs in its own session and is
// not tied to the server's life: a sandbox outlives a server restart and
// Recover re-adopts it from the state the driver keeps under its data dir.
//
// On disk, under Options.DataDir (all private to root):
//
//	images/rootfs/<digest>/{fs,config.json}   flattened OCI images
//	images/builds/<key>/{fs,config.json}      dockerfile_commands layers
//	images/tags/<hash>                        tag -> digest (pulled once)
//	images/host-skeleton                      lower layer of "host" sandboxes
//	sandboxes/<id>/{root,upper,work,workspace,agent.sock,state.json,sandbox.log}
//	volumes/<owner>/<name>                    persistent workspaces
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/image"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
	"github.com/techbossai/techboss/internal/sandbox/local/diskimg"
	"github.com/techbossai/techboss/internal/sandbox/local/netpolicy"
	"github.com/techbossai/techboss/internal/sandbox/local/runsc"
	"github.com/techbossai/techboss/internal/sandbox/local/seccomp"
)

var (
	_ sandbox.Driver         = (*Driver)(nil)
	_ sandbox.Files          = (*Driver)(nil)
	_ sandbox.Archiver       = (*Driver)(nil)
	_ sandbox.WorkspaceDirer = (*Driver)(nil)
	_ sandbox.Volumes        = (*Driver)(nil)
	_ sandbox.NetListener    = (*Driver)(nil)
)

// ErrNoBwrap is returned by New when bubblewrap is not installed.
var ErrNoBwrap = errors.New("bubblewrap (bwrap) not found: install the bubblewrap package")

// Options configures a Driver.
type Options struct {
	// DataDir holds image caches, sandbox state and volumes. Required.
	DataDir string
	// InitBinary is the path of the static techboss-sandbox-init helper. Required.
	InitBinary string
	// Bwrap is the bubblewrap binary (default: "bwrap" from PATH).
	Bwrap string
	// Logger receives driver logs (nil: discarded).
	Logger *slog.Logger
	// Metrics registers the driver's metrics (nil: not registered).
	Metrics prometheus.Registerer
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Keychain resolves registry credentials (nil: authn.DefaultKeychain,
	// i.e. the standard docker config).
	Keychain authn.Keychain
	// CgroupRoot is the cgroup filesystem root (default /sys/fs/cgroup).
	CgroupRoot string
	// IDs maps every sandbox's uids and gids onto an unprivileged host
	// range (one range shared by all sandboxes; each sandbox has its own
	// user namespace). Default: DefaultIDs.
	IDs sandbox.IDMap
	// NetworkOperator is the operator's list of ranges sandboxes with a
	// network may reach although they are private (netpolicy).
	NetworkOperator []netpolicy.Rule
	// DNSUpstreams are the resolvers ("host:port") the sandboxes' DNS
	// proxy asks (default: the host's /etc/resolv.conf).
	DNSUpstreams []string
	// DefaultDiskMB is a sandbox's disk when its spec names none (default
	// 10240); the driver keeps DiskPool images of this size formatted
	// ahead (default 2; negative: none).
	DefaultDiskMB int
	DiskPool      int
	// RunDir holds the sandboxes' mount points (default /run/techboss).
	// bubblewrap runs as the sandbox's unprivileged root, which may not
	// traverse the private DataDir: the driver mounts everything a sandbox
	// sees under one directory it may traverse, and nothing else.
	RunDir string
	// Runtime is RuntimeBwrap (default) or RuntimeRunsc: gVisor
	// (runtime_runsc.go), with Runsc its binary (default: runsc on PATH)
	// and RunscPlatform its platform (systrap, the default, or ptrace).
	Runtime       string
	Runsc         string
	RunscPlatform string
	// WarmPool keeps this many started sandboxes ready per recently
	// created spec (warmpool.go; 0: none).
	WarmPool int
}

// DefaultIDs is the host range sandboxes' ids map to: 65,536 ids from
// 1,000,000,000, inside the range systemd leaves to containers and far
// from the ranges /etc/subuid hands to users (from 100,000).
var DefaultIDs = sandbox.IDMap{HostBase: 1_000_000_000, Size: 65536}

// Driver is the local bubblewrap driver. It is safe for concurrent use.
type Driver struct {
	opts     Options
	instance string   // short hash of DataDir, in cgroup names
	runDir   string   // RunDir/instance: the sandboxes' mount points
	private  []string // the private mounts New made (mounts.go), unmounted by Close when empty
	seccomp  []byte   // the filter bubblewrap installs in every sandbox
	disks    *diskimg.Pool
	stopPool context.CancelFunc // stops the driver's loops (disk pool, network refresh)
	poolCtx  context.Context    // cancelled by stopPool
	poolDone chan struct{}      // closed when they have returned
	// warm is the warm pool (nil: none), with its hit and miss counts.
	warm                 *warmPool
	warmHits, warmMisses prometheus.Counter
	log                  *slog.Logger
	bwrap                string
	cgMode               cgroupMode
	images               *image.Cache
	runsc                *runscRuntime // with Runtime runsc

	skelMu sync.Mutex
	skel   string

	// volMu orders DeleteVolume against sandboxes starting on a volume,
	// and guards volRefs: how many live sandboxes use each mounted volume
	// disk ("<owner>/<name>").
	volMu   sync.Mutex
	volRefs map[string]int

	mu       sync.Mutex
	sbs      map[string]*sbx
	nets     map[string]*netpolicy.Net // running sandbox networks
	starting map[string]string         // sandbox ID -> "<owner>/<volume>" while Create runs

	bg sync.WaitGroup // background work (old files of uploads being removed); Close waits

	// usernsMu guards userns: the user namespace every sandbox joins
	// (userns.go), created on first start.
	usernsMu sync.Mutex
	userns   *os.File
}

// HostBound marks the driver's sandboxes as reachable only from this
// machine (sandbox.HostBound).
func (*Driver) HostBound() {}

// Close waits for the driver's background work. Sandboxes keep running
// (a new Driver re-adopts them).
func (d *Driver) Close() error {
	d.stopPool()
	d.closeWarmPool()
	<-d.poolDone
	// Sandboxes keep their networks; only the DNS proxies (goroutines of
	// this process) stop, and a new Driver's Recover serves them again.
	d.mu.Lock()
	nets := d.nets
	d.nets = map[string]*netpolicy.Net{}
	d.mu.Unlock()
	for _, n := range nets {
		_ = n.Close()
	}
	d.bg.Wait()
	d.usernsMu.Lock()
	if d.userns != nil {
		_ = d.userns.Close()
		d.userns = nil
	}
	d.usernsMu.Unlock()
	for _, dir := range d.private {
		unmountPrivate(dir)
	}
	return nil
}

type sbx struct {
	mu        sync.Mutex // serialises Destroy against itself
	st        state
	gone      bool
	listeners []net.Listener // from Listen; closed at Destroy
	execs     atomic.Int64   // Exec calls begun (the warm pool runs one)
}

// state is what the driver persists per sandbox (state.json), so a new
// Driver can find and re-adopt the sandbox after a server restart.
type state struct {
	ID        string  `json:"id"`
	Owner     string  `json:"owner"`
	Dir       string  `json:"dir"`
	BwrapPID  int     `json:"bwrap_pid"`
	InitPID   int     `json:"init_pid"`
	InitStart uint64  `json:"init_start"`
	Cgroups   cgroups `json:"cgroups"`
	Workspace string  `json:"workspace"`
	Volume    string  `json:"volume,omitempty"` // "<owner>/<name>" when persistent
	User      string  `json:"user,omitempty"`
	// Network is the spec's network and Net its running pasta, when the
	// sandbox has one.
	Network sandbox.Network  `json:"network,omitzero"`
	Net     *netpolicy.State `json:"net,omitempty"`
	// Disk is the sandbox's disk image and its mount point (empty for
	// builds and for sandboxes from before disk limits).
	Disk    string `json:"disk,omitempty"`
	DiskDir string `json:"disk_dir,omitempty"`
	// VolumeDisk is the persistent volume's disk image (empty for volumes
	// from before disk limits, which are plain directories).
	VolumeDisk string `json:"volume_disk,omitempty"`
	// Runsc is the gVisor container, under Runtime runsc (BwrapPID is then
	// `runsc run`, InitPID gVisor's sandbox process).
	Runsc *runsc.State `json:"runsc,omitempty"`
	// IDs is the sandbox's user namespace mapping (zero: none).
	IDs sandbox.IDMap `json:"ids,omitzero"`
	// Root is the mount point of the sandbox's root (empty in state from
	// before user namespaces: Dir/root).
	Root string `json:"root,omitempty"`
	// RunDir holds Root (removed at teardown).
	RunDir  string    `json:"run_dir,omitempty"`
	Created time.Time `json:"created"`
}

func (s *state) socket() string {
	if s.Runsc != nil {
		return s.Runsc.Socket
	}
	return filepath.Join(s.Dir, "agent.sock")
}
func (s *state) merged() string {
	if s.Root != "" {
		return s.Root
	}
	return filepath.Join(s.Dir, "root")
}

// FindInitBinary looks for techboss-sandbox-init next to the running
// executable, then on PATH.
func FindInitBinary() (string, error) {
	const name = "techboss-sandbox-init"
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	// `go run ./cmd/server` from a checkout: the binary `make build` left in ./bin.
	if fi, err := os.Stat(filepath.Join("bin", name)); err == nil && !fi.IsDir() {
		return filepath.Abs(filepath.Join("bin", name))
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found next to the server, in ./bin or on PATH (run `make build`, or CGO_ENABLED=0 go build -o bin/ ./cmd/techboss-sandbox-init)", name)
	}
	return p, nil
}

// New checks the host (bubblewrap, helper binary, data dir) and returns a Driver.
func New(o Options) (*Driver, error) {
	if o.DataDir == "" {
		return nil, errors.New("local driver: DataDir is required")
	}
	if o.InitBinary == "" {
		return nil, errors.New("local driver: InitBinary (techboss-sandbox-init) is required")
	}
	if _, err := os.Stat(o.InitBinary); err != nil {
		return nil, fmt.Errorf("local driver: sandbox helper: %w", err)
	}
	if o.Bwrap == "" {
		o.Bwrap = "bwrap"
	}
	bw, err := exec.LookPath(o.Bwrap)
	if err != nil {
		return nil, ErrNoBwrap
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = "/sys/fs/cgroup"
	}
	if o.IDs.Size == 0 {
		o.IDs = DefaultIDs
	}
	if o.IDs.Size < 65536 || uint64(o.IDs.HostBase)+uint64(o.IDs.Size) > 1<<32-1 || o.IDs.HostBase < 65536 {
		return nil, fmt.Errorf("local driver: sandbox id range %d+%d: needs 65536 ids above 65535 within 32 bits", o.IDs.HostBase, o.IDs.Size)
	}
	if o.RunDir == "" {
		o.RunDir = "/run/techboss"
	}
	if o.DefaultDiskMB == 0 {
		o.DefaultDiskMB = 10240
	}
	if o.DiskPool == 0 {
		o.DiskPool = 2
	}
	abs, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("local driver: data dir: %w", err)
	}
	o.DataDir = abs
	// Private: volumes hold users' data, sandboxes their roots. Sandboxes
	// never traverse these from inside (mounts pin the paths).
	for _, sub := range []string{"sandboxes", "volumes", "team-volumes", "images"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o700); err != nil {
			return nil, fmt.Errorf("local driver: %w", err)
		}
		if err := os.Chmod(filepath.Join(abs, sub), 0o700); err != nil {
			return nil, fmt.Errorf("local driver: %w", err)
		}
	}
	// Image files are owned by the sandboxes' shifted ids, so the cache is
	// per id range.
	imgDir := filepath.Join(abs, "images", fmt.Sprintf("ids-%d", o.IDs.HostBase))
	if err := os.MkdirAll(imgDir, 0o700); err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	ids := o.IDs
	imgs, err := image.NewCache(image.Options{
		Dir: imgDir,
		ShiftIDs: func(uid, gid int) (int, int) {
			return int(ids.ToHost(uint32(uid))), int(ids.ToHost(uint32(gid)))
		},
		Keychain: o.Keychain,
		Logger:   o.Logger,
		Metrics:  o.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	sum := sha256.Sum256([]byte(abs))
	instance := hex.EncodeToString(sum[:4])
	runDir := filepath.Join(o.RunDir, instance)
	// RunDir may be traversed by all (names only); the instance's dir by
	// root and the sandboxes' root group, which bubblewrap runs as.
	if err := os.MkdirAll(o.RunDir, 0o711); err != nil {
		return nil, fmt.Errorf("local driver: run dir: %w", err)
	}
	if err := mkdirFor(runDir, o.IDs); err != nil {
		return nil, fmt.Errorf("local driver: run dir: %w", err)
	}
	// The sandboxes' roots, disks and volumes are mounted below these two:
	// neither may propagate to the host's other mount namespaces
	// (mounts.go). The whole data dir, not only its sandboxes: a rename
	// (the disk pool's images into place) fails across two mounts, and so
	// does an overlay whose upper and work dirs are on two (builds).
	var private []string
	for _, dir := range []string{runDir, abs} {
		ok, err := privateMount(dir)
		if err != nil {
			return nil, fmt.Errorf("local driver: %w", err)
		}
		if ok {
			private = append(private, dir)
		} else {
			o.Logger.Warn("mounts below the directory from before: left with the host's mount propagation", "dir", dir)
		}
	}
	// A driver that does not start takes its binds away again.
	started := false
	defer func() {
		if !started {
			for _, dir := range private {
				unmountPrivate(dir)
			}
		}
	}()
	var rs *runscRuntime
	switch o.Runtime {
	case "", RuntimeBwrap:
	case RuntimeRunsc:
		if rs, err = newRunscRuntime(o, runDir); err != nil {
			return nil, fmt.Errorf("local driver: %w", err)
		}
	default:
		return nil, fmt.Errorf("local driver: runtime %q: must be bwrap or runsc", o.Runtime)
	}
	filter, err := seccomp.Program()
	if err != nil {
		return nil, fmt.Errorf("local driver: seccomp filter: %w", err)
	}
	disks, err := diskimg.NewPool(filepath.Join(abs, "disk-pool"), int64(o.DefaultDiskMB), max(o.DiskPool, 0), o.Logger)
	if err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	poolCtx, stopPool := context.WithCancel(context.Background())
	d := &Driver{
		disks:    disks,
		stopPool: stopPool,
		poolCtx:  poolCtx,
		poolDone: make(chan struct{}),
		seccomp:  filter,
		runsc:    rs,
		instance: instance,
		runDir:   runDir,
		private:  private,
		opts:     o,
		log:      o.Logger,
		bwrap:    bw,
		cgMode:   detectCgroups(o.CgroupRoot),
		images:   imgs,
		sbs:      map[string]*sbx{},
		nets:     map[string]*netpolicy.Net{},
		volRefs:  map[string]int{},
		starting: map[string]string{},
	}
	if d.cgMode == cgroupNone {
		d.log.Warn("no usable cgroup hierarchy: sandbox limits are not enforced")
	}
	d.warmHits = prometheus.NewCounter(prometheus.CounterOpts{Name: "techboss_sandbox_warm_pool_hits_total",
		Help: "Creates that took a started sandbox from the warm pool."})
	d.warmMisses = prometheus.NewCounter(prometheus.CounterOpts{Name: "techboss_sandbox_warm_pool_misses_total",
		Help: "Creates of a poolable spec that found the warm pool empty."})
	d.destroyStaleWarm()
	if o.WarmPool > 0 {
		d.warm = &warmPool{size: o.WarmPool, ready: map[string][]sandbox.Ref{}, filling: map[string]int{}, refillDelay: warmRefillDelay}
		ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "techboss_sandbox_warm_pool_ready",
			Help: "Started sandboxes the warm pool holds ready, all specs together."}, d.warm.readyCount)
		if o.Metrics != nil {
			for _, c := range []prometheus.Collector{d.warmHits, d.warmMisses, ready} {
				if err := o.Metrics.Register(c); err != nil {
					var are prometheus.AlreadyRegisteredError
					if !errors.As(err, &are) {
						return nil, fmt.Errorf("local driver metrics: %w", err)
					}
				}
			}
		}
	}
	go func() {
		defer close(d.poolDone)
		var wg sync.WaitGroup
		wg.Go(func() { _ = disks.Run(poolCtx) })
		wg.Go(func() { d.refreshNets(poolCtx) })
		wg.Wait()
	}()
	started = true
	return d, nil
}

// minMemoryMB leaves room for the sandbox's agent next to the workload.
const minMemoryMB = 32

// checkEnv refuses names the kernel's environment format cannot carry.
func checkEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return errs.Field("env", fmt.Sprintf("invalid variable %q: names must be non-empty without '=' or NUL, values without NUL", k))
		}
	}
	return nil
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// validName reports whether s is safe as one path element.
func validName(s string) bool { return idRE.MatchString(s) && s != "." && s != ".." }

func (d *Driver) sandboxDir(id string) string {
	return filepath.Join(d.opts.DataDir, "sandboxes", id)
}

func (d *Driver) get(ref sandbox.Ref) (*sbx, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sbs[string(ref)]
	if s == nil {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox not found")
	}
	return s, nil
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Create builds or reuses the image and starts the sandbox, or takes a
// started one from the warm pool.
func (d *Driver) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Ref, error) {
	began := time.Now()
	// A pooled sandbox was started from a request with the same key, which
	// create checked.
	ref, key, ok := d.fromWarmPool(req)
	if ok {
		if err := d.KeepWarm(ctx, ref, req); err != nil {
			_ = d.Destroy(context.WithoutCancel(ctx), ref)
			return "", err
		}
		logf(req.Log, "sandbox taken from the warm pool in %d ms", time.Since(began).Milliseconds())
		return ref, nil
	}
	ref, err := d.create(ctx, req, began)
	if err == nil && key != "" {
		d.warmFill(key, req) // the next create of this spec takes one
	}
	return ref, err
}

func (d *Driver) create(ctx context.Context, req sandbox.CreateRequest, began time.Time) (sandbox.Ref, error) {
	if !validName(req.ID) {
		return "", errs.Field("id", "must be 1-100 letters, digits, '.', '_' or '-'")
	}
	if req.OwnerID == "" || !validName(req.OwnerID) {
		return "", errs.Field("owner_id", "must be a simple name")
	}
	sp := req.Spec
	if err := d.checkRunsc(req); err != nil {
		return "", err
	}
	policy, err := d.netPolicy(sp.Network)
	if err != nil {
		return "", err
	}
	if sp.GPU != "" {
		return "", errs.Field("gpu", "GPUs are not available on the local driver")
	}
	if sp.VolumeName != "" && !validName(sp.VolumeName) {
		return "", errs.Field("volume_name", "must be 1-100 letters, digits, '.', '_' or '-'")
	}
	if sp.MemoryMB < 0 || (sp.MemoryMB > 0 && sp.MemoryMB < minMemoryMB) {
		return "", errs.Field("memory_mb", fmt.Sprintf("must be at least %d (or 0 for no limit)", minMemoryMB))
	}
	if sp.PidsLimit < 0 {
		return "", errs.Field("pids_limit", "must not be negative")
	}
	if sp.CPU < 0 {
		return "", errs.Field("cpu", "must not be negative")
	}
	if err := checkEnv(sp.Env); err != nil {
		return "", err
	}
	if (sp.MemoryMB > 0 || sp.PidsLimit > 0 || sp.CPU > 0) && d.cgMode == cgroupNone {
		return "", errs.E(errs.Unavailable, "resource limits need cgroups, which this host does not offer")
	}
	for i, m := range req.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
			return "", errs.Field(fmt.Sprintf("mounts[%d]", i), "source and target must be absolute, target not /")
		}
	}
	volOwner := req.VolumeOwner
	if volOwner == "" {
		volOwner = req.OwnerID
	}
	if _, ok := d.volumeOwnerDir(volOwner); sp.VolumeName != "" && !ok {
		return "", errs.Field("volume_name", "the volume's owner is not a simple name")
	}
	if sp.VolumeName != "" {
		d.volMu.Lock()
		d.mu.Lock()
		d.starting[req.ID] = volOwner + "/" + sp.VolumeName
		d.mu.Unlock()
		d.volMu.Unlock()
		defer func() {
			d.mu.Lock()
			delete(d.starting, req.ID)
			d.mu.Unlock()
		}()
	}
	rf, err := d.resolveImage(ctx, sp, req.RegistryAuth, req.Log)
	if err != nil {
		return "", err
	}
	st, err := d.start(ctx, startRequest{
		id: req.ID, owner: req.OwnerID, volOwner: volOwner, rootfs: rf, network: policy != nil, policy: policy, spNet: sp.Network,
		volume: sp.VolumeName, env: sp.Env, mounts: req.Mounts, diskMB: sp.DiskMB,
		limits: limits{memoryMB: sp.MemoryMB, pids: sp.PidsLimit, cpu: sp.CPU},
		log:    req.Log,
	})
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	d.sbs[st.ID] = &sbx{st: st}
	d.mu.Unlock()
	logf(req.Log, "sandbox started in %d ms", time.Since(began).Milliseconds())
	d.log.Debug("sandbox started", "sandbox_id", st.ID, "init_pid", st.InitPID)
	return sandbox.Ref(st.ID), nil
}

type startRequest struct {
	id, owner string
	rootfs    image.Rootfs
	network   bool
	policy    *netpolicy.Policy // with network: what the sandbox may reach
	spNet     sandbox.Network   // the spec's network, persisted for Recover
	volume    string
	volOwner  string // the owner key the volume is stored under
	// upper, when set, is the overlay upper dir to use (and keep): builds.
	upper  string
	env    map[string]string
	mounts []sandbox.Mount
	limits limits
	// diskMB is the sandbox's disk (0: the default). Builds have none.
	diskMB int
	log    io.Writer
}

// start prepares the root, cgroups and workspace, launches bubblewrap and
// waits until the agent answers. On failure everything is undone.
func (d *Driver) start(ctx context.Context, r startRequest) (st state, err error) {
	dir := d.sandboxDir(r.id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return st, errs.E(errs.Conflict, "sandbox %s already exists", r.id)
		}
		return st, fmt.Errorf("create sandbox dir: %w", err)
	}
	st = state{ID: r.id, Owner: r.owner, Dir: dir, Created: d.opts.Now(), Cgroups: cgroups{Mode: d.cgMode},
		IDs: d.opts.IDs, RunDir: filepath.Join(d.runDir, r.id)}
	st.Root = filepath.Join(st.RunDir, "root")
	defer func() {
		if err != nil {
			if cerr := d.teardown(st); cerr != nil {
				d.log.Error("undo failed sandbox start", "sandbox_id", r.id, "err", cerr)
			}
		}
	}()

	// Everything the sandbox writes (its root's upper layer, an ephemeral
	// /workspace, /tmp) is on a disk of its own: writing past disk_mb is
	// ENOSPC inside, and the host grows by at most that.
	base := dir
	if r.upper == "" {
		if base, err = d.attachDisk(ctx, &st, r.diskMB); err != nil {
			return st, err
		}
	}
	// Writable root: overlay of the read-only image layers.
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	if r.upper != "" {
		upper = r.upper
	}
	for _, p := range []string{upper, work} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return st, fmt.Errorf("create overlay dirs: %w", err)
		}
	}
	if err := mkdirFor(st.RunDir, st.IDs); err != nil {
		return st, fmt.Errorf("create mount point: %w", err)
	}
	if err := os.Mkdir(st.Root, 0o755); err != nil {
		return st, fmt.Errorf("create mount point: %w", err)
	}
	if r.network {
		if err := os.WriteFile(filepath.Join(st.RunDir, "resolv.conf"), []byte(netpolicy.ResolvConf), 0o644); err != nil {
			return st, fmt.Errorf("resolv.conf: %w", err)
		}
	}
	// The root directory of the overlay is the upper dir's: the sandbox's
	// root owns it (a build's upper may already hold a shifted tree).
	if err := os.Lchown(upper, int(st.IDs.ToHost(0)), int(st.IDs.ToHost(0))); err != nil {
		return st, fmt.Errorf("create overlay dirs: %w", err)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(r.rootfs.Layers, ":"), upper, work)
	if err := unix.Mount("overlay", st.merged(), "overlay", 0, opts); err != nil {
		return st, fmt.Errorf("mount overlay root: %w", err)
	}

	// Workspace: a persistent volume (a disk of its own) or an ephemeral
	// dir on the sandbox's disk.
	if r.volume != "" {
		st.Volume = r.volOwner + "/" + r.volume
		st.Workspace, st.VolumeDisk, err = d.acquireVolume(ctx, r.volOwner, r.volume, r.diskMB)
		if err != nil {
			st.Volume = "" // nothing to release
			return st, err
		}
	} else {
		st.Workspace = filepath.Join(base, "workspace")
	}
	_, statErr := os.Stat(st.Workspace)
	if err := os.MkdirAll(st.Workspace, 0o755); err != nil {
		return st, fmt.Errorf("create workspace: %w", err)
	}
	st.User = r.rootfs.Config.User
	if err := checkMountTargets(st.merged(), r); err != nil {
		return st, err
	}
	root, err := os.OpenRoot(st.merged())
	if err != nil {
		return st, fmt.Errorf("open sandbox root: %w", err)
	}
	defer root.Close()
	if statErr != nil {
		// A new workspace belongs to the image's user, so it can write there.
		if owner := sandboxOwner(root, &st); owner != nil {
			if err := os.Chown(st.Workspace, owner[0], owner[1]); err != nil {
				return st, fmt.Errorf("create workspace: %w", err)
			}
		}
	} else if err := shiftWorkspace(st.Workspace, st.IDs); err != nil {
		return st, err
	}
	// Everything the sandbox sees beyond its root is mounted into the root
	// here, by the host, so bubblewrap (unprivileged on the host) needs no
	// path but the root's.
	if err := bindInto(root, st.merged(), st.Workspace, "/workspace", false); err != nil {
		return st, err
	}
	for _, m := range r.mounts {
		if err := bindInto(root, st.merged(), m.Source, m.Target, m.ReadOnly); err != nil {
			return st, err
		}
	}
	if st.DiskDir != "" {
		tmp := filepath.Join(base, "tmp")
		if err := os.Mkdir(tmp, 0o777); err != nil {
			return st, fmt.Errorf("create /tmp: %w", err)
		}
		if err := os.Chmod(tmp, 0o1777); err != nil {
			return st, fmt.Errorf("create /tmp: %w", err)
		}
		if err := os.Lchown(tmp, int(st.IDs.ToHost(0)), int(st.IDs.ToHost(0))); err != nil {
			return st, fmt.Errorf("create /tmp: %w", err)
		}
		if err := bindInto(root, st.merged(), tmp, "/tmp", false); err != nil {
			return st, err
		}
	}

	if d.cgMode != cgroupNone {
		// The group name carries the data dir's hash: two drivers (say,
		// two test processes) may use the same sandbox ID.
		st.Cgroups, err = newCgroups(d.opts.CgroupRoot, d.cgMode, r.id+"."+d.instance, r.limits)
		if err != nil {
			return st, err
		}
	}

	// The base environment (which may hold secrets) goes to the agent
	// through a pipe and lives only in its memory: never on disk, never on
	// a command line.
	if err := d.launch(ctx, &st, r, mergeEnv(r.rootfs.Config.Env, r.env)); err != nil {
		return st, err
	}
	if d.runsc == nil && slices.Contains(d.private, d.runDir) {
		if err := detachRoot(&st); err != nil {
			return st, err
		}
	}
	if r.network && st.Net == nil {
		n, err := netpolicy.Start(ctx, netpolicy.Options{
			NetNS: netpolicy.NetNSPath(st.InitPID), UserNS: userNSPath(st.InitPID), Policy: *r.policy, StateDir: st.Dir, Upstreams: d.opts.DNSUpstreams,
			Logger: d.log.With("sandbox_id", st.ID),
		})
		if err != nil {
			return st, fmt.Errorf("sandbox network: %w", err)
		}
		ns := n.State()
		st.Net, st.Network = &ns, r.spNet
		d.mu.Lock()
		d.nets[st.ID] = n
		d.mu.Unlock()
	}
	if err := writeState(st); err != nil {
		return st, err
	}
	return st, nil
}

// launch starts bubblewrap in its own session, in the driver's user
// namespace and the sandbox's cgroups, and waits for the agent's first
// answer.
func (d *Driver) launch(ctx context.Context, st *state, r startRequest, env []string) error {
	if d.runsc != nil {
		return d.launchRunsc(ctx, st, r, env)
	}
	ln, err := listenUnix(st.socket())
	if err != nil {
		return err
	}
	lnFile, err := ln.File()
	_ = ln.Close() // the socket file stays: SetUnlinkOnClose(false)
	if err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	defer lnFile.Close()
	agentBin, err := os.Open(d.opts.InitBinary)
	if err != nil {
		return fmt.Errorf("open sandbox helper: %w", err)
	}
	defer agentBin.Close()
	infoR, infoW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("info pipe: %w", err)
	}
	defer infoR.Close()
	envR, envW, err := os.Pipe()
	if err != nil {
		infoW.Close()
		return fmt.Errorf("env pipe: %w", err)
	}
	defer envW.Close()
	setPipeSize(envW)
	logFile, err := os.OpenFile(filepath.Join(st.Dir, "sandbox.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		infoW.Close()
		envR.Close()
		return fmt.Errorf("sandbox log: %w", err)
	}
	defer logFile.Close()

	userns, err := d.userNS()
	if err != nil {
		infoW.Close()
		envR.Close()
		return err
	}
	blockR, blockW, err := os.Pipe()
	if err != nil {
		infoW.Close()
		envR.Close()
		return fmt.Errorf("block pipe: %w", err)
	}
	defer blockW.Close()
	// bubblewrap reads the filter to its end: a pipe of its own per start.
	filterR, filterW, err := os.Pipe()
	if err != nil {
		infoW.Close()
		envR.Close()
		blockR.Close()
		return fmt.Errorf("seccomp pipe: %w", err)
	}
	setPipeSize(filterW)
	_, err = filterW.Write(d.seccomp)
	filterW.Close()
	defer filterR.Close()
	if err != nil {
		infoW.Close()
		envR.Close()
		blockR.Close()
		return fmt.Errorf("seccomp pipe: %w", err)
	}

	args := []string{d.bwrap, "--userns", "9"}
	args = append(args, d.bwrapArgs(st, r)...)
	args = append(args, "--seccomp", "8", "--info-fd", "5", "--block-fd", "7", "--", "/proc/self/fd/4", "agent")
	// bubblewrap runs as the host uid of the sandbox's root and joins the
	// driver's user namespace (userns.go), whose owner that uid is: it
	// holds no capability on the host, and whatever escapes it is nobody
	// there. A plain fork (no namespace flags: Go vforks). Own session: the
	// sandbox must not receive the server's terminal signals nor die with
	// it.
	hostRoot := st.IDs.ToHost(0)
	sys := &syscall.SysProcAttr{
		Setsid:     true,
		Credential: &syscall.Credential{Uid: hostRoot, Gid: hostRoot, Groups: []uint32{}},
	}
	if st.Cgroups.Mode == cgroupV2 && len(st.Cgroups.Dirs) == 1 {
		// cgroup2 places the child at clone time (CLONE_INTO_CGROUP).
		cgDir, err := os.Open(st.Cgroups.Dirs[0])
		if err != nil {
			infoW.Close()
			envR.Close()
			blockR.Close()
			return fmt.Errorf("open cgroup: %w", err)
		}
		defer cgDir.Close()
		sys.UseCgroupFD, sys.CgroupFD = true, int(cgDir.Fd())
	}
	p, err := os.StartProcess(d.bwrap, args, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []*os.File{nil, logFile, logFile, lnFile, agentBin, infoW, envR, blockR, filterR, userns},
		Sys:   sys,
	})
	infoW.Close()
	envR.Close()
	blockR.Close()
	if err != nil {
		return fmt.Errorf("start bubblewrap: %w", err)
	}
	st.BwrapPID = p.Pid
	// The process is reaped in Destroy (wait4) or by whoever inherits it
	// after a restart; no goroutine waits on it.
	_ = p.Release()

	var info struct {
		ChildPID int `json:"child-pid"`
	}
	dec := json.NewDecoder(infoR)
	if err := dec.Decode(&info); err != nil || info.ChildPID == 0 {
		b, _ := os.ReadFile(filepath.Join(st.Dir, "sandbox.log"))
		return fmt.Errorf("bubblewrap did not start: %s", strings.TrimSpace(string(b)))
	}
	st.InitPID = info.ChildPID
	// cgroup v1 cannot place a child at clone time, and bubblewrap, an
	// unprivileged process, may not write the host's cgroup files: the
	// driver moves both of its processes while the sandbox's waits on the
	// block fd (before it runs anything of the sandbox's), then lets it go.
	if st.Cgroups.Mode != cgroupV2 {
		for _, pid := range []int{st.BwrapPID, st.InitPID} {
			b := []byte(strconv.Itoa(pid))
			for _, f := range st.Cgroups.procsFiles() {
				if err := os.WriteFile(f, b, 0); err != nil {
					return fmt.Errorf("join cgroup: %w", err)
				}
			}
		}
	}
	if _, err := blockW.Write([]byte{1}); err != nil {
		return fmt.Errorf("release sandbox: %w", err)
	}
	blockW.Close()
	// Written before waiting for bwrap: the pipe holds 1 MiB, and the agent
	// drains it first thing. EPIPE here means the sandbox died; the info
	// read below reports why.
	if b, err := json.Marshal(agent.Init{Env: env}); err == nil {
		_, _ = envW.Write(b)
	}
	envW.Close()

	st.InitStart, err = procStart(info.ChildPID)
	if err != nil {
		return fmt.Errorf("sandbox init: %w", err)
	}
	if _, err := d.ping(ctx, st); err != nil {
		b, _ := os.ReadFile(filepath.Join(st.Dir, "sandbox.log"))
		return fmt.Errorf("sandbox agent did not answer: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

func (d *Driver) bwrapArgs(st *state, r startRequest) []string {
	a := []string{
		"--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
	}
	// No user namespace: bubblewrap run by root maps only uid 0 into one,
	// which would make image USERs unusable. The sandbox's uid 0 has no
	// capabilities instead (the agent empties every set before any exec).
	// A network namespace of its own in every mode: with a network,
	// pasta gives it outbound connectivity under netpolicy's rules.
	a = append(a, "--unshare-net")
	a = append(a,
		"--cap-drop", "ALL",
		// Only the agent holds these, to switch users; it empties the
		// bounding set so nothing it starts can have any capability.
		"--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
		"--hostname", "sandbox",
		"--bind", st.merged(), "/",
	)
	if r.rootfs.Host {
		a = append(a, "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc")
		for _, dir := range hostLibDirs() {
			a = append(a, "--ro-bind", dir, dir)
		}
		// The sandbox's uid 0 owns host root's files: hide the host's
		// secrets in /etc it would otherwise read through the binding.
		keys, _ := filepath.Glob("/etc/ssh/ssh_host_*")
		for _, f := range append(keys, hostSecretFiles...) {
			if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() {
				a = append(a, "--ro-bind", "/dev/null", f)
			}
		}
		for _, dir := range hostSecretDirs {
			if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
				a = append(a, "--tmpfs", dir, "--remount-ro", dir)
			}
		}
	}
	if r.network {
		// The resolver is the server's DNS proxy on the sandbox's loopback.
		a = append(a, "--ro-bind", filepath.Join(st.RunDir, "resolv.conf"), "/etc/resolv.conf")
	}
	a = append(a,
		"--proc", "/proc",
		"--dev", "/dev",
	)
	if st.DiskDir == "" {
		a = append(a, "--perms", "1777", "--tmpfs", "/tmp")
	}
	// /workspace, /tmp on the sandbox's disk and the server's mounts are
	// already in the root.
	a = append(a, "--chdir", "/", "--clearenv")
	return a
}

// Host files and directories masked in host-image sandboxes.
var (
	hostSecretFiles = []string{"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/security/opasswd"}
	hostSecretDirs  = []string{"/etc/ssl/private", "/etc/sudoers.d"}
)

// checkMountTargets refuses images with a symlink on the path of a mount
// point. bubblewrap itself fails on them ("Can't mkdir ..."); this names the
// problem, and does not depend on how bubblewrap resolves destinations.
func checkMountTargets(merged string, r startRequest) error {
	targets := []string{"/workspace", "/tmp", "/proc", "/dev"}
	if r.network && !r.rootfs.Host {
		targets = append(targets, "/etc/resolv.conf")
	}
	for _, m := range r.mounts {
		targets = append(targets, m.Target)
	}
	root, err := os.OpenRoot(merged)
	if err != nil {
		return fmt.Errorf("open sandbox root: %w", err)
	}
	defer root.Close()
	for _, t := range targets {
		p := ""
		for _, part := range strings.Split(strings.Trim(filepath.Clean(t), "/"), "/") {
			p = filepath.Join(p, part)
			fi, err := root.Lstat(p)
			if err != nil {
				break // missing: bubblewrap creates a real directory
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				return errs.Field("image_base", fmt.Sprintf("the image has a symlink at /%s, where the sandbox mounts %s", p, t))
			}
		}
	}
	return nil
}

// hostLibDirs are the host's top-level library/binary directories that are
// real directories (not merged-/usr symlinks).
func hostLibDirs() []string {
	var out []string
	for _, n := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		fi, err := os.Lstat("/" + n)
		if err == nil && fi.IsDir() {
			out = append(out, "/"+n)
		}
	}
	return out
}

func mergeEnv(base []string, extra map[string]string) []string {
	out := append([]string(nil), base...)
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = setEnv(out, k, extra[k])
	}
	if envGet(out, "PATH") == "" {
		out = setEnv(out, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return out
}

func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if key, _, ok := strings.Cut(kv, "="); ok && key == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

func envGet(env []string, k string) string {
	for _, kv := range env {
		if key, v, ok := strings.Cut(kv, "="); ok && key == k {
			return v
		}
	}
	return ""
}

func writeState(st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sandbox state: %w", err)
	}
	tmp := filepath.Join(st.Dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write sandbox state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(st.Dir, "state.json")); err != nil {
		return fmt.Errorf("write sandbox state: %w", err)
	}
	return nil
}

func readState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decode sandbox state: %w", err)
	}
	return st, nil
}

// procStart returns a process's start time (clock ticks since boot), which
// with the PID identifies it across PID reuse.
func procStart(pid int) (uint64, error) {
	st, err := procStat(pid)
	return st.Starttime, err
}

// procStat reads /proc/PID/stat.
func procStat(pid int) (procfs.ProcStat, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
}

func procPPid(pid int) int {
	st, _ := procStat(pid)
	return st.PPID
}

// reapChild waits for our child pid to exit, killing it at the deadline.
func reapChild(pid int, deadline time.Time) {
	wait := time.Millisecond
	for {
		var ws syscall.WaitStatus
		n, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if n == pid || err != nil {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_, _ = syscall.Wait4(pid, &ws, 0, nil)
			return
		}
		time.Sleep(wait)
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}

// waitGone waits (bounded) until the sandbox's init has exited.
func waitGone(st state, deadline time.Time) {
	wait := time.Millisecond
	for st.alive() && time.Now().Before(deadline) {
		time.Sleep(wait)
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}

// alive reports whether the sandbox's init is still the process we started.
func (st *state) alive() bool {
	if st.InitPID == 0 {
		return false
	}
	start, err := procStart(st.InitPID)
	if err != nil || start != st.InitStart {
		return false
	}
	// A killed init that its parent has not reaped yet keeps its start
	// time: a zombie (Z) or dying (X) init is a dead sandbox.
	state, err := procState(st.InitPID)
	return err == nil && state != 'Z' && state != 'X'
}

// procState returns the state letter of /proc/PID/stat (R, S, D, Z, X, ...).
func procState(pid int) (byte, error) {
	st, err := procStat(pid)
	if err != nil || st.State == "" {
		return 0, fmt.Errorf("process %d: no state: %v", pid, err)
	}
	return st.State[0], nil
}

// Recover re-adopts a sandbox started by an earlier Driver (or server
// process) if its init still runs and its agent answers.
func (d *Driver) Recover(ctx context.Context, ref sandbox.Ref) (bool, error) {
	id := string(ref)
	if !validName(id) {
		return false, nil
	}
	d.mu.Lock()
	s := d.sbs[id]
	d.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		gone := s.gone
		st := s.st
		s.mu.Unlock()
		return !gone && st.alive(), nil
	}
	st, err := readState(d.sandboxDir(id))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.alive() {
		return false, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := d.ping(pctx, &st); err != nil {
		d.log.Warn("sandbox init runs but its agent does not answer", "sandbox_id", id, "err", err)
		return false, nil
	}
	if st.VolumeDisk != "" {
		d.volMu.Lock()
		d.volRefs[st.Volume]++
		d.volMu.Unlock()
	}
	if st.Net != nil {
		// The DNS proxy lived in the old server process; pasta may too.
		policy, err := d.netPolicy(st.Network)
		if err == nil {
			var n *netpolicy.Net
			n, err = netpolicy.Attach(ctx, netpolicy.Options{
				NetNS: netpolicy.NetNSPath(st.nsPID()), UserNS: userNSPath(st.nsPID()), Policy: *policy, StateDir: st.Dir, Upstreams: d.opts.DNSUpstreams,
				Logger: d.log.With("sandbox_id", st.ID),
			}, *st.Net)
			if err == nil {
				ns := n.State()
				st.Net = &ns
				d.mu.Lock()
				d.nets[id] = n
				d.mu.Unlock()
				err = writeState(st)
			}
		}
		if err != nil {
			d.log.Warn("sandbox runs but its network could not be re-attached", "sandbox_id", id, "err", err)
			return false, nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sbs[id] == nil {
		d.sbs[id] = &sbx{st: st}
	}
	return true, nil
}

// Destroy kills every process of the sandbox, unmounts its root and removes
// its cgroups and ephemeral directories. Idempotent; it also cleans up a
// sandbox this Driver never adopted if its state is on disk.
func (d *Driver) Destroy(ctx context.Context, ref sandbox.Ref) error {
	id := string(ref)
	if !validName(id) {
		return nil
	}
	d.mu.Lock()
	s := d.sbs[id]
	if s == nil {
		st, err := readState(d.sandboxDir(id))
		if err != nil {
			d.mu.Unlock()
			if errors.Is(err, os.ErrNotExist) {
				// A half-created dir without state (crash during Create).
				if _, serr := os.Stat(d.sandboxDir(id)); serr == nil {
					return d.teardown(state{ID: id, Dir: d.sandboxDir(id)})
				}
				return nil
			}
			return err
		}
		s = &sbx{st: st}
		d.sbs[id] = s
	}
	d.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return nil
	}
	// Listeners pin the sandbox's network namespace; they end with it.
	for _, l := range s.listeners {
		_ = l.Close()
	}
	s.listeners = nil
	if err := d.teardown(s.st); err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	s.gone = true
	d.mu.Lock()
	if d.sbs[id] == s {
		delete(d.sbs, id)
	}
	d.mu.Unlock()
	return nil
}

// teardown undoes start: kills processes, reaps bubblewrap if it is our
// child, unmounts the root, removes cgroups and the sandbox directory. A
// build's upper dir lives outside that directory and survives.
func (d *Driver) teardown(st state) error {
	deadline := time.Now().Add(30 * time.Second)
	var errOut error
	// Kill the sandbox's PID 1 first: the kernel then kills everything in
	// its PID namespace, and the outer bubblewrap reaps it and exits. (Had
	// the outer one died first, the inner init would be orphaned onto the
	// host's init as a zombie.)
	if st.alive() {
		_ = syscall.Kill(st.InitPID, syscall.SIGKILL)
	}
	if st.BwrapPID > 0 && procPPid(st.BwrapPID) == os.Getpid() {
		reapChild(st.BwrapPID, deadline)
	} else {
		waitGone(st, deadline)
	}
	d.mu.Lock()
	n := d.nets[st.ID]
	delete(d.nets, st.ID)
	d.mu.Unlock()
	if n != nil {
		if err := n.Destroy(); err != nil {
			errOut = errors.Join(errOut, fmt.Errorf("stop sandbox network: %w", err))
		}
	} else if st.Net != nil {
		if err := netpolicy.Stop(*st.Net); err != nil {
			errOut = errors.Join(errOut, fmt.Errorf("stop sandbox network: %w", err))
		}
	}
	// Safety net: anything left in the cgroups.
	if len(st.Cgroups.Dirs) > 0 {
		if err := st.Cgroups.killAll(deadline); err != nil {
			errOut = errors.Join(errOut, err)
		}
	}
	if err := unix.Unmount(st.merged(), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errOut = errors.Join(errOut, fmt.Errorf("unmount root: %w", err))
	}
	if st.VolumeDisk != "" && errOut == nil {
		if err := d.releaseVolume(st.Volume, st.VolumeDisk, deadline); err != nil {
			return fmt.Errorf("release volume: %w", err)
		}
	}
	if st.DiskDir != "" && errOut == nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := diskimg.Unmount(ctx, st.Disk, st.DiskDir)
		cancel()
		if errors.Is(err, diskimg.ErrStillAttached) {
			// Unmounted here; a mount namespace copied while it was
			// mounted (another sandbox starting) still pins the loop
			// device, which the kernel releases with that namespace.
			d.log.Warn("sandbox disk still attached after unmount", "sandbox_id", st.ID, "err", err)
			err = nil
		}
		if err != nil {
			// Never remove the sandbox dir under a mounted disk.
			return fmt.Errorf("unmount disk: %w", err)
		}
	}
	if err := st.Cgroups.remove(deadline); err != nil {
		errOut = errors.Join(errOut, err)
	}
	if errOut != nil {
		return errOut
	}
	if st.RunDir != "" {
		if err := os.RemoveAll(st.RunDir); err != nil {
			return fmt.Errorf("remove sandbox mount point: %w", err)
		}
	}
	if err := os.RemoveAll(st.Dir); err != nil {
		return fmt.Errorf("remove sandbox dir: %w", err)
	}
	return nil
}

// netRefresh is how often the sandboxes' rules learn the host's addresses
// (a sandbox must not reach an address the host gained after it started).
const netRefresh = 30 * time.Second

// refreshNets reloads the host's addresses into every sandbox network's
// rules until ctx is done.
func (d *Driver) refreshNets(ctx context.Context) {
	t := time.NewTicker(netRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		nets := make(map[string]*netpolicy.Net, len(d.nets))
		maps.Copy(nets, d.nets)
		d.mu.Unlock()
		for id, n := range nets {
			if err := n.RefreshHostAddrs(); err != nil {
				d.log.Warn("refresh sandbox network rules", "sandbox_id", id, "err", err)
			}
		}
	}
}
