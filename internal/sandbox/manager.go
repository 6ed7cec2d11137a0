package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/errs"
)

// Hooks let other domains act at lifecycle points without the Manager
// importing them. Both run with the sandbox's driver reachable through
// Manager.DriverFor.
type Hooks struct {
	// AfterCreate runs after the driver started the sandbox and before it is
	// marked running (state is still creating): init_from_s3, from_snapshot.
	// An error destroys the sandbox and marks it failed; a public error's
	// text becomes the failure reason and the create's answer.
	// A create taken from a driver's warm pool skips it when the spec has
	// no from_snapshot, init_from_s3 or repos (the only specs it acts on).
	AfterCreate func(ctx context.Context, sb *Sandbox) error
	// BeforeTerminate runs after terminating is persisted and before the
	// driver destroys the sandbox (final snapshot). An error is logged and
	// recorded in the reason; termination goes on.
	BeforeTerminate func(ctx context.Context, sb *Sandbox) error
}

// Deps are the Manager's dependencies.
type Deps struct {
	Repo Repo
	// Drivers by name; DefaultDriver names the one new sandboxes use.
	Drivers       map[string]Driver
	DefaultDriver string
	Limits        Limits
	Hooks         Hooks
	// Mounts are added to every CreateRequest (e.g. the Claude CLI tools dir).
	Mounts  []Mount
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: metrics are not registered
	// Now is the clock for lifecycle decisions (idle, lifetime); nil = time.Now.
	Now func() time.Time
	// Host names this server's machine (its data directory). Sandboxes of a
	// HostBound driver record it: a server on another host leaves them to
	// their own host's server while one of its replicas was seen within
	// HostTimeout, and takes them for lost after. HostTimeout 0 means this
	// process is the only server (SQLite).
	Host        string
	HostTimeout time.Duration
	// RevealSecret returns the value of an owner's stored secret (the
	// secret store); nil: specs naming a registry_credential are refused.
	RevealSecret func(ctx context.Context, ownerID, name string) (string, error)
	// Events receives the webhook events of sandboxes (nil: none are sent).
	Events EventSink
}

// HostBound is implemented by drivers whose sandboxes only the server on
// the machine that created them can reach (the local driver).
type HostBound interface{ HostBound() }

// Manager runs the lifecycle of sandboxes: create, exec, files, terminate,
// the reaper and restart reconciliation. Every method taking an ownerID
// treats another owner's sandbox exactly like a missing one.
type Manager struct {
	repo          Repo
	drivers       map[string]Driver
	defaultDriver string
	limits        Limits
	hooks         Hooks
	revealSecret  func(ctx context.Context, ownerID, name string) (string, error)
	events        EventSink
	mounts        []Mount
	log           *slog.Logger
	now           func() time.Time
	host          string
	hostTimeout   time.Duration

	createMu sync.Mutex // serialises the quota check with the insert

	mu       sync.Mutex
	activity map[string]time.Time // activity not yet flushed to the repo
	busy     map[string]int       // in-progress execs and agent runs
	logs     map[string]*BuildLog
	locks    map[string]*keyLock
	checked  map[string]time.Time // last liveness check per running sandbox
	creating map[string]*createOp // creates in progress on this server
	// failedLogs lists failed creates whose build log is kept, oldest first.
	failedLogs []string
	// watches are the shared file watches (watchring.go).
	watches watchRings

	m metrics
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

type metrics struct {
	create *prometheus.HistogramVec
	exec   *prometheus.HistogramVec
	reaped *prometheus.CounterVec
}

// NewManager checks deps and returns a Manager. Call Reconcile once at
// start, then run Run for the reaper.
func NewManager(d Deps) (*Manager, error) {
	if d.Repo == nil {
		return nil, errors.New("sandbox manager: no repo")
	}
	if _, ok := d.Drivers[d.DefaultDriver]; !ok {
		return nil, fmt.Errorf("sandbox manager: default driver %q is not configured", d.DefaultDriver)
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Limits.ReapInterval <= 0 {
		d.Limits.ReapInterval = DefaultLimits().ReapInterval
	}
	if d.Limits.LivenessInterval <= 0 {
		d.Limits.LivenessInterval = DefaultLimits().LivenessInterval
	}
	if d.Limits.CreateTimeout <= 0 {
		d.Limits.CreateTimeout = DefaultLimits().CreateTimeout
	}
	if d.Events == nil {
		d.Events = noEvents{}
	}
	m := &Manager{
		events:        d.Events,
		repo:          d.Repo,
		drivers:       d.Drivers,
		defaultDriver: d.DefaultDriver,
		limits:        d.Limits,
		hooks:         d.Hooks,
		revealSecret:  d.RevealSecret,
		mounts:        d.Mounts,
		log:           d.Logger,
		now:           d.Now,
		host:          d.Host,
		hostTimeout:   d.HostTimeout,
		activity:      map[string]time.Time{},
		busy:          map[string]int{},
		logs:          map[string]*BuildLog{},
		checked:       map[string]time.Time{},
		creating:      map[string]*createOp{},
		locks:         map[string]*keyLock{},
	}
	m.m = metrics{
		create: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "techboss_sandbox_create_duration_seconds",
			Help:    "Time to create a sandbox (image, build, start, hooks).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600},
		}, []string{"driver", "result"}),
		exec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "techboss_sandbox_exec_duration_seconds",
			Help:    "Duration of sandbox execs.",
			Buckets: []float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120, 600, 3600},
		}, []string{"driver"}),
		reaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_sandbox_reaped_total",
			Help: "Sandboxes terminated (or found lost) by the reaper, by reason.",
		}, []string{"reason"}),
	}
	if d.Metrics != nil {
		for _, c := range []prometheus.Collector{m.m.create, m.m.exec, m.m.reaped, stateCollector{m}} {
			if err := d.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("sandbox manager: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Limits returns the limits the Manager enforces.
func (m *Manager) Limits() Limits { return m.limits }

// Capabilities names the optional capabilities of the driver running sb
// (files, archive, workspace_dir, volumes, filesystem_snapshot, net_listener,
// ports, pty, processes, watch).
func (m *Manager) Capabilities(sb *Sandbox) []string {
	d, ok := m.drivers[sb.Driver]
	if !ok {
		return []string{}
	}
	caps := []string{}
	if _, ok := d.(Files); ok {
		caps = append(caps, "files")
	}
	if _, ok := d.(Archiver); ok {
		caps = append(caps, "archive")
	}
	if _, ok := d.(WorkspaceDirer); ok {
		caps = append(caps, "workspace_dir")
	}
	if _, ok := d.(Volumes); ok {
		caps = append(caps, "volumes")
	}
	if _, ok := d.(FilesystemSnapshotter); ok {
		caps = append(caps, "filesystem_snapshot")
	}
	if _, ok := d.(NetListener); ok {
		caps = append(caps, "net_listener")
	}
	if _, ok := d.(Ports); ok {
		caps = append(caps, "ports")
	}
	if _, ok := d.(Terminals); ok {
		caps = append(caps, "pty")
	}
	if _, ok := d.(Processes); ok {
		caps = append(caps, "processes")
	}
	if _, ok := d.(Watcher); ok {
		caps = append(caps, "watch")
	}
	return caps
}

// elsewhere reports whether sb belongs to a live server on another host
// (see Deps.Host); this server must not drive it.
func (m *Manager) elsewhere(ctx context.Context, sb *Sandbox) (bool, error) {
	if sb.Host == "" || sb.Host == m.host || m.hostTimeout <= 0 {
		return false, nil
	}
	return m.repo.HostAlive(ctx, sb.Host, m.now().Add(-m.hostTimeout))
}

// errElsewhere is the answer for a sandbox that another host's server runs.
func errElsewhere(sb *Sandbox) error {
	return errs.E(errs.Conflict, "sandbox %s runs on another server (host %s); its %s driver is reachable only from there", sb.ID, sb.Host, sb.Driver)
}

// DriverFor returns the driver running sb.
func (m *Manager) DriverFor(sb *Sandbox) (Driver, error) {
	d, ok := m.drivers[sb.Driver]
	if !ok {
		return nil, errs.E(errs.Unavailable, "sandbox driver %q is not configured on this server", sb.Driver)
	}
	return d, nil
}

var errSandboxNotFound = errs.E(errs.NotFound, "sandbox not found")

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "sb_" + hex.EncodeToString(b[:])
}

// redacted returns the spec as persisted: env values are secrets as far as
// we know, so only their names are stored. Drivers receive the real spec.
func redacted(s Spec) Spec {
	if len(s.Env) == 0 {
		return s
	}
	env := make(map[string]string, len(s.Env))
	for k := range s.Env {
		env[k] = "***"
	}
	s.Env = env
	return s
}

// Create validates spec, persists the sandbox as creating, starts it on the
// default driver, runs the AfterCreate hook, and persists running (or
// failed with the reason). It returns once the sandbox accepts execs. The
// create goes on if ctx is cancelled, so the record always settles.
func (m *Manager) Create(ctx context.Context, ownerID string, spec Spec) (*Sandbox, error) {
	if err := spec.Validate(m.limits); err != nil {
		return nil, err
	}
	if (spec.FromSnapshot != "" || spec.InitFromS3) && m.hooks.AfterCreate == nil {
		f := "from_snapshot"
		if spec.InitFromS3 {
			f = "init_from_s3"
		}
		return nil, errs.Field(f, "storage is not configured on this server")
	}
	regAuth, err := m.registryAuth(ctx, ownerID, spec.RegistryCredential)
	if err != nil {
		return nil, err
	}
	spec = spec.WithDefaults(m.limits)
	drvName := m.defaultDriver
	drv := m.drivers[drvName]
	now := m.now()
	sb := &Sandbox{
		ID: newID(), OwnerID: ownerID, TeamID: spec.Team, Spec: redacted(spec), State: Creating, Driver: drvName,
		CreatedAt: now, UpdatedAt: now, LastActiveAt: now,
	}
	if _, ok := drv.(HostBound); ok {
		sb.Host = m.host
	}
	volOwner := VolumeOwner(ownerID, spec.Team)
	req := CreateRequest{ID: sb.ID, OwnerID: ownerID, Spec: spec, Mounts: m.mounts, RegistryAuth: regAuth, VolumeOwner: volOwner}
	var take func() (Ref, bool)
	unlock := func() {}
	wp, pooled := drv.(WarmPool)
	if pooled && spec.VolumeName == "" && !m.needsAfterCreate(spec) {
		take = func() (Ref, bool) { return wp.TakeWarm(req) }
		// A terminate of a record inserted as running (it may be listed
		// already) waits until keepWarm made the sandbox the owner's.
		unlock = m.lock(sb.ID)
	}
	start := time.Now()
	err = m.insertWithinQuota(ctx, sb, take)
	if err != nil || sb.State != Running {
		unlock()
	} else {
		defer unlock()
	}
	if err != nil {
		return nil, err
	}
	log := m.log.With("sandbox_id", sb.ID, "driver", drvName)
	blog := newBuildLog()
	m.mu.Lock()
	m.logs[sb.ID] = blog
	m.mu.Unlock()
	defer blog.close()
	if sb.State == Running {
		return m.keepWarm(ctx, wp, drv, sb, req, blog, log, start)
	}

	// Settle the record even if the client goes away; only Terminate (or
	// the create timeout) cancels a create.
	base, cancelCreate := context.WithCancelCause(context.WithoutCancel(ctx))
	cctx, cancel := context.WithTimeout(base, m.limits.CreateTimeout)
	op := &createOp{cancel: cancelCreate, done: make(chan struct{})}
	m.mu.Lock()
	m.creating[sb.ID] = op
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.creating, sb.ID)
		m.mu.Unlock()
		close(op.done) // after the record settled: Terminate reads it next
		cancel()
		cancelCreate(nil)
	}()
	if spec.VolumeName != "" {
		if err := m.repo.EnsureVolume(cctx, VolumeRecord{OwnerID: volOwner, Name: spec.VolumeName, Driver: drvName, CreatedAt: now}); err != nil {
			return nil, m.fail(cctx, sb, fmt.Errorf("record volume: %w", err), blog, log, time.Now())
		}
	}
	start = time.Now()
	fmt.Fprintf(blog, "creating sandbox %s on driver %s (image %s)\n", sb.ID, drvName, spec.ImageBase)
	req.Log = blog
	ref, err := drv.Create(cctx, req)
	if err != nil {
		return nil, m.fail(cctx, sb, fmt.Errorf("driver create: %w", err), blog, log, start)
	}
	sb.Ref = ref
	if m.hooks.AfterCreate != nil {
		if err := m.hooks.AfterCreate(WithProgress(cctx, blog), sb); err != nil {
			if derr := drv.Destroy(context.WithoutCancel(cctx), ref); derr != nil {
				log.Error("destroy after failed create hook", "err", derr)
			}
			return nil, m.fail(cctx, sb, fmt.Errorf("after create: %w", err), blog, log, start)
		}
	}
	if context.Cause(cctx) != nil {
		// Terminated (or timed out) after the driver finished: undo it.
		if derr := drv.Destroy(context.WithoutCancel(cctx), ref); derr != nil {
			log.Error("destroy after cancelled create", "err", derr)
		}
		return nil, m.fail(cctx, sb, context.Cause(cctx), blog, log, start)
	}
	sb.State = Running
	sb.UpdatedAt = m.now()
	sb.LastActiveAt = sb.UpdatedAt
	if err := m.repo.UpdateSandbox(cctx, sb); err != nil {
		// The sandbox runs but we could not record it: do not leak it.
		if derr := drv.Destroy(context.WithoutCancel(cctx), ref); derr != nil {
			log.Error("destroy after failed persist", "err", derr)
		}
		return nil, m.fail(cctx, sb, fmt.Errorf("persist running: %w", err), blog, log, start)
	}
	d := time.Since(start)
	m.m.create.WithLabelValues(drvName, "ok").Observe(d.Seconds())
	fmt.Fprintf(blog, "sandbox running after %s\n", d.Round(time.Millisecond))
	log.Info("sandbox created", "duration_ms", d.Milliseconds())
	return sb, nil
}

// needsAfterCreate reports whether the AfterCreate hook has work for spec.
func (m *Manager) needsAfterCreate(spec Spec) bool {
	return m.hooks.AfterCreate != nil && (spec.FromSnapshot != "" || spec.InitFromS3 || len(spec.Repos) > 0)
}

// keepWarm finishes a create that took a started sandbox from the
// driver's warm pool: its record was inserted as running (one write), and
// the driver now makes the sandbox the owner's before its ID is returned.
func (m *Manager) keepWarm(ctx context.Context, wp WarmPool, drv Driver, sb *Sandbox, req CreateRequest, blog *BuildLog, log *slog.Logger, start time.Time) (*Sandbox, error) {
	fmt.Fprintf(blog, "sandbox %s taken from the warm pool of driver %s (image %s)\n", sb.ID, sb.Driver, req.Spec.ImageBase)
	if err := wp.KeepWarm(context.WithoutCancel(ctx), sb.Ref, req); err != nil {
		if derr := drv.Destroy(context.WithoutCancel(ctx), sb.Ref); derr != nil {
			log.Error("destroy after failed keep", "err", derr)
		}
		return nil, m.fail(context.WithoutCancel(ctx), sb, fmt.Errorf("keep the pooled sandbox: %w", err), blog, log, start)
	}
	d := time.Since(start)
	m.m.create.WithLabelValues(sb.Driver, "ok").Observe(d.Seconds())
	log.Info("sandbox created", "duration_ms", d.Milliseconds(), "warm_pool", true)
	return sb, nil
}

// registryAuth resolves a spec's registry_credential to the login in the
// owner's secret store (nil when the spec names none).
func (m *Manager) registryAuth(ctx context.Context, ownerID, name string) (*RegistryAuth, error) {
	if name == "" {
		return nil, nil
	}
	if m.revealSecret == nil {
		return nil, errs.Field("registry_credential", "the secret store is not configured on this server")
	}
	v, err := m.revealSecret(ctx, ownerID, name)
	if errs.KindOf(err) == errs.NotFound {
		return nil, errs.Field("registry_credential", fmt.Sprintf("no secret named %q (store it with POST /secrets)", name))
	}
	if err != nil {
		return nil, err
	}
	a, ok := ParseRegistryAuth(v)
	if !ok {
		return nil, errs.Field("registry_credential", fmt.Sprintf("secret %q must hold username:password or {\"username\": ..., \"password\": ...}", name))
	}
	return a, nil
}

// ParseRegistryAuth reads a registry login from a secret's value:
// "username:password" or a JSON object with username and password.
func ParseRegistryAuth(v string) (*RegistryAuth, bool) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "{") {
		var a struct{ Username, Password string }
		if json.Unmarshal([]byte(v), &a) != nil || a.Username == "" || a.Password == "" {
			return nil, false
		}
		return &RegistryAuth{Username: a.Username, Password: a.Password}, true
	}
	u, p, ok := strings.Cut(v, ":")
	if !ok || u == "" || p == "" || strings.ContainsAny(u, "\n\r") {
		return nil, false
	}
	return &RegistryAuth{Username: u, Password: p}, true
}

// fail records a failed create and returns the error for the caller: a
// public error as is (it names the bad field), anything else wrapped.
func (m *Manager) fail(ctx context.Context, sb *Sandbox, cause error, blog *BuildLog, log *slog.Logger, start time.Time) error {
	m.m.create.WithLabelValues(sb.Driver, "error").Observe(time.Since(start).Seconds())
	switch c := context.Cause(ctx); {
	case c == nil:
	case errors.Is(c, errCreateCancelled):
		cause = errCreateCancelled
	case errors.Is(c, context.DeadlineExceeded):
		cause = errs.Wrap(errs.Unavailable, cause, fmt.Sprintf("create did not finish within %s", m.limits.CreateTimeout))
	}
	// A driver writing on the host (images, disk images, state) meets a
	// full data dir as ENOSPC: 507 naming it, here and in the reason.
	cause = errs.Full(cause, "the server's data dir")
	// Persist even when ctx was cancelled: the record must settle.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	reason := "create failed (see the server log)"
	if pe, ok := errs.Public(cause); ok {
		reason = pe.Message
	}
	fmt.Fprintf(blog, "create failed: %s\n", reason)
	log.Warn("sandbox create failed", "err", cause)
	m.keepFailedLog(sb.ID)
	sb.State = Failed
	sb.Reason = reason
	sb.UpdatedAt = m.now()
	t := sb.UpdatedAt
	sb.TerminatedAt = &t
	if err := m.repo.UpdateSandbox(ctx, sb); err != nil {
		log.Error("persist failed state", "err", err)
	}
	m.events.Emit(ctx, sb.OwnerID, "sandbox.failed", FailedEvent{SandboxID: sb.ID, Reason: reason})
	if _, ok := errs.Public(cause); ok {
		return cause
	}
	return fmt.Errorf("create sandbox %s: %w", sb.ID, cause)
}

// createOp is a create in progress on this server, so Terminate can cancel it.
type createOp struct {
	cancel context.CancelCauseFunc
	done   chan struct{} // closed once the create's record settled
}

var errCreateCancelled = errs.E(errs.Conflict, "sandbox was terminated while creating")

// maxFailedLogs bounds the build logs kept for failed creates (they are
// what tells the user why); older ones are dropped.
const maxFailedLogs = 64

func (m *Manager) keepFailedLog(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failedLogs = append(m.failedLogs, id)
	for len(m.failedLogs) > maxFailedLogs {
		delete(m.logs, m.failedLogs[0])
		m.failedLogs = m.failedLogs[1:]
	}
}

// insertWithinQuota inserts sb unless its owner is at the quota. take,
// when not nil, is asked for a started sandbox after the quota check: if
// it gives one, sb is inserted as running with it (a failed insert
// destroys it).
func (m *Manager) insertWithinQuota(ctx context.Context, sb *Sandbox, take func() (Ref, bool)) error {
	m.createMu.Lock()
	defer m.createMu.Unlock()
	if max := m.limits.MaxRunningPerUser; max > 0 {
		active, err := m.repo.CountSandboxes(ctx, ListFilter{OwnerID: sb.OwnerID, States: []State{Creating, Running}})
		if err != nil {
			return fmt.Errorf("count sandboxes: %w", err)
		}
		if active >= max {
			e := errs.E(errs.TooMany, "sandbox quota reached: you already have %d running sandboxes (the maximum is %d); terminate one with DELETE /sandbox/{id} first", active, max)
			e.RetryAfter = 60
			return e
		}
	}
	if take != nil {
		if ref, ok := take(); ok {
			sb.Ref, sb.State = ref, Running
		}
	}
	if err := m.repo.CreateSandbox(ctx, sb); err != nil {
		if sb.Ref != "" {
			if derr := m.drivers[sb.Driver].Destroy(context.WithoutCancel(ctx), sb.Ref); derr != nil {
				m.log.Error("destroy a pooled sandbox after a failed insert", "sandbox_id", sb.ID, "err", derr)
			}
		}
		return fmt.Errorf("persist sandbox: %w", err)
	}
	return nil
}

// Get returns the owner's sandbox, or errs.NotFound.
func (m *Manager) Get(ctx context.Context, ownerID, id string) (*Sandbox, error) {
	sb, err := m.repo.GetSandbox(ctx, id)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, errSandboxNotFound
		}
		return nil, fmt.Errorf("get sandbox: %w", err)
	}
	if sb.OwnerID != ownerID {
		return nil, errSandboxNotFound
	}
	return sb, nil
}

// Page limits for List.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// List returns a page of the owner's sandboxes (newest first) and the
// cursor of the next page, or nil when this is the last. With f.TeamID set
// it lists that team's sandboxes instead, with f.IDs (non-nil) those
// sandboxes (the caller checked membership or shares).
func (m *Manager) List(ctx context.Context, ownerID string, f ListFilter) ([]*Sandbox, *Cursor, error) {
	f.OwnerID = ownerID
	if f.TeamID != "" || f.IDs != nil {
		f.OwnerID = ""
	}
	for _, s := range f.States {
		if !s.Valid() {
			return nil, nil, errs.Field("state", fmt.Sprintf("unknown state %q", printable(string(s))))
		}
	}
	if f.Limit <= 0 {
		f.Limit = DefaultPageSize
	}
	if f.Limit > MaxPageSize {
		return nil, nil, errs.Field("limit", fmt.Sprintf("at most %d", MaxPageSize))
	}
	want := f.Limit
	f.Limit++
	items, err := m.repo.ListSandboxes(ctx, f)
	if err != nil {
		return nil, nil, fmt.Errorf("list sandboxes: %w", err)
	}
	if len(items) <= want {
		return items, nil, nil
	}
	items = items[:want]
	last := items[want-1]
	return items, &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}, nil
}

// Running returns the owner's sandbox and its driver if it is running, or
// errs.NotFound (not the owner's) or errs.Conflict (not running). Other
// domains (runs, snapshots) use it before reaching for driver capabilities.
func (m *Manager) Running(ctx context.Context, ownerID, id string) (*Sandbox, Driver, error) {
	sb, err := m.Get(ctx, ownerID, id)
	if err != nil {
		return nil, nil, err
	}
	if sb.State != Running {
		msg := fmt.Sprintf("sandbox is %s", sb.State)
		if sb.Reason != "" {
			msg += ": " + sb.Reason
		}
		return nil, nil, errs.E(errs.Conflict, "%s", msg)
	}
	if far, err := m.elsewhere(ctx, sb); err != nil || far {
		if err == nil {
			err = errElsewhere(sb)
		}
		return nil, nil, err
	}
	drv, err := m.DriverFor(sb)
	if err != nil {
		return nil, nil, err
	}
	return sb, drv, nil
}

// Exec runs one command in the owner's running sandbox. The exec counts
// as activity for its whole duration.
func (m *Manager) Exec(ctx context.Context, ownerID, id string, req ExecRequest) (ExitStatus, error) {
	if err := CheckExec(req.Argv, req.Env, req.Dir); err != nil {
		return ExitStatus{}, err
	}
	sb, drv, err := m.Running(ctx, ownerID, id)
	if err != nil {
		return ExitStatus{}, err
	}
	release := m.MarkBusy(id)
	defer release()
	start := time.Now()
	st, err := drv.Exec(ctx, sb.Ref, req)
	m.m.exec.WithLabelValues(sb.Driver).Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			// Not-found or a dead agent: if the driver agrees the sandbox
			// is gone, it is lost rather than failing every exec forever.
			return st, m.checkLost(ctx, sb, drv, err)
		}
		return st, fmt.Errorf("exec in %s: %w", id, err)
	}
	return st, nil
}

// checkLost is called when an exec failed in a running sandbox: if the
// driver's Recover says it is gone, the sandbox becomes lost.
func (m *Manager) checkLost(ctx context.Context, sb *Sandbox, drv Driver, cause error) error {
	if _, ok := errs.Public(cause); ok && errs.KindOf(cause) != errs.NotFound {
		return cause // the driver refused the request itself (bad workdir, user...)
	}
	alive, err := drv.Recover(ctx, sb.Ref)
	if err != nil || alive {
		return fmt.Errorf("exec in %s: %w", sb.ID, cause)
	}
	m.markLost(ctx, sb, "the sandbox's processes are gone")
	// Free what the dead sandbox still holds (mounts, cgroups, directories).
	if err := drv.Destroy(context.WithoutCancel(ctx), sb.Ref); err != nil {
		m.log.Warn("destroy lost sandbox", "sandbox_id", sb.ID, "err", err)
	}
	return errs.E(errs.Conflict, "sandbox is lost: its processes are gone")
}

func (m *Manager) markLost(ctx context.Context, sb *Sandbox, reason string) {
	unlock := m.lock(sb.ID)
	defer unlock()
	sb.State = Lost
	sb.Reason = reason
	sb.UpdatedAt = m.now()
	t := sb.UpdatedAt
	sb.TerminatedAt = &t
	if err := m.repo.UpdateSandbox(context.WithoutCancel(ctx), sb); err != nil {
		m.log.Error("persist lost state", "sandbox_id", sb.ID, "err", err)
	}
	m.forget(sb.ID)
	m.log.Warn("sandbox lost", "sandbox_id", sb.ID, "reason", reason)
}

// Touch records activity on a sandbox (exec, file op, terminal input); the
// reaper persists it on its next pass.
func (m *Manager) Touch(id string) {
	now := m.now()
	m.mu.Lock()
	m.activity[id] = now
	m.mu.Unlock()
}

// MarkBusy marks the sandbox active until release is called (an agent run
// or a long exec): the reaper does not idle-reap a busy sandbox. release is
// safe to call more than once.
func (m *Manager) MarkBusy(id string) (release func()) {
	m.mu.Lock()
	m.busy[id]++
	m.activity[id] = m.now()
	m.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			if m.busy[id]--; m.busy[id] <= 0 {
				delete(m.busy, id)
			}
			m.activity[id] = m.now()
			m.mu.Unlock()
		})
	}
}

// BuildLog returns the owner's sandbox's build and start log. Logs live in
// memory: after a restart, or for another replica's sandbox, it is empty.
func (m *Manager) BuildLog(ctx context.Context, ownerID, id string) (*BuildLog, *Sandbox, error) {
	sb, err := m.Get(ctx, ownerID, id)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	l := m.logs[id]
	m.mu.Unlock()
	if l == nil {
		l = closedLog()
	}
	return l, sb, nil
}

// Terminate stops the owner's sandbox: terminating is persisted, the
// BeforeTerminate hook runs, the driver destroys it, and terminated is
// persisted. Terminating a terminal sandbox returns it unchanged.
func (m *Manager) Terminate(ctx context.Context, ownerID, id string) (*Sandbox, error) {
	sb, err := m.Get(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	if sb.State == Failed || sb.State == Lost {
		return m.dismiss(ctx, id)
	}
	return m.terminate(ctx, id, "")
}

// dismiss is a user's delete of a sandbox that failed or was lost:
// nothing of it runs any more, so its record is only marked terminated
// (keeping the reason), which takes it off the active list; its runs
// and snapshots stay readable.
func (m *Manager) dismiss(ctx context.Context, id string) (*Sandbox, error) {
	unlock := m.lock(id)
	defer unlock()
	sb, err := m.repo.GetSandbox(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get sandbox: %w", err)
	}
	if sb.State != Failed && sb.State != Lost {
		return sb, nil
	}
	now := m.now()
	sb.State = Terminated
	sb.UpdatedAt = now
	sb.TerminatedAt = &now
	if err := m.repo.UpdateSandbox(ctx, sb); err != nil {
		return nil, fmt.Errorf("persist terminated: %w", err)
	}
	m.forget(id)
	m.log.Info("sandbox deleted after it ended", "sandbox_id", id, "reason", sb.Reason)
	return sb, nil
}

func (m *Manager) terminate(ctx context.Context, id, reason string) (*Sandbox, error) {
	unlock := m.lock(id)
	defer unlock()
	// The work goes on if the client leaves: a half-terminated sandbox helps nobody.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	sb, err := m.repo.GetSandbox(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get sandbox: %w", err)
	}
	switch sb.State {
	case Terminated, Failed, Lost:
		return sb, nil
	}
	if far, err := m.elsewhere(ctx, sb); err != nil || far {
		if err == nil {
			err = errElsewhere(sb)
		}
		return nil, err
	}
	switch sb.State {
	case Creating:
		m.mu.Lock()
		op := m.creating[id]
		m.mu.Unlock()
		if op == nil {
			return nil, errs.E(errs.Conflict, "sandbox is still creating on another server; terminate it once it is running")
		}
		op.cancel(errCreateCancelled)
		select {
		case <-op.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for cancelled create %s: %w", id, ctx.Err())
		}
		return m.repo.GetSandbox(ctx, id)
	}
	log := m.log.With("sandbox_id", id)
	if sb.State == Running {
		sb.State = Terminating
		sb.Reason = reason
		sb.UpdatedAt = m.now()
		if err := m.repo.UpdateSandbox(ctx, sb); err != nil {
			return nil, fmt.Errorf("persist terminating: %w", err)
		}
	}
	drv, err := m.DriverFor(sb)
	if err != nil {
		return nil, err
	}
	if m.hooks.BeforeTerminate != nil {
		if err := m.hooks.BeforeTerminate(ctx, sb); err != nil {
			log.Error("before-terminate hook failed", "err", err)
			note := "final snapshot failed"
			if sb.Reason != "" {
				note = sb.Reason + "; " + note
			}
			sb.Reason = note
			msg := "the final snapshot before the sandbox stopped failed (the server log has the cause)"
			if e, ok := errs.Public(err); ok {
				msg = "the final snapshot before the sandbox stopped failed: " + e.Message
			}
			m.events.Emit(ctx, sb.OwnerID, "snapshot.failed", SnapshotFailedEvent{SandboxID: sb.ID, Final: true, Error: msg})
		}
	}
	if err := drv.Destroy(ctx, sb.Ref); err != nil {
		return nil, fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	now := m.now()
	sb.State = Terminated
	sb.UpdatedAt = now
	sb.TerminatedAt = &now
	if err := m.repo.UpdateSandbox(ctx, sb); err != nil {
		return nil, fmt.Errorf("persist terminated: %w", err)
	}
	m.forget(id)
	log.Info("sandbox terminated", "reason", reason)
	return sb, nil
}

// forget drops in-memory state of a finished sandbox.
func (m *Manager) forget(id string) {
	m.stopWatches(id)
	m.mu.Lock()
	delete(m.activity, id)
	delete(m.logs, id)
	delete(m.checked, id)
	m.mu.Unlock()
}

// lock serialises lifecycle transitions of one sandbox.
func (m *Manager) lock(id string) (unlock func()) {
	m.mu.Lock()
	l := m.locks[id]
	if l == nil {
		l = &keyLock{}
		m.locks[id] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(m.locks, id)
		}
		m.mu.Unlock()
	}
}

// Reap persists recorded activity, then terminates every running sandbox
// past its idle timeout (and not busy) or its maximum lifetime, and
// retries sandboxes left terminating. It returns how many it terminated.
func (m *Manager) Reap(ctx context.Context) (int, error) {
	if err := m.flushActivity(ctx); err != nil {
		return 0, err
	}
	items, err := m.repo.ListSandboxes(ctx, ListFilter{States: []State{Running, Terminating}})
	if err != nil {
		return 0, fmt.Errorf("reaper: list: %w", err)
	}
	now := m.now()
	n := 0
	var errList []error
	far := map[string]bool{} // by host, for this pass
	for _, sb := range items {
		if ctx.Err() != nil {
			break
		}
		if f, ok := far[sb.Host]; f {
			continue // its own host's server reaps it
		} else if !ok {
			f, err := m.elsewhere(ctx, sb)
			if err != nil {
				errList = append(errList, fmt.Errorf("reap %s: %w", sb.ID, err))
				continue
			}
			far[sb.Host] = f
			if f {
				continue
			}
		}
		reason := ""
		switch {
		case sb.State == Terminating:
			reason = "retry terminate"
		case now.Sub(sb.CreatedAt) >= m.lifetime(sb.Spec):
			reason = "max lifetime reached"
		case now.Sub(sb.LastActiveAt) >= m.idleTimeout(sb.Spec) && !m.isBusy(sb.ID) && !m.runsManaged(ctx, sb):
			reason = "idle timeout"
		}
		if reason == "" {
			if sb.State == Running && m.livenessDue(sb.ID, now) {
				m.checkAlive(ctx, sb)
			}
			continue
		}
		if sb.State == Terminating {
			reason = sb.Reason
		}
		if _, err := m.terminate(ctx, sb.ID, reason); err != nil {
			errList = append(errList, fmt.Errorf("reap %s: %w", sb.ID, err))
			continue
		}
		m.m.reaped.WithLabelValues(reasonLabel(reason)).Inc()
		n++
	}
	return n, errors.Join(errList...)
}

// runsManaged reports whether a managed process (started through
// StartProcess: a dev server, a watcher) runs in the sandbox: that is
// activity, so the sandbox is touched instead of idle-stopped. Asked only
// of sandboxes past their idle timeout; a driver that cannot answer says no.
func (m *Manager) runsManaged(ctx context.Context, sb *Sandbox) bool {
	p, ok := m.drivers[sb.Driver].(Processes)
	if !ok || sb.State != Running {
		return false
	}
	ps, err := p.ListProcesses(ctx, sb.Ref)
	if err != nil {
		return false
	}
	for _, pr := range ps {
		if pr.Managed && pr.State == "running" {
			m.Touch(sb.ID)
			return true
		}
	}
	return false
}

// livenessDue reports whether sandbox id's driver should be asked again
// whether it still runs (at most every Limits.LivenessInterval).
func (m *Manager) livenessDue(id string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if last, ok := m.checked[id]; ok && now.Sub(last) < m.limits.LivenessInterval {
		return false
	}
	m.checked[id] = now
	return true
}

// checkAlive marks a running sandbox lost when its driver says it is gone
// (killed behind the server's back), so its status does not lie until the
// next exec.
func (m *Manager) checkAlive(ctx context.Context, sb *Sandbox) {
	drv, ok := m.drivers[sb.Driver]
	if !ok {
		return
	}
	alive, err := drv.Recover(ctx, sb.Ref)
	if err != nil || alive {
		return
	}
	m.markLost(ctx, sb, "the sandbox's processes are gone")
	if err := drv.Destroy(ctx, sb.Ref); err != nil {
		m.log.Warn("destroy lost sandbox", "sandbox_id", sb.ID, "err", err)
	}
	m.m.reaped.WithLabelValues("lost").Inc()
}

func reasonLabel(r string) string {
	switch r {
	case "idle timeout", "max lifetime reached":
		return r
	}
	return "retry"
}

func (m *Manager) isBusy(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busy[id] > 0
}

// idleTimeout is the spec's idle timeout bounded by the server maximum
// (limits may have been lowered since the sandbox was created).
func (m *Manager) idleTimeout(s Spec) time.Duration {
	return bounded(s.IdleTimeoutS, m.limits.DefaultIdleTimeout, m.limits.MaxIdleTimeout)
}

// lifetime is the spec's maximum lifetime bounded the same way.
func (m *Manager) lifetime(s Spec) time.Duration {
	return bounded(s.MaxLifetimeS, m.limits.DefaultLifetime, m.limits.MaxLifetime)
}

// bounded is seconds (else def) capped at max; zero everywhere is forever.
func bounded(seconds int, def, max time.Duration) time.Duration {
	d := time.Duration(seconds) * time.Second
	if d <= 0 {
		d = def
	}
	if max > 0 && (d > max || d <= 0) {
		d = max
	}
	if d <= 0 {
		d = time.Duration(1<<63 - 1)
	}
	return d
}

func (m *Manager) flushActivity(ctx context.Context) error {
	m.mu.Lock()
	pending := m.activity
	m.activity = make(map[string]time.Time, len(pending))
	now := m.now()
	for id := range m.busy {
		pending[id] = now // a busy sandbox is active right now
	}
	m.mu.Unlock()
	ids := make([]string, 0, len(pending))
	for id := range pending {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for i, id := range ids {
		if err := m.repo.TouchSandbox(ctx, id, pending[id]); err != nil {
			// Put back what was not written so it is not lost.
			m.mu.Lock()
			for _, rest := range ids[i:] {
				if t, ok := m.activity[rest]; !ok || t.Before(pending[rest]) {
					m.activity[rest] = pending[rest]
				}
			}
			m.mu.Unlock()
			return fmt.Errorf("reaper: persist activity: %w", err)
		}
	}
	return nil
}

// Run runs the reaper every Limits.ReapInterval until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.limits.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Keep the activity seen since the last pass for the next server.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := m.flushActivity(fctx); err != nil {
				m.log.Warn("persist activity at shutdown", "err", err)
			}
			m.closeWatches()
			return nil
		case <-t.C:
			if n, err := m.Reap(ctx); err != nil {
				m.log.Error("reaper", "err", err)
			} else if n > 0 {
				m.log.Info("reaper terminated sandboxes", "count", n)
			}
		}
	}
}

// Reconcile runs once at start: every non-terminal sandbox is either
// re-adopted (the driver still runs it), finished (terminating), failed
// (creating was interrupted) or marked lost. Only failing to list is an
// error: one sandbox that cannot be settled is logged (the reaper retries
// unfinished terminates) and must not keep the server from starting.
func (m *Manager) Reconcile(ctx context.Context) error {
	items, err := m.repo.ListSandboxes(ctx, ListFilter{States: []State{Creating, Running, Terminating}})
	if err != nil {
		return fmt.Errorf("reconcile: list: %w", err)
	}
	for _, sb := range items {
		log := m.log.With("sandbox_id", sb.ID, "driver", sb.Driver)
		if far, err := m.elsewhere(ctx, sb); err != nil || far {
			if err != nil {
				log.Warn("reconcile: is its host alive?", "host", sb.Host, "err", err)
			}
			continue // a live server on its host owns it
		}
		drv, ok := m.drivers[sb.Driver]
		if !ok {
			m.markLost(ctx, sb, fmt.Sprintf("driver %q is not configured on this server", sb.Driver))
			continue
		}
		switch sb.State {
		case Creating:
			if sb.Ref != "" {
				if err := drv.Destroy(ctx, sb.Ref); err != nil {
					log.Warn("destroy interrupted create", "err", err)
				}
			}
			sb.State = Failed
			sb.Reason = "create interrupted by a server restart"
			sb.UpdatedAt = m.now()
			t := sb.UpdatedAt
			sb.TerminatedAt = &t
			if err := m.repo.UpdateSandbox(ctx, sb); err != nil {
				log.Error("reconcile: persist failed create", "err", err)
			}
		case Running:
			alive, err := drv.Recover(ctx, sb.Ref)
			if err != nil {
				log.Warn("recover failed", "err", err)
			}
			if err == nil && alive {
				m.Touch(sb.ID) // the outage was not the user's idleness
				if _, hb := drv.(HostBound); hb && sb.Host != m.host {
					sb.Host = m.host // (its data directory was given a new host name)
					if err := m.repo.UpdateSandbox(ctx, sb); err != nil {
						log.Error("reconcile: persist host", "err", err)
					}
				}
				log.Info("sandbox re-adopted")
				continue
			}
			if derr := drv.Destroy(ctx, sb.Ref); derr != nil {
				log.Warn("destroy lost sandbox", "err", derr)
			}
			m.markLost(ctx, sb, "the sandbox did not survive a server restart")
		case Terminating:
			if _, err := m.terminate(ctx, sb.ID, sb.Reason); err != nil {
				log.Error("reconcile: finish terminate (the reaper retries)", "err", err)
			}
		}
	}
	return nil
}

// capability cleans the path p and returns it with the owner's running
// sandbox and its driver as a C (Files, Archiver); what names C in the
// error for a driver without it.
func capability[C any](ctx context.Context, m *Manager, ownerID, id, p, what string) (*Sandbox, C, string, error) {
	var none C
	p, err := CleanPath(p)
	if err != nil {
		return nil, none, "", err
	}
	sb, drv, err := m.Running(ctx, ownerID, id)
	if err != nil {
		return nil, none, "", err
	}
	c, ok := drv.(C)
	if !ok {
		return nil, none, "", errs.E(errs.Unavailable, "driver %s does not support %s", sb.Driver, what)
	}
	return sb, c, p, nil
}

func (m *Manager) files(ctx context.Context, ownerID, id, p string) (*Sandbox, Files, string, error) {
	return capability[Files](ctx, m, ownerID, id, p, "file operations")
}

// Stat describes one path in the owner's sandbox.
func (m *Manager) Stat(ctx context.Context, ownerID, id, p string) (FileInfo, error) {
	sb, f, p, err := m.files(ctx, ownerID, id, p)
	if err != nil {
		return FileInfo{}, err
	}
	m.Touch(id)
	return f.Stat(ctx, sb.Ref, p)
}

// ReadFile copies a file of the owner's sandbox to w.
func (m *Manager) ReadFile(ctx context.Context, ownerID, id, p string, w io.Writer) (FileInfo, error) {
	sb, f, p, err := m.files(ctx, ownerID, id, p)
	if err != nil {
		return FileInfo{}, err
	}
	release := m.MarkBusy(id)
	defer release()
	return f.ReadFile(ctx, sb.Ref, p, w)
}

// WriteFile writes r to a file of the owner's sandbox (parents created).
func (m *Manager) WriteFile(ctx context.Context, ownerID, id, p string, mode fs.FileMode, r io.Reader) (int64, error) {
	if mode == 0 {
		mode = 0o644
	}
	if mode&^fs.ModePerm != 0 {
		return 0, errs.Field("mode", "only permission bits are allowed")
	}
	sb, f, p, err := m.files(ctx, ownerID, id, p)
	if err != nil {
		return 0, err
	}
	release := m.MarkBusy(id)
	defer release()
	return f.WriteFile(ctx, sb.Ref, p, mode, r)
}

// RemoveFile removes a file or an empty directory... or a tree, as the driver does.
func (m *Manager) RemoveFile(ctx context.Context, ownerID, id, p string) error {
	sb, f, p, err := m.files(ctx, ownerID, id, p)
	if err != nil {
		return err
	}
	m.Touch(id)
	return f.Remove(ctx, sb.Ref, p)
}

// ListDir lists a directory of the owner's sandbox.
func (m *Manager) ListDir(ctx context.Context, ownerID, id, dir string) ([]FileInfo, error) {
	sb, f, dir, err := m.files(ctx, ownerID, id, dir)
	if err != nil {
		return nil, err
	}
	m.Touch(id)
	return f.ListDir(ctx, sb.Ref, dir)
}

func (m *Manager) archiver(ctx context.Context, ownerID, id, p string) (*Sandbox, Archiver, string, error) {
	return capability[Archiver](ctx, m, ownerID, id, p, "archives")
}

// ArchiveOut writes a tar stream of path in the owner's sandbox to w.
func (m *Manager) ArchiveOut(ctx context.Context, ownerID, id, p string, w io.Writer) error {
	sb, a, p, err := m.archiver(ctx, ownerID, id, p)
	if err != nil {
		return err
	}
	release := m.MarkBusy(id)
	defer release()
	return a.ArchiveOut(ctx, sb.Ref, p, w)
}

// ArchiveIn extracts a tar stream into path in the owner's sandbox.
func (m *Manager) ArchiveIn(ctx context.Context, ownerID, id, p string, r io.Reader) error {
	sb, a, p, err := m.archiver(ctx, ownerID, id, p)
	if err != nil {
		return err
	}
	release := m.MarkBusy(id)
	defer release()
	return a.ArchiveIn(ctx, sb.Ref, p, r)
}

// VolumeOwner is the owner key a sandbox's named volume is stored under:
// the team's ("team:<id>") for a team sandbox, so the team's members share
// it, else the user's own.
func VolumeOwner(ownerID, team string) string {
	if team != "" {
		return "team:" + team
	}
	return ownerID
}

// activeVolumeUsers are the live sandboxes that mount a volume of the scope
// (the user's personal sandboxes, or the team's with team set), optionally
// only those mounting name.
func (m *Manager) activeVolumeUsers(ctx context.Context, ownerID, team, name string) ([]*Sandbox, error) {
	f := ListFilter{OwnerID: ownerID, VolumeName: name, States: []State{Creating, Running, Terminating}}
	if team != "" {
		f.OwnerID, f.TeamID = "", team
	}
	all, err := m.repo.ListSandboxes(ctx, f)
	if err != nil {
		return nil, err
	}
	var out []*Sandbox
	for _, sb := range all {
		if sb.TeamID == team && sb.Spec.VolumeName != "" {
			out = append(out, sb)
		}
	}
	return out, nil
}

// ListVolumes returns the owner's named volumes (the team's, with team
// set), with sizes where the driver reports them and in_use from the
// sandboxes that mount them.
func (m *Manager) ListVolumes(ctx context.Context, ownerID, team string) ([]Volume, error) {
	owner := VolumeOwner(ownerID, team)
	recs, err := m.repo.ListVolumes(ctx, owner)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	active, err := m.activeVolumeUsers(ctx, ownerID, team, "")
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	inUse := map[string]bool{}
	for _, sb := range active {
		if sb.Spec.VolumeName != "" {
			inUse[sb.Spec.VolumeName] = true
		}
	}
	byName := map[string]Volume{}
	for _, r := range recs {
		byName[r.Name] = Volume{Name: r.Name, CreatedAt: r.CreatedAt, InUse: inUse[r.Name]}
	}
	for _, name := range m.driverNames() {
		vd, ok := m.drivers[name].(Volumes)
		if !ok {
			continue
		}
		vs, err := vd.ListVolumes(ctx, owner)
		if err != nil {
			return nil, fmt.Errorf("list volumes on %s: %w", name, err)
		}
		for _, v := range vs {
			cur, ok := byName[v.Name]
			if !ok {
				cur = v
			}
			cur.SizeBytes = v.SizeBytes
			cur.InUse = cur.InUse || v.InUse || inUse[v.Name]
			byName[v.Name] = cur
		}
	}
	out := make([]Volume, 0, len(byName))
	for _, v := range byName {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteVolume deletes the owner's volume (the team's, with team set) and
// its data; errs.Conflict while a sandbox mounts it.
func (m *Manager) DeleteVolume(ctx context.Context, ownerID, team, name string) error {
	if name == "" || len(name) > maxVolumeNameLen || !volumeNameRE.MatchString(name) {
		return errs.E(errs.NotFound, "volume not found")
	}
	// Hold the create lock so no sandbox mounts it between the check and the delete.
	m.createMu.Lock()
	defer m.createMu.Unlock()
	active, err := m.activeVolumeUsers(ctx, ownerID, team, name)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	owner := VolumeOwner(ownerID, team)
	if len(active) > 0 {
		return errs.E(errs.Conflict, "volume %s is mounted by sandbox %s; terminate it first", name, active[0].ID)
	}
	found := false
	for _, dn := range m.driverNames() {
		vd, ok := m.drivers[dn].(Volumes)
		if !ok {
			continue
		}
		err := vd.DeleteVolume(ctx, owner, name)
		switch {
		case err == nil:
			found = true
		case errs.KindOf(err) == errs.NotFound:
		default:
			return fmt.Errorf("delete volume on %s: %w", dn, err)
		}
	}
	err = m.repo.DeleteVolume(ctx, owner, name)
	switch {
	case err == nil:
		found = true
	case errs.KindOf(err) != errs.NotFound:
		return fmt.Errorf("delete volume: %w", err)
	}
	if !found {
		return errs.E(errs.NotFound, "volume not found")
	}
	return nil
}

func (m *Manager) driverNames() []string {
	names := make([]string, 0, len(m.drivers))
	for n := range m.drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// stateCollector reports sandboxes by state from the repo at scrape time,
// so the numbers are right across restarts and replicas.
type stateCollector struct{ m *Manager }

var stateDesc = prometheus.NewDesc("techboss_sandbox_sandboxes", "Sandboxes by state.", []string{"state"}, nil)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- stateDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.m.repo.CountSandboxesByState(ctx)
	if err != nil {
		c.m.log.Warn("metrics: count sandboxes", "err", err)
		return
	}
	for _, s := range []State{Creating, Running, Terminating, Terminated, Failed, Lost} {
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
