// Package modal runs sandboxes on Modal through Modal's official Go SDK
// (github.com/modal-labs/modal-client/go).
//
// A sandbox is a Modal Sandbox in one Modal App (default "techboss"): its
// image is image_base from a registry plus dockerfile_commands, its
// workdir is /workspace (a Modal Volume when volume_name is set), its S3
// bucket a CloudBucketMount, and it carries tags naming the TechBoss
// sandbox and owner so Recover finds it again after a server restart.
// Commands run through Modal's exec API with streamed stdout/stderr and
// stdin; file operations use the SDK's filesystem API; archives stream
// through tar inside the sandbox.
//
// Signals and cancellation: Modal's exec API has no kill or signal call,
// so every command is started through a tiny /bin/sh wrapper that records
// its PID in /tmp; a signal (or a cancelled context, as SIGKILL) is then
// delivered by a second exec running kill(1). Managed processes
// (sandbox.Processes, procs.go) are background execs the driver follows,
// listed by an exec reading /proc; file watching (sandbox.Watcher,
// watch.go) is an exec of a polling watcher in python3. Images therefore
// need /bin/sh, kill, head, tr, for archives tar, and for watching python3.
package modal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

var (
	_ sandbox.Driver                = (*Driver)(nil)
	_ sandbox.Files                 = (*Driver)(nil)
	_ sandbox.Archiver              = (*Driver)(nil)
	_ sandbox.FilesystemSnapshotter = (*Driver)(nil)
	_ sandbox.Volumes               = (*Driver)(nil)
)

// Tag names put on every Modal sandbox.
const (
	TagSandboxID = "techboss_sandbox_id"
	TagOwnerID   = "techboss_owner_id"
)

// Defaults for Options.
const (
	DefaultAppName     = "techboss"
	DefaultS3Secret    = "s3-bucket"
	DefaultS3MountPath = "/mnt/s3"
	DefaultLifetime    = 24 * time.Hour
	DefaultHostImage   = "alpine:3.21"
)

// ClaudeDockerfileCommands install the Claude Code CLI (the pinned version
// the server is tested with) on an Alpine image, and python3 for file
// watching (watch.go).
var ClaudeDockerfileCommands = []string{
	"RUN apk add --no-cache bash git nodejs npm ripgrep tar coreutils python3",
	"RUN npm install -g @anthropic-ai/claude-code@2.1.332",
}

// Options configures the Modal driver.
type Options struct {
	// TokenID and TokenSecret are Modal credentials. When empty the SDK
	// reads MODAL_TOKEN_ID / MODAL_TOKEN_SECRET or the profile file
	// (~/.modal.toml, or MODAL_CONFIG_PATH).
	TokenID, TokenSecret string
	// AppName is the Modal App sandboxes belong to (default "techboss").
	AppName string
	// Environment is the Modal environment ("" = the profile's default).
	Environment string
	// RegistrySecret names a Modal secret (REGISTRY_USERNAME /
	// REGISTRY_PASSWORD) used to pull image_base from a private registry.
	RegistrySecret string
	// S3Secret names the Modal secret holding AWS_ACCESS_KEY_ID /
	// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN for s3_bucket_name mounts
	// (default "s3-bucket").
	S3Secret string
	// S3MountPath is where s3_bucket_name (at s3_key_prefix) is mounted
	// (default "/mnt/s3").
	S3MountPath string
	// Secrets are further Modal secrets injected into every sandbox as
	// environment variables (e.g. "anthropic-api-key" in direct mode).
	Secrets []string
	// DefaultLifetime is the Modal timeout when a Spec has no
	// max_lifetime_s (default 24h, Modal's maximum).
	DefaultLifetime time.Duration
	// AllowedDomains, when set, turns network "none" into Modal's outbound
	// domain allowlist with these entries instead of a fully blocked
	// network, so the sandbox reaches only e.g. the server's public host
	// (TECHBOSS_PUBLIC_URL, gateway mode) or the model API (direct mode).
	AllowedDomains []string
	// HostImage and HostDockerfileCommands replace image_base "host" (the
	// local driver's host-tools fast path, and the server's default image),
	// which means nothing on Modal: defaults alpine:3.21 with
	// ClaudeDockerfileCommands, so the default sandbox can run Claude.
	HostImage              string
	HostDockerfileCommands []string
	// Getenv reads the environment for the credential check (default os.Getenv).
	Getenv func(string) string
	// Logger receives driver logs (default: discarded).
	Logger *slog.Logger
}

// Driver is a sandbox.Driver backed by Modal. Close it when done.
type Driver struct {
	opts   Options
	client *modalsdk.Client
	app    *modalsdk.App
	log    *slog.Logger

	mu      sync.Mutex
	handles map[string]*modalsdk.Sandbox // Modal sandbox ID -> handle

	// Managed processes (procs.go), by Modal sandbox ID; procCtx ends
	// with Close, procWG counts their goroutines.
	procMu     sync.Mutex
	procs      map[string]*procTable
	procCtx    context.Context
	procCancel context.CancelFunc
	procWG     sync.WaitGroup

	// Open watches (watch.go) by Modal sandbox ID; watchWG counts them,
	// and once watchClosed (Close) no new one starts.
	watchMu     sync.Mutex
	watchCount  map[string]int
	watchClosed bool
	watchWG     sync.WaitGroup

	closeOnce sync.Once
}

// ErrNoCredentials is returned by New when no Modal credentials are configured.
var ErrNoCredentials = errors.New("modal driver: MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (or a Modal profile in ~/.modal.toml) are required")

// New connects to Modal, checks the credentials and looks up (or creates)
// the App. It fails with a one-line error when credentials are missing or
// rejected.
func New(ctx context.Context, opts Options) (*Driver, error) {
	if opts.AppName == "" {
		opts.AppName = DefaultAppName
	}
	if opts.S3Secret == "" {
		opts.S3Secret = DefaultS3Secret
	}
	if opts.S3MountPath == "" {
		opts.S3MountPath = DefaultS3MountPath
	}
	if opts.DefaultLifetime <= 0 {
		opts.DefaultLifetime = DefaultLifetime
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.HostImage == "" {
		opts.HostImage = DefaultHostImage
		if opts.HostDockerfileCommands == nil {
			opts.HostDockerfileCommands = ClaudeDockerfileCommands
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if !haveCredentials(opts) {
		return nil, ErrNoCredentials
	}
	client, err := modalsdk.NewClientWithOptions(&modalsdk.ClientParams{
		TokenID: opts.TokenID, TokenSecret: opts.TokenSecret,
		Environment: opts.Environment, Logger: opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("modal driver: %s", oneLine(err))
	}
	app, err := client.Apps.FromName(ctx, opts.AppName, &modalsdk.AppFromNameParams{Environment: opts.Environment, CreateIfMissing: true})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("modal driver: look up app %q: %s", opts.AppName, oneLine(err))
	}
	procCtx, procCancel := context.WithCancel(context.Background())
	return &Driver{opts: opts, client: client, app: app, log: opts.Logger, handles: map[string]*modalsdk.Sandbox{},
		procs: map[string]*procTable{}, procCtx: procCtx, procCancel: procCancel, watchCount: map[string]int{}}, nil
}

// haveCredentials reports whether the SDK will find a token: explicit
// options, the environment, or a profile file mentioning one.
func haveCredentials(opts Options) bool {
	if opts.TokenID != "" && opts.TokenSecret != "" {
		return true
	}
	if opts.Getenv("MODAL_TOKEN_ID") != "" && opts.Getenv("MODAL_TOKEN_SECRET") != "" {
		return true
	}
	if opts.Getenv("MODAL_OAUTH_REFRESH_TOKEN") != "" {
		return true
	}
	p := opts.Getenv("MODAL_CONFIG_PATH")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return false
		}
		p = filepath.Join(home, ".modal.toml")
	}
	b, err := os.ReadFile(p)
	return err == nil && strings.Contains(string(b), "token_id")
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Close ends the driver's watches (their watchers exit) and stops
// following managed processes, then detaches every sandbox handle and
// closes the SDK client's connections. Sandboxes keep running on Modal.
// Only the first call does anything.
func (d *Driver) Close() {
	d.closeOnce.Do(d.close)
}

func (d *Driver) close() {
	d.procCancel()
	d.closeWatches()
	d.closeProcs()
	d.mu.Lock()
	hs := d.handles
	d.handles = map[string]*modalsdk.Sandbox{}
	d.mu.Unlock()
	for _, h := range hs {
		_ = h.Detach()
	}
	d.client.Close()
}

// AppID is the Modal App ID sandboxes are created in.
func (d *Driver) AppID() string { return d.app.AppID }

// ref is what a sandbox.Ref holds for this driver.
type ref struct {
	SandboxID string `json:"modal_sandbox_id"`
	ID        string `json:"id"`
}

func parseRef(r sandbox.Ref) (ref, error) {
	var x ref
	if err := json.Unmarshal([]byte(r), &x); err != nil || x.SandboxID == "" {
		return ref{}, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox not found")
	}
	return x, nil
}

// SandboxID returns the Modal sandbox ID inside a Ref made by this driver.
func SandboxID(r sandbox.Ref) (string, error) {
	x, err := parseRef(r)
	return x.SandboxID, err
}

func (d *Driver) handle(r sandbox.Ref) (*modalsdk.Sandbox, ref, error) {
	x, err := parseRef(r)
	if err != nil {
		return nil, x, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h, ok := d.handles[x.SandboxID]; ok {
		return h, x, nil
	}
	h, err := d.client.Sandboxes.FromID(context.Background(), x.SandboxID, nil)
	if err != nil {
		return nil, x, mapErr(err, "sandbox")
	}
	d.handles[x.SandboxID] = h
	return h, x, nil
}

func (d *Driver) forget(id string) {
	d.mu.Lock()
	h, ok := d.handles[id]
	delete(d.handles, id)
	d.mu.Unlock()
	if ok {
		_ = h.Detach()
	}
}

var gpuRe = regexp.MustCompile(`^(?i)(T4|L4|A10G?|L40S|A100|A100-40GB|A100-80GB|H100|H100!|H200|B200|RTX-PRO-6000|ANY)(:[1-9])?$`)

// ValidateGPU checks a Spec.GPU value: a Modal GPU type with an optional
// ":N" count, e.g. "A10G", "T4", "A100-80GB:2", "H100:8".
func ValidateGPU(gpu string) error {
	if gpu == "" || gpuRe.MatchString(gpu) {
		return nil
	}
	return errs.Field("gpu", fmt.Sprintf("unknown GPU %q: want a Modal GPU type (T4, L4, A10G, L40S, A100, A100-80GB, H100, H200, B200) with an optional :N count of 1-9", gpu))
}

// VolumeName is the Modal Volume name for an owner's volume_name: owners
// get separate namespaces (a hash of the owner ID), and the result stays
// within Modal's name rules (at most 63 characters of [A-Za-z0-9._-]).
func VolumeName(ownerID, name string) string {
	h := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:6])
	}
	if len(name) > 47 {
		name = name[:34] + "-" + h(name)
	}
	return "tb-" + h(ownerID) + "-" + name
}

var volNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ListVolumes returns nothing: the SDK cannot list Modal Volumes, and the
// Manager's own records already name every volume a sandbox created.
func (d *Driver) ListVolumes(ctx context.Context, ownerID string) ([]sandbox.Volume, error) {
	return nil, nil
}

// DeleteVolume deletes the owner's Modal Volume and its data.
func (d *Driver) DeleteVolume(ctx context.Context, ownerID, name string) error {
	if !volNameRe.MatchString(name) {
		return errs.E(errs.NotFound, "volume not found")
	}
	if err := d.client.Volumes.Delete(ctx, VolumeName(ownerID, name), &modalsdk.VolumeDeleteParams{Environment: d.opts.Environment}); err != nil {
		return mapErr(err, "delete volume "+name)
	}
	return nil
}

// Create builds the image and starts a Modal sandbox.
func (d *Driver) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Ref, error) {
	spec := req.Spec
	logf := func(format string, args ...any) {
		if req.Log != nil {
			fmt.Fprintf(req.Log, format+"\n", args...)
		}
	}
	var problems []errs.FieldError
	if spec.ImageBase == "" {
		problems = append(problems, errs.FieldError{Field: "image_base", Reason: "required"})
	}
	if err := ValidateGPU(spec.GPU); err != nil {
		problems = append(problems, errs.FieldError{Field: "gpu", Reason: err.(*errs.Error).Fields[0].Reason})
	}
	if spec.VolumeName != "" && !volNameRe.MatchString(spec.VolumeName) {
		problems = append(problems, errs.FieldError{Field: "volume_name", Reason: "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"})
	}
	if spec.CPU < 0 || spec.MemoryMB < 0 || spec.IdleTimeoutS < 0 || spec.MaxLifetimeS < 0 {
		problems = append(problems, errs.FieldError{Field: "spec", Reason: "numeric fields must not be negative"})
	}
	if err := errs.Fields(problems); err != nil {
		return "", err
	}

	var regSecret *modalsdk.Secret
	if a := req.RegistryAuth; a != nil {
		// The user's own login (registry_credential), as an ephemeral
		// secret in Modal's registry-secret shape.
		s, err := d.client.Secrets.FromMap(ctx, map[string]string{"REGISTRY_USERNAME": a.Username, "REGISTRY_PASSWORD": a.Password},
			&modalsdk.SecretFromMapParams{Environment: d.opts.Environment})
		if err != nil {
			return "", mapErr(err, "registry_credential")
		}
		regSecret = s
	} else if d.opts.RegistrySecret != "" {
		s, err := d.client.Secrets.FromName(ctx, d.opts.RegistrySecret, &modalsdk.SecretFromNameParams{Environment: d.opts.Environment})
		if err != nil {
			return "", secretErr(err, d.opts.RegistrySecret)
		}
		regSecret = s
	}
	var imgParams *modalsdk.ImageFromRegistryParams
	if regSecret != nil {
		imgParams = &modalsdk.ImageFromRegistryParams{Secret: regSecret}
	}
	base, cmds := spec.ImageBase, spec.DockerfileCommands
	if base == "host" {
		base = d.opts.HostImage
		cmds = append(append([]string(nil), d.opts.HostDockerfileCommands...), cmds...)
	}
	image := d.client.Images.FromRegistry(base, imgParams)
	if len(cmds) > 0 {
		image = image.DockerfileCommands(cmds, nil)
	}

	lifetime := d.opts.DefaultLifetime
	if spec.MaxLifetimeS > 0 {
		lifetime = time.Duration(spec.MaxLifetimeS) * time.Second
	}
	params := &modalsdk.SandboxCreateParams{
		Workdir:      "/workspace",
		Env:          maps.Clone(spec.Env),
		CPU:          spec.CPU,
		MemoryMiB:    spec.MemoryMB,
		GPU:          spec.GPU,
		Timeout:      lifetime,
		IdleTimeout:  time.Duration(spec.IdleTimeoutS) * time.Second,
		BlockNetwork: !spec.Network.Outbound(),
		Tags:         map[string]string{TagSandboxID: req.ID, TagOwnerID: req.OwnerID},
		// Modal publishes these through its tunnels (ports.go).
		EncryptedPorts: slices.Clone(spec.Ports),
	}
	if spec.MemoryMB > 0 {
		params.MemoryLimitMiB = spec.MemoryMB
	}
	if spec.Network.Mode == sandbox.NetworkAllow {
		// Modal enforces allow-lists itself: names (ports are not part of
		// Modal's lists, so a port narrows nothing here) and CIDRs.
		var domains, cidrs []string
		for _, e := range spec.Network.Allow {
			h := e
			if host, _, err := net.SplitHostPort(e); err == nil {
				h = strings.Trim(host, "[]")
			}
			if _, _, err := net.ParseCIDR(h); err == nil {
				cidrs = append(cidrs, h)
			} else if ip := net.ParseIP(h); ip != nil {
				cidrs = append(cidrs, h+map[bool]string{true: "/32", false: "/128"}[ip.To4() != nil])
			} else {
				domains = append(domains, h)
			}
		}
		// Both lists set: a nil one would leave its dimension open.
		params.OutboundDomainAllowlist = &modalsdk.Allowlist{Entries: append(domains, d.opts.AllowedDomains...)}
		params.OutboundCIDRAllowlist = &modalsdk.Allowlist{Entries: cidrs}
	}
	if params.BlockNetwork && len(d.opts.AllowedDomains) > 0 {
		params.BlockNetwork = false
		params.OutboundDomainAllowlist = &modalsdk.Allowlist{Entries: append([]string(nil), d.opts.AllowedDomains...)}
	}
	for _, name := range d.opts.Secrets {
		s, err := d.client.Secrets.FromName(ctx, name, &modalsdk.SecretFromNameParams{Environment: d.opts.Environment})
		if err != nil {
			return "", secretErr(err, name)
		}
		params.Secrets = append(params.Secrets, s)
	}
	if spec.VolumeName != "" {
		vname := VolumeName(req.OwnerID, spec.VolumeName)
		logf("modal: using volume %s", vname)
		v, err := d.client.Volumes.FromName(ctx, vname, &modalsdk.VolumeFromNameParams{Environment: d.opts.Environment, CreateIfMissing: true})
		if err != nil {
			return "", mapErr(err, "volume "+spec.VolumeName)
		}
		params.Volumes = map[string]*modalsdk.Volume{"/workspace": v}
	}
	if spec.S3BucketName != "" {
		s, err := d.client.Secrets.FromName(ctx, d.opts.S3Secret, &modalsdk.SecretFromNameParams{Environment: d.opts.Environment})
		if err != nil {
			return "", secretErr(err, d.opts.S3Secret)
		}
		mp := &modalsdk.CloudBucketMountParams{Secret: s}
		if p := strings.Trim(spec.S3KeyPrefix, "/"); p != "" {
			p += "/"
			mp.KeyPrefix = &p
		}
		m, err := d.client.CloudBucketMounts.New(spec.S3BucketName, mp)
		if err != nil {
			return "", mapErr(err, "s3 bucket mount")
		}
		params.CloudBucketMounts = map[string]*modalsdk.CloudBucketMount{d.opts.S3MountPath: m}
	}

	logf("modal: building image %s (%d dockerfile commands) and starting the sandbox", base, len(cmds))
	start := time.Now()
	sb, err := d.client.Sandboxes.Create(ctx, d.app, image, params)
	if err != nil {
		return "", mapErr(err, "create sandbox")
	}
	logf("modal: sandbox %s running after %s", sb.SandboxID, time.Since(start).Round(time.Millisecond))
	d.mu.Lock()
	d.handles[sb.SandboxID] = sb
	d.mu.Unlock()
	b, _ := json.Marshal(ref{SandboxID: sb.SandboxID, ID: req.ID})

	if spec.S3BucketName != "" && spec.InitFromS3 {
		r := sandbox.Ref(b)
		var stderr strings.Builder
		st, err := d.Exec(ctx, r, sandbox.ExecRequest{
			Argv:   []string{"sh", "-c", `cp -a "$0"/. /workspace/`, d.opts.S3MountPath},
			Stderr: &stderr,
		})
		if err == nil && st.Code != 0 {
			err = errs.E(errs.Dependency, "init_from_s3: copying s3://%s/%s failed: %s", spec.S3BucketName, spec.S3KeyPrefix, strings.TrimSpace(stderr.String()))
		}
		if err != nil {
			_ = d.Destroy(context.WithoutCancel(ctx), r)
			return "", err
		}
	}
	return sandbox.Ref(b), nil
}

// HandlesInitFromS3 reports that Create itself imports s3_bucket_name /
// s3_key_prefix into /workspace when init_from_s3 is set (from the
// CloudBucketMount, inside the sandbox), so the server-side import, which
// needs a host workspace directory, should be skipped for this driver.
func (d *Driver) HandlesInitFromS3() bool { return true }

// Destroy terminates the sandbox. Unknown or finished sandboxes are fine.
func (d *Driver) Destroy(ctx context.Context, r sandbox.Ref) error {
	x, err := parseRef(r)
	if err != nil {
		return nil
	}
	h, _, err := d.handle(r)
	if err != nil {
		return nil
	}
	defer d.forget(x.SandboxID)
	defer d.forgetProcs(x.SandboxID)
	if _, err := h.Terminate(ctx, nil); err != nil {
		if errs.KindOf(mapErr(err, "")) == errs.NotFound {
			return nil
		}
		return mapErr(err, "terminate sandbox")
	}
	return nil
}

// Recover finds the sandbox by its tags in the App and reports whether it
// still runs; a sandbox the listing does not show (Modal's V2 sandboxes
// are not always listed) is asked directly by ID.
func (d *Driver) Recover(ctx context.Context, r sandbox.Ref) (bool, error) {
	x, err := parseRef(r)
	if err != nil {
		return false, nil
	}
	seq, err := d.client.Sandboxes.List(ctx, &modalsdk.SandboxListParams{AppID: d.app.AppID, Tags: map[string]string{TagSandboxID: x.ID}})
	if err != nil {
		return false, mapErr(err, "list sandboxes")
	}
	found := false
	for sb, err := range seq {
		if err != nil {
			return false, mapErr(err, "list sandboxes")
		}
		if sb.SandboxID == x.SandboxID {
			found = true
		}
		_ = sb.Detach()
	}
	h, _, err := d.handle(r)
	if err != nil {
		return false, err
	}
	if !found {
		code, err := h.Poll(ctx, nil)
		if err != nil {
			if errs.KindOf(mapErr(err, "")) == errs.NotFound {
				d.forget(x.SandboxID)
				return false, nil
			}
			return false, mapErr(err, "poll sandbox")
		}
		found = code == nil
	}
	if !found {
		d.forget(x.SandboxID)
	}
	return found, nil
}

// SnapshotFilesystem snapshots the sandbox's filesystem into a Modal image
// and returns the image ID.
func (d *Driver) SnapshotFilesystem(ctx context.Context, r sandbox.Ref) (string, error) {
	h, _, err := d.handle(r)
	if err != nil {
		return "", err
	}
	im, err := h.SnapshotFilesystem(ctx, nil)
	if err != nil {
		return "", mapErr(err, "snapshot filesystem")
	}
	return im.ImageID, nil
}

func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
