package agent

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Sandboxes is what the run service needs from the sandbox layer
// (*sandbox.Manager implements it). Get treats another owner's sandbox as
// missing; Exec counts as sandbox activity while it runs.
type Sandboxes interface {
	Get(ctx context.Context, ownerID, id string) (*sandbox.Sandbox, error)
	Exec(ctx context.Context, ownerID, id string, req sandbox.ExecRequest) (sandbox.ExitStatus, error)
	DriverFor(sb *sandbox.Sandbox) (sandbox.Driver, error)
	ReadFile(ctx context.Context, ownerID, id, p string, w io.Writer) (sandbox.FileInfo, error)
}

// Credential modes.
const (
	// CredentialsGateway (default): the sandbox gets the gateway URL and a
	// run-scoped token; the real key never enters it.
	CredentialsGateway = "gateway"
	// CredentialsDirect injects the upstream key into the run's env.
	CredentialsDirect = "direct"
)

// Config configures the run service.
type Config struct {
	// Credentials is CredentialsGateway (default) or CredentialsDirect.
	Credentials string
	// PublicURL is the server's base URL as reachable from sandboxes whose
	// driver cannot open an in-sandbox listener (e.g. Modal). The gateway
	// lives at PublicURL + "/llm/anthropic".
	PublicURL string
	// GatewayListenAddr is where the in-sandbox gateway listener binds
	// (sandbox.NetListener); default "127.0.0.1:0" (any free port).
	GatewayListenAddr string
	// UpstreamBaseURL and UpstreamAPIKey are given to the CLI in direct mode.
	UpstreamBaseURL string
	UpstreamAPIKey  string
	// KeyInSandbox allows direct mode without UpstreamAPIKey: the key is
	// in the sandbox's own env (a Modal secret, TECHBOSS_MODAL_SECRETS).
	// A run then reads it there first, to keep it out of its events.
	KeyInSandbox bool
	// Root sets IS_SANDBOX=1: the CLI runs as root in an isolated sandbox
	// (true for the local driver, whose sandboxes run as uid 0 without
	// capabilities). Without it a root CLI refuses to skip permissions.
	Root bool
	// CancelGrace is how long Cancel waits after SIGINT before SIGKILL
	// (default 10s).
	CancelGrace time.Duration
	// MaxPromptBytes bounds the prompt (default 100 KiB).
	MaxPromptBytes int
	// ReplicaTimeout is how long a replica may go unseen before its runs
	// count as orphaned (PostgreSQL, several replicas); the service renews
	// its own every quarter of it and interrupts orphans it finds. 0 means
	// this process is the only one (SQLite): at start every run not its
	// own is an orphan, and there is no periodic sweep.
	ReplicaTimeout time.Duration
	// Host names the machine (data directory) this process runs on; it is
	// recorded with the replica (see sandbox.Deps.Host).
	Host string
	// Durability bounds how run events and final states wait for a store
	// that cannot take them (a database outage); see Durability.
	Durability Durability
	// SnapshotRetry is the first wait before an after-run snapshot that
	// failed is tried again (default 5s); the wait doubles up to 5 minutes.
	SnapshotRetry time.Duration
	// DeltaWindow coalesces the model's token deltas (text_delta and the
	// like): the first delta after a quiet window is appended at once, the
	// ones that follow within the window are merged into one event appended
	// when it ends (default 50ms; negative: every delta is an event).
	DeltaWindow time.Duration
	// PermissionTimeout is how long a tool call waits for an answer
	// before the run's default decision (default 5 minutes).
	PermissionTimeout time.Duration
	// MCPAllow are the local or private ranges the remote MCP proxy may
	// reach (the operator's TECHBOSS_NETWORK_ALLOW); all others of those
	// are refused.
	MCPAllow []netip.Prefix
}

// Deps are the service's dependencies.
type Deps struct {
	Store     Store
	CLI       CLI
	Sandboxes Sandboxes
	// Gateway serves the LLM gateway on in-sandbox listeners (may be nil
	// when Credentials is direct).
	Gateway http.Handler
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: not registered
	Now     func() time.Time
	// AfterRun, if set, is called with the final run before its done event
	// is published, while the run still counts as active (e.g. to snapshot
	// the workspace). It runs on the run's own goroutine, so shutdown waits
	// for it; it is skipped when the server is shutting down. An error is
	// recorded on the run (snapshot_error), sent as a snapshot_error event
	// and counted, and AfterRun is called again with backoff until it
	// succeeds or returns ErrSandboxGone.
	AfterRun func(ctx context.Context, r Run) error
	// Feed connects the event hub to the other replicas (nil: this process
	// is the only one); see Hub.
	Feed Feed
	// Secrets resolves the "${secret:NAME}" and "${secret:team:NAME}"
	// references of runs' MCP servers (nil: runs may not name secrets).
	Secrets SecretRevealer
	// Deliver carries out a succeeded run's deliver option (commit, push,
	// pull request); nil: runs may not ask for it.
	Deliver DeliverFunc
	// BeforeRun, if set, is called when a run starts, after the sandbox's
	// gateway listener is open and before the agent starts (e.g. to point
	// the sandbox's clones at the git broker's current address with a
	// fresh grant). Its error is logged; the run goes on.
	BeforeRun func(ctx context.Context, sb *sandbox.Sandbox) error
	// Events receives the webhook events of runs (nil: none are sent).
	Events EventSink
}

// Service starts, follows, cancels and recovers agent runs. Runs live on
// the context given to Run, never on a request's: a client that goes away
// does not stop its run.
type Service struct {
	cfg     Config
	store   Store
	cli     CLI
	sbx     Sandboxes
	gw      http.Handler
	secrets SecretRevealer
	// mcpProxyTransport dials runs' remote MCP servers (mcpTransport).
	mcpProxyTransport http.RoundTripper
	log               *slog.Logger
	now               func() time.Time
	hub               *Hub
	m                 metrics
	// afterRun is Deps.AfterRun.
	afterRun func(ctx context.Context, r Run) error
	// deliver is Deps.Deliver.
	deliver DeliverFunc
	// beforeRun is Deps.BeforeRun.
	beforeRun func(ctx context.Context, sb *sandbox.Sandbox) error
	// events is Deps.Events (never nil).
	events EventSink
	// quit is closed when Run begins to shut down; bg runs the background
	// retries of after-run snapshots, which end on it.
	quit chan struct{}
	bg   sync.WaitGroup
	// usage holds gateway usage records the store could not take yet.
	usage *usageQueue

	submit   chan *job
	ready    chan struct{} // closed when Run has interrupted stale runs
	stopped  chan struct{} // closed when Run returns
	hardStop chan struct{} // closed DrainTimeout after shutdown began: stop retrying writes

	// replica names this process in the store (runs record it).
	replica string

	mu        sync.Mutex
	jobs      map[string]*job        // active runs of this process, by run ID
	approvals map[string]*approvals  // pending tool approvals of those runs
	listeners map[string]*gwListener // in-sandbox gateway listeners, by sandbox ID
}

type gwListener struct {
	owner string
	ln    net.Listener
	srv   *http.Server
	addr  string
	done  chan struct{} // closed when Serve returned
}

type job struct {
	run     Run
	baseURL string
	token   string
	// sandboxKey is the key read from the sandbox (Config.KeyInSandbox).
	sandboxKey string
	sandbox    *sandbox.Sandbox

	mu          sync.Mutex
	signals     chan sandbox.Signal // nil once closed
	cancelled   bool
	cancelExec  context.CancelFunc
	killTimer   *time.Timer
	started     StartedData
	result      *ResultData
	sawError    string
	appendError error

	// The run's MCP servers: the CLI's --mcp-config, the remote servers
	// the proxy reaches, and the secret values they revealed.
	mcpConfig string
	mcpRemote map[string]remoteMCP
	revealed  []string
	// stdin is the prompt as a stream-json message, when it has
	// attachments.
	stdin []byte
}

type metrics struct {
	snapFailed  prometheus.Counter
	snapPending prometheus.Gauge
	runs        *prometheus.CounterVec
	active      prometheus.Gauge
	tokens      *prometheus.CounterVec
	cost        prometheus.Counter
	publish     prometheus.Histogram
}

// ErrNoGateway is returned by Start when no gateway is reachable from the sandbox.
var ErrNoGateway = errs.E(errs.Unavailable, "no LLM gateway is reachable from this sandbox: set TECHBOSS_PUBLIC_URL or use direct credentials")

// NewService returns a Service. Call Run to start it.
func NewService(cfg Config, d Deps) (*Service, error) {
	if d.Store == nil || d.CLI == nil || d.Sandboxes == nil {
		return nil, errors.New("agent service: store, CLI and sandboxes are required")
	}
	switch cfg.Credentials {
	case "":
		cfg.Credentials = CredentialsGateway
	case CredentialsGateway, CredentialsDirect:
	default:
		return nil, fmt.Errorf("agent service: TECHBOSS_CLAUDE_CREDENTIALS must be gateway or direct, not %q", cfg.Credentials)
	}
	if cfg.Credentials == CredentialsDirect && cfg.UpstreamAPIKey == "" && !cfg.KeyInSandbox {
		return nil, errors.New("agent service: direct credentials need ANTHROPIC_API_KEY (or, on Modal, TECHBOSS_MODAL_SECRETS naming the Modal secret that holds it)")
	}
	if cfg.GatewayListenAddr == "" {
		cfg.GatewayListenAddr = "127.0.0.1:0"
	}
	if cfg.CancelGrace <= 0 {
		cfg.CancelGrace = 10 * time.Second
	}
	if cfg.MaxPromptBytes <= 0 {
		cfg.MaxPromptBytes = 100 << 10
	}
	if cfg.PermissionTimeout <= 0 {
		cfg.PermissionTimeout = 5 * time.Minute
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Events == nil {
		d.Events = noEvents{}
	}
	s := &Service{
		cfg: cfg, store: d.Store, cli: d.CLI, sbx: d.Sandboxes, gw: d.Gateway, secrets: d.Secrets, log: d.Logger, now: d.Now,
		afterRun:  d.AfterRun,
		deliver:   d.Deliver,
		beforeRun: d.BeforeRun,
		events:    d.Events,
		replica:   "rep_" + randHex(8),
		hub:       NewHub(d.Store, d.Now, d.Feed),
		submit:    make(chan *job),
		ready:     make(chan struct{}),
		stopped:   make(chan struct{}),
		hardStop:  make(chan struct{}),
		quit:      make(chan struct{}),
		usage:     newUsageQueue(),
		jobs:      map[string]*job{},
		approvals: map[string]*approvals{},
		listeners: map[string]*gwListener{},
	}
	s.mcpProxyTransport = s.mcpTransport()
	s.m = metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_agent_runs_total", Help: "Finished agent runs by outcome.",
		}, []string{"outcome"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "techboss_agent_runs_active", Help: "Agent runs in progress in this process.",
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_agent_tokens_total", Help: "LLM tokens used by agent runs and gateway calls, by kind.",
		}, []string{"kind"}),
		cost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "techboss_agent_cost_usd_total", Help: "Cost of metered LLM calls in USD.",
		}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "techboss_agent_event_publish_seconds",
			Help:    "Latency from reading a CLI output line to publishing its events (persisted).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .1, .5},
		}),
	}
	s.hub.SetDurability(cfg.Durability, d.Logger.With("component", "run-events"))
	s.m.snapFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "techboss_agent_snapshot_failures_total", Help: "Failed attempts to snapshot a workspace after an agent run or before its sandbox stops (first tries and retries).",
	})
	s.m.snapPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "techboss_agent_snapshot_retries_pending", Help: "After-run snapshots that failed and are being retried.",
	})
	if cfg.SnapshotRetry <= 0 {
		s.cfg.SnapshotRetry = 5 * time.Second
	}
	if d.Metrics != nil {
		for _, c := range []prometheus.Collector{s.m.runs, s.m.active, s.m.tokens, s.m.cost, s.m.publish, s.m.snapFailed, s.m.snapPending} {
			if err := d.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("agent service: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// SetGateway sets the handler served on in-sandbox gateway listeners. The
// gateway needs the Service (run tokens, usage), so it is built after the
// Service; call SetGateway before Run.
func (s *Service) SetGateway(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gw = h
}

func (s *Service) gateway() http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gw
}

// Hub returns the event hub (for subscribers and tests).
func (s *Service) Hub() *Hub { return s.hub }

// Run registers this process as a replica, marks runs left active by a
// process that is gone interrupted, then runs submitted runs until ctx is
// done, renewing its registration and sweeping for orphaned runs (see
// Config.ReplicaTimeout). On return every run goroutine and gateway
// listener has stopped, runs still going were interrupted, and the
// registration is removed.
func (s *Service) Run(ctx context.Context) error {
	defer close(s.stopped)
	if _, err := s.store.ReplicaAlive(ctx, s.replica, s.cfg.Host, s.now().UTC()); err != nil {
		return err
	}
	// Events a previous process spooled go in before its runs' done events.
	if err := s.hub.RecoverSpool(ctx); err != nil {
		return err
	}
	if err := s.recoverUsage(ctx); err != nil {
		return err
	}
	if err := s.interruptOrphans(ctx); err != nil {
		return err
	}
	close(s.ready)
	s.hub.OnDecide(s.decideRemote)
	feedCtx, stopFeed := context.WithCancel(context.WithoutCancel(ctx))
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		s.hub.RunFeed(feedCtx, s.log, func(runID string) { s.cancelLocal(runID) })
	}()
	defer func() {
		// After the runs' done events, which the other replicas' followers wait for.
		stopFeed()
		<-feedDone
	}()
	var wg sync.WaitGroup
	// Queued usage records are stored until the runs ended, then for up to
	// DrainTimeout more; the rest waits in the spool for the next start.
	usageQuit, usageDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(usageDone)
		s.writeUsage(usageQuit, s.hub.dur.DrainTimeout)
	}()
	defer func() {
		// Our runs are finished by now; peers need not wait for us to time out.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.store.RemoveReplica(rctx, s.replica); err != nil {
			s.log.Warn("remove replica", "err", err)
		}
	}()
	defer func() {
		s.mu.Lock()
		ls := s.listeners
		s.listeners = map[string]*gwListener{}
		s.mu.Unlock()
		for _, l := range ls {
			_ = l.srv.Close()
			<-l.done
		}
		// Ending runs retry their final writes this long at most.
		hard := time.AfterFunc(s.hub.dur.DrainTimeout, func() { close(s.hardStop) })
		close(s.quit)
		wg.Wait()
		s.bg.Wait()
		close(usageQuit)
		<-usageDone
		if hard.Stop() {
			close(s.hardStop)
		}
		// Their events still waiting for the store get as long again,
		// then wait in the spool for the next start.
		s.hub.Stop()
	}()
	sweep := time.NewTicker(listenerSweep)
	defer sweep.Stop()
	var beat <-chan time.Time
	if s.cfg.ReplicaTimeout > 0 {
		t := time.NewTicker(s.cfg.ReplicaTimeout / 4)
		defer t.Stop()
		beat = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-s.submit:
			wg.Go(func() { s.execute(ctx, j) })
		case <-sweep.C:
			s.sweepListeners(ctx)
		case <-beat:
			if renewed, err := s.store.ReplicaAlive(ctx, s.replica, s.cfg.Host, s.now().UTC()); err != nil {
				s.log.Error("renew replica", "err", err)
			} else if !renewed {
				s.stopOrphaned()
			}
			if err := s.interruptOrphans(ctx); err != nil {
				s.log.Error("sweep orphaned runs", "err", err)
			}
		}
	}
}

// stopOrphaned stops this process's runs after another replica took it for
// dead (it could not renew itself within ReplicaTimeout, e.g. cut off from
// the database) and interrupted them: their records and done events are
// final, so their CLIs must not go on working unseen.
func (s *Service) stopOrphaned() {
	s.mu.Lock()
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	s.log.Error("this replica was taken for dead by another and its runs interrupted; stopping them", "runs", len(jobs))
	for _, j := range jobs {
		j.mu.Lock()
		j.cancelled = true
		if j.cancelExec != nil {
			j.cancelExec()
		}
		j.mu.Unlock()
	}
}

// listenerSweep is how often gateway listeners of sandboxes that stopped
// running are closed (a listener keeps its sandbox's network namespace
// alive, so it must not outlive the sandbox).
const listenerSweep = 30 * time.Second

func (s *Service) sweepListeners(ctx context.Context) {
	s.mu.Lock()
	ls := make(map[string]*gwListener, len(s.listeners))
	for id, l := range s.listeners {
		ls[id] = l
	}
	s.mu.Unlock()
	for id, l := range ls {
		sb, err := s.sbx.Get(ctx, l.owner, id)
		if (err != nil && errs.KindOf(err) == errs.NotFound) || (err == nil && sb.State != sandbox.Running) {
			s.ReleaseSandbox(id)
		}
	}
}

// ReleaseSandbox closes the sandbox's in-sandbox gateway listener, if any.
// Call it when a sandbox terminates (the Manager's BeforeTerminate hook);
// a periodic sweep catches any it misses.
func (s *Service) ReleaseSandbox(sandboxID string) {
	s.mu.Lock()
	l, ok := s.listeners[sandboxID]
	delete(s.listeners, sandboxID)
	s.mu.Unlock()
	if ok {
		_ = l.srv.Close()
		<-l.done
	}
}

// interruptOrphans marks interrupted the runs of server processes that are
// gone (a previous process of this server, or a replica that stopped
// renewing itself) and closes their event logs with a done event.
func (s *Service) interruptOrphans(ctx context.Context) error {
	now := s.now().UTC()
	runs, err := s.store.InterruptOrphanedRuns(ctx, s.replica, now.Add(-s.cfg.ReplicaTimeout), now,
		"the server process running it stopped while the run was in progress")
	if err != nil {
		return fmt.Errorf("interrupt orphaned runs: %w", err)
	}
	for _, r := range runs {
		s.hub.Open(r.ID, r.LastSeq)
		if _, err := s.hub.Append(ctx, r.ID, NewEvent(TypeDone, DoneData{Status: Interrupted, Error: r.Error}, "")); err != nil {
			s.log.Error("close interrupted run", "run_id", r.ID, "err", err)
		}
		s.hub.Close(r.ID)
		s.m.runs.WithLabelValues(string(Interrupted)).Inc()
	}
	if len(runs) > 0 {
		s.log.Warn("marked runs interrupted", "count", len(runs))
	}
	return nil
}

// awaitRecovery waits until Run has recovered what the processes before
// it left: their spooled events stored and their runs interrupted. Until
// then a run they left active is not this process's to end: its stored
// last seq is not its last yet, so a done event written now would take
// the seq of a spooled event, which recovery then skips as stored. It is
// errs.Unavailable when Run has returned without getting that far.
func (s *Service) awaitRecovery(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-s.stopped:
		return errs.E(errs.Unavailable, "the run service is not running")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start validates and starts a run of prompt in the owner's sandbox and
// returns it (queued). The next prompt in a sandbox resumes its Claude
// session unless opts.NewSession. A sandbox with an active run gives
// errs.Conflict naming that run.
func (s *Service) Start(ctx context.Context, ownerID, sandboxID, prompt string, opts Options) (Run, error) {
	if err := s.validate(prompt, opts); err != nil {
		return Run{}, err
	}
	if err := s.awaitRecovery(ctx); err != nil {
		return Run{}, err
	}
	sb, err := s.sbx.Get(ctx, ownerID, sandboxID)
	if err != nil {
		return Run{}, err
	}
	if sb.State != sandbox.Running {
		return Run{}, errs.E(errs.Conflict, "sandbox is %s", sb.State)
	}
	if a, err := s.store.ActiveRun(ctx, sb.ID); err == nil {
		if !s.endStale(ctx, a, Interrupted, "the run's agent process was gone") {
			return Run{}, errs.E(errs.Conflict, "sandbox %s already has an active run %s", sb.ID, a.ID)
		}
	}
	j := &job{sandbox: sb}
	if j.baseURL, err = s.gatewayURL(ctx, sb); err != nil {
		return Run{}, err
	}
	if s.beforeRun != nil {
		if err := s.beforeRun(ctx, sb); err != nil {
			s.log.WarnContext(ctx, "before run", "sandbox_id", sb.ID, "err", err)
		}
	}
	resume := ""
	switch {
	case opts.SessionID != "":
		// Only a session of this sandbox's own runs.
		ok, err := s.store.HasSession(ctx, sb.ID, opts.SessionID)
		if err != nil {
			return Run{}, err
		}
		if !ok {
			return Run{}, errs.Field("session_id", "no run of this sandbox has this session")
		}
		resume = opts.SessionID
	case !opts.NewSession:
		if resume, err = s.store.LastSessionID(ctx, sb.ID); err != nil {
			return Run{}, err
		}
	}
	if opts.ForkSession && resume == "" {
		return Run{}, errs.Field("fork_session", "this sandbox has no session to fork")
	}
	opts.EnvKeys = slices.Sorted(maps.Keys(opts.Env))
	opts.MCPServerNames = slices.Sorted(maps.Keys(opts.MCPServers))
	if len(opts.Attachments) > 0 {
		if j.stdin, err = s.promptMessage(ctx, ownerID, sb.ID, prompt, opts.Attachments); err != nil {
			return Run{}, err
		}
		for _, a := range opts.Attachments {
			opts.AttachmentNames = append(opts.AttachmentNames, cmp.Or(a.Name, path.Base(a.Path), "(upload)"))
		}
	}
	if s.cfg.Credentials == CredentialsGateway {
		j.token = "tbr_" + randToken()
	} else if s.cfg.UpstreamAPIKey == "" {
		if j.sandboxKey, err = s.keyInSandbox(ctx, sb); err != nil {
			return Run{}, err
		}
	}
	if len(opts.MCPServers) > 0 || opts.asks() {
		base, ok := gatewayBase(j.baseURL)
		if !ok {
			return Run{}, errs.Field("mcp_servers", "this sandbox's gateway cannot serve MCP servers")
		}
		cfg, remotes, revealed, err := s.resolveMCP(ctx, cmp.Or(opts.StartedBy, sb.OwnerID), sb.TeamID, opts.MCPServers, base, j.token)
		if err != nil {
			return Run{}, err
		}
		if opts.asks() {
			cfg["techboss"] = map[string]any{"type": "http", "url": base + ApprovalPath,
				"headers": map[string]string{"Authorization": "Bearer " + j.token}}
		}
		b, _ := json.Marshal(map[string]any{"mcpServers": cfg})
		j.mcpConfig, j.mcpRemote, j.revealed = string(b), remotes, revealed
	}
	if opts.Cwd != "" {
		opts.Cwd, _ = workspaceDir(opts.Cwd)
	}
	j.run = Run{
		ID: "run_" + randHex(12), SandboxID: sb.ID, OwnerID: sb.OwnerID, Prompt: prompt, Options: opts,
		Status: Queued, ResumedFrom: resume, CreatedAt: s.now().UTC(), Replica: s.replica,
	}
	s.hub.Open(j.run.ID, 0)
	if err := s.store.CreateRun(ctx, j.run); err != nil {
		s.hub.Close(j.run.ID)
		return Run{}, err
	}
	if s.cfg.Credentials == CredentialsGateway {
		if err := s.store.CreateRunToken(ctx, RunToken{Hash: HashToken(j.token), RunID: j.run.ID, SandboxID: sb.ID, UserID: sb.OwnerID, CreatedAt: j.run.CreatedAt}); err != nil {
			s.abandon(ctx, j, err)
			return Run{}, err
		}
	}
	queued := j.run // execute owns j.run once submitted
	s.mu.Lock()
	s.jobs[j.run.ID] = j
	s.mu.Unlock()
	select {
	case s.submit <- j:
		return queued, nil
	case <-s.stopped:
	case <-ctx.Done():
	}
	err = errs.E(errs.Unavailable, "the run service is not running")
	s.abandon(context.WithoutCancel(ctx), j, err)
	return Run{}, err
}

// abandon ends a run that never started.
func (s *Service) abandon(ctx context.Context, j *job, cause error) {
	s.mu.Lock()
	delete(s.jobs, j.run.ID)
	s.mu.Unlock()
	_ = s.store.DeleteRunTokens(ctx, j.run.ID)
	j.run.Status, j.run.Error, j.run.FinishedAt = Failed, "not started: "+cause.Error(), s.now().UTC()
	if err := s.store.UpdateRun(ctx, j.run); err != nil {
		s.log.Error("persist abandoned run", "run_id", j.run.ID, "err", err)
	}
	_, _ = s.hub.Append(ctx, j.run.ID, NewEvent(TypeDone, DoneData{Status: Failed, Error: j.run.Error}, ""))
	s.hub.Close(j.run.ID)
}

func (s *Service) validate(prompt string, o Options) error {
	var fs []errs.FieldError
	switch {
	case strings.TrimSpace(prompt) == "":
		fs = append(fs, errs.FieldError{Field: "prompt", Reason: "must not be empty"})
	case len(prompt) > s.cfg.MaxPromptBytes:
		fs = append(fs, errs.FieldError{Field: "prompt", Reason: fmt.Sprintf("longer than %d bytes", s.cfg.MaxPromptBytes)})
	case strings.ContainsRune(prompt, 0):
		fs = append(fs, errs.FieldError{Field: "prompt", Reason: "contains a NUL byte"})
	}
	fs = append(fs, s.validateDeliver(o.Deliver)...)
	if o.MaxTurns < 0 || o.MaxTurns > 1000 {
		fs = append(fs, errs.FieldError{Field: "max_turns", Reason: "must be between 0 and 1000"})
	}
	if len(o.Model) > 200 || strings.ContainsAny(o.Model, "\x00\n ") {
		fs = append(fs, errs.FieldError{Field: "model", Reason: "not a model name"})
	}
	if len(o.AllowedTools) > 100 {
		fs = append(fs, errs.FieldError{Field: "allowed_tools", Reason: "more than 100 entries"})
	}
	for i, t := range o.AllowedTools {
		if t == "" || len(t) > 200 || strings.ContainsAny(t, ",\x00\n") {
			fs = append(fs, errs.FieldError{Field: fmt.Sprintf("allowed_tools[%d]", i), Reason: "must be a tool name or pattern without commas"})
		}
	}
	if len(o.AppendSystemPrompt) > s.cfg.MaxPromptBytes || strings.ContainsRune(o.AppendSystemPrompt, 0) {
		fs = append(fs, errs.FieldError{Field: "append_system_prompt", Reason: "too long or contains a NUL byte"})
	}
	if len(o.SystemPrompt) > s.cfg.MaxPromptBytes || strings.ContainsRune(o.SystemPrompt, 0) {
		fs = append(fs, errs.FieldError{Field: "system_prompt", Reason: "too long or contains a NUL byte"})
	}
	if len(o.FallbackModel) > 200 || strings.ContainsAny(o.FallbackModel, "\x00\n ") {
		fs = append(fs, errs.FieldError{Field: "fallback_model", Reason: "not a model name"})
	} else if o.FallbackModel != "" && o.FallbackModel == o.Model {
		fs = append(fs, errs.FieldError{Field: "fallback_model", Reason: "must differ from model"})
	}
	if len(o.DisallowedTools) > 100 {
		fs = append(fs, errs.FieldError{Field: "disallowed_tools", Reason: "more than 100 entries"})
	}
	for i, t := range o.DisallowedTools {
		if t == "" || len(t) > 200 || strings.ContainsAny(t, ",\x00\n") {
			fs = append(fs, errs.FieldError{Field: fmt.Sprintf("disallowed_tools[%d]", i), Reason: "must be a tool name or pattern without commas"})
		}
	}
	switch {
	case o.SessionID != "" && !sessionRE.MatchString(o.SessionID):
		fs = append(fs, errs.FieldError{Field: "session_id", Reason: "must be a session id (a UUID)"})
	case o.SessionID != "" && o.NewSession:
		fs = append(fs, errs.FieldError{Field: "new_session", Reason: "cannot be combined with session_id"})
	case o.ForkSession && o.NewSession:
		fs = append(fs, errs.FieldError{Field: "fork_session", Reason: "needs a session to fork: not with new_session"})
	}
	if o.Cwd != "" {
		if _, ok := workspaceDir(o.Cwd); !ok {
			fs = append(fs, errs.FieldError{Field: "cwd", Reason: "must be /workspace or a directory inside it"})
		}
	}
	if len(o.Env) > 100 {
		fs = append(fs, errs.FieldError{Field: "env", Reason: "more than 100 variables"})
	}
	size := 0
	for _, k := range slices.Sorted(maps.Keys(o.Env)) {
		v := o.Env[k]
		size += len(k) + len(v)
		switch {
		case !envNameRE.MatchString(k):
			fs = append(fs, errs.FieldError{Field: "env." + k, Reason: "not a variable name ([A-Za-z_][A-Za-z0-9_]*)"})
		case reservedEnv(k):
			fs = append(fs, errs.FieldError{Field: "env." + k, Reason: "set by the server (credentials, the CLI's config and home)"})
		case strings.ContainsRune(v, 0):
			fs = append(fs, errs.FieldError{Field: "env." + k, Reason: "contains a NUL byte"})
		}
	}
	if size > 256<<10 {
		fs = append(fs, errs.FieldError{Field: "env", Reason: "larger than 256 KiB"})
	}
	fs = append(fs, validatePolicy(o.Permissions)...)
	fs = append(fs, validateMCP(o.MCPServers, s.mcpAddrAllowed)...)
	fs = append(fs, validateAttachments(o.Attachments)...)
	if len(o.MCPServers) > 0 && s.cfg.Credentials == CredentialsDirect {
		fs = append(fs, errs.FieldError{Field: "mcp_servers", Reason: "MCP servers need the gateway (TECHBOSS_CLAUDE_CREDENTIALS=gateway)"})
	}
	if o.asks() && s.cfg.Credentials == CredentialsDirect {
		fs = append(fs, errs.FieldError{Field: "permission_mode", Reason: "approvals need the gateway (TECHBOSS_CLAUDE_CREDENTIALS=gateway)"})
	}
	if len(o.Settings) > 0 {
		var obj map[string]json.RawMessage
		if len(o.Settings) > 64<<10 {
			fs = append(fs, errs.FieldError{Field: "settings", Reason: "larger than 64 KiB"})
		} else if json.Unmarshal(o.Settings, &obj) != nil || obj == nil {
			fs = append(fs, errs.FieldError{Field: "settings", Reason: "must be a JSON object (Claude Code settings)"})
		}
	}
	return errs.Fields(fs)
}

var (
	sessionRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// reservedEnv reports whether the server sets variable k for the CLI
// (credentials, gateway, config dir, home): a run may not override it.
func reservedEnv(k string) bool {
	u := strings.ToUpper(k)
	return strings.HasPrefix(u, "ANTHROPIC_") || strings.HasPrefix(u, "CLAUDE_") || u == "HOME" || u == "IS_SANDBOX"
}

// workspaceDir resolves a run's cwd (absolute, or relative to
// /workspace) and reports whether it is /workspace or inside it.
func workspaceDir(p string) (string, bool) {
	if strings.ContainsRune(p, 0) || len(p) > 4096 {
		return "", false
	}
	if !path.IsAbs(p) {
		p = path.Join("/workspace", p)
	}
	p = path.Clean(p)
	return p, p == "/workspace" || strings.HasPrefix(p, "/workspace/")
}

// gatewayURL is the Anthropic base URL the sandbox's CLI uses.
func (s *Service) gatewayURL(ctx context.Context, sb *sandbox.Sandbox) (string, error) {
	if s.cfg.Credentials == CredentialsDirect {
		return s.cfg.UpstreamBaseURL, nil
	}
	drv, err := s.sbx.DriverFor(sb)
	if err != nil {
		return "", err
	}
	if nl, ok := drv.(sandbox.NetListener); ok && s.gateway() != nil {
		addr, err := s.listener(ctx, sb, nl)
		if err != nil {
			return "", err
		}
		return "http://" + addr + "/llm/anthropic", nil
	}
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL + "/llm/anthropic", nil
	}
	return "", ErrNoGateway
}

type sandboxKey struct{}

// BoundSandbox returns the sandbox ID a request arrived for when it came
// through that sandbox's in-sandbox gateway listener.
func BoundSandbox(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(sandboxKey{}).(string)
	return id, ok
}

// listener returns the address of the sandbox's in-sandbox gateway
// listener, opening it on first use. It serves until the sandbox is
// destroyed (Accept fails) or the service stops.
func (s *Service) listener(ctx context.Context, sb *sandbox.Sandbox, nl sandbox.NetListener) (string, error) {
	s.mu.Lock()
	l, ok := s.listeners[sb.ID]
	s.mu.Unlock()
	if ok {
		select {
		case <-l.done:
		default:
			return l.addr, nil
		}
	}
	ln, err := nl.Listen(ctx, sb.Ref, s.cfg.GatewayListenAddr)
	if err != nil {
		return "", fmt.Errorf("open gateway listener in sandbox %s: %w", sb.ID, err)
	}
	id := sb.ID
	gw := s.gateway()
	mux := http.NewServeMux()
	mux.Handle(ApprovalPath, s.ApprovalHandler())
	mux.Handle(MCPProxyPath, s.MCPProxyHandler())
	mux.Handle("/", gw)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithValue(context.Background(), sandboxKey{}, id) },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	l = &gwListener{owner: sb.OwnerID, ln: ln, srv: srv, addr: ln.Addr().String(), done: make(chan struct{})}
	s.mu.Lock()
	select {
	case <-s.stopped:
		s.mu.Unlock()
		ln.Close()
		return "", errs.E(errs.Unavailable, "the run service is not running")
	default:
	}
	if old, ok := s.listeners[id]; ok {
		select {
		case <-old.done:
		default:
			// Lost a race with another Start; keep the first.
			s.mu.Unlock()
			ln.Close()
			return old.addr, nil
		}
	}
	s.listeners[id] = l
	s.mu.Unlock()
	// The goroutine is owned by Run's shutdown, which closes srv and waits on done.
	go func() {
		defer close(l.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Debug("gateway listener ended", "sandbox_id", id, "err", err)
		}
	}()
	return l.addr, nil
}

// execute runs one job to its end.
func (s *Service) execute(ctx context.Context, j *job) {
	log := s.log.With("run_id", j.run.ID, "sandbox_id", j.run.SandboxID)
	s.m.active.Inc()
	defer s.m.active.Dec()
	persist := context.WithoutCancel(ctx)

	j.run.Status, j.run.StartedAt = Running, s.now().UTC()
	if err := s.store.UpdateRun(persist, j.run); err != nil {
		// The final state, retried, supersedes this one.
		log.Warn("mark run running", "err", err)
	}
	creq := CommandRequest{
		Prompt: j.run.Prompt, Options: j.run.Options, ResumeSession: j.run.ResumedFrom,
		BaseURL: j.baseURL, APIKey: s.apiKey(j), Root: s.cfg.Root,
	}
	creq.MCPConfig = j.mcpConfig
	creq.StreamInput = j.stdin != nil
	if j.run.Options.asks() {
		creq.Ask = true
		s.startApprovals(j.run.ID)
		defer s.endApprovals(j.run.ID)
	}
	argv, env := s.cli.Command(creq)
	execCtx, cancelExec := context.WithCancel(ctx)
	defer cancelExec()
	j.mu.Lock()
	j.signals = make(chan sandbox.Signal, 4)
	j.cancelExec = cancelExec
	sigs := j.signals
	if j.cancelled {
		cancelExec() // cancelled before it started
	}
	j.mu.Unlock()

	pr, pw := io.Pipe()
	stderr := &tailBuffer{max: 8 << 10}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		s.readOutput(persist, j, pr, log)
	}()
	st, execErr := s.sbx.Exec(execCtx, j.run.OwnerID, j.run.SandboxID, sandbox.ExecRequest{
		Argv: argv, Env: env, Dir: cmp.Or(j.run.Options.Cwd, "/workspace"), Stdout: pw, Stderr: stderr, Signals: sigs,
		Stdin: stdinOf(j.stdin),
	})
	pw.Close()
	<-readDone

	j.mu.Lock()
	close(j.signals)
	j.signals = nil
	if j.killTimer != nil {
		j.killTimer.Stop()
	}
	cancelled := j.cancelled
	j.mu.Unlock()
	s.finish(persist, ctx.Err() != nil, j, st, execErr, cancelled, stderr.String(), log)
}

func (s *Service) apiKey(j *job) string {
	if s.cfg.Credentials == CredentialsDirect {
		return cmp.Or(s.cfg.UpstreamAPIKey, j.sandboxKey)
	}
	return j.token
}

// keyInSandbox reads the API key from the sandbox's env (direct mode with
// Config.KeyInSandbox): the run's events are redacted of it like of a key
// the server holds.
func (s *Service) keyInSandbox(ctx context.Context, sb *sandbox.Sandbox) (string, error) {
	var out bytes.Buffer
	st, err := s.sbx.Exec(ctx, sb.OwnerID, sb.ID, sandbox.ExecRequest{Argv: []string{"printenv", "ANTHROPIC_API_KEY"}, Stdout: &out, Stderr: io.Discard})
	if err != nil {
		return "", err
	}
	key := strings.TrimSpace(out.String())
	if st.Code != 0 || key == "" {
		return "", errs.E(errs.Unavailable, "direct credentials: sandbox %s has no ANTHROPIC_API_KEY (TECHBOSS_MODAL_SECRETS names the Modal secret that should hold it)", sb.ID)
	}
	return key, nil
}

// readLine reads one line without its newline. A line longer than max is
// cut to max bytes (the rest is discarded).
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) <= max {
			buf = append(buf, frag...)
		} else if len(buf) < max {
			buf = append(buf, frag[:max-len(buf)]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimRight(buf, "\r\n"), err
	}
}

// observe updates the job's view of the run from its events.
func (s *Service) observe(j *job, evs []Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, ev := range evs {
		switch ev.Type {
		case TypeStarted:
			var d StartedData
			if json.Unmarshal(ev.Data, &d) == nil {
				j.started = d
			}
		case TypeResult:
			var d ResultData
			if json.Unmarshal(ev.Data, &d) == nil {
				j.result = &d
			}
		case TypeError:
			var d ErrorData
			if json.Unmarshal(ev.Data, &d) == nil {
				j.sawError = d.Message
			}
		}
	}
}

// finish decides the final status, persists it, revokes the run token and
// closes the event log with a done event.
func (s *Service) finish(ctx context.Context, shutdown bool, j *job, st sandbox.ExitStatus, execErr error, cancelled bool, stderr string, log *slog.Logger) {
	// Each write is retried while the store is unreachable (see retry):
	// a run's outcome never depends on when the database answers. The
	// run's events go in first, so "done" means the whole log is stored.
	if err := s.hub.Flush(ctx, j.run.ID, s.hardStop); err != nil {
		log.Error("store the run's events", "err", err)
	}
	if err := s.flushUsage(ctx, j.run.ID, s.hardStop); err != nil {
		log.Error("store the run's usage", "err", err)
	}
	if err := s.retry(ctx, log, "revoke run token", func(ctx context.Context) error { return s.store.DeleteRunTokens(ctx, j.run.ID) }); err != nil {
		log.Error("revoke run token", "err", err)
	}
	var r Run
	err := s.retry(ctx, log, "reload run", func(ctx context.Context) (err error) {
		r, err = s.store.GetRun(ctx, j.run.ID) // picks up gateway usage totals
		return err
	})
	if err != nil {
		log.Error("reload run", "err", err)
		r = j.run
	}
	j.mu.Lock()
	started, res, sawErr, appendErr := j.started, j.result, j.sawError, j.appendError
	j.mu.Unlock()

	r.FinishedAt = s.now().UTC()
	if started.SessionID != "" {
		r.SessionID, r.Model = started.SessionID, started.Model
	}
	if execErr == nil {
		code := st.Code
		r.ExitCode = &code
	}
	if res != nil {
		r.NumTurns = res.NumTurns
		if res.SessionID != "" && r.SessionID == "" && res.NumTurns > 0 {
			r.SessionID = res.SessionID
		}
		if r.Usage.IsZero() && r.CostNanoUSD == 0 {
			// Direct mode (no gateway metering): the CLI's own totals.
			r.Usage, r.CostNanoUSD = res.Usage, int64(res.TotalCostUSD*1e9+0.5)
		}
	}
	switch {
	case cancelled:
		r.Status, r.Error = Cancelled, "cancelled"
	case shutdown:
		r.Status, r.Error = Interrupted, "the server shut down while the run was in progress"
	case execErr != nil:
		r.Status, r.Error = Failed, publicText(execErr)
	case appendErr != nil:
		r.Status, r.Error = Failed, "could not record the run's events"
	case res != nil && !res.IsError && st.Code == 0:
		r.Status, r.Error = Succeeded, ""
	case res != nil:
		r.Status = Failed
		r.Error = firstNonEmpty(strings.Join(res.Errors, "; "), res.Result, sawErr, res.Subtype)
	default:
		r.Status = Failed
		r.Error = firstNonEmpty(lastLine(stderr), sawErr, fmt.Sprintf("the agent exited with code %d and no result", st.Code))
		if st.Signal != "" {
			r.Error = "the agent was killed by " + st.Signal
		}
	}
	if err := s.retry(ctx, log, "persist final run", func(ctx context.Context) error { return s.store.UpdateRun(ctx, r) }); err != nil {
		log.Error("persist final run", "err", err)
	}
	s.emitRun(ctx, r)
	// The after-run work (the workspace snapshot) happens while the run
	// still counts as active, so "done" means the version exists and no
	// restore or new run can race it.
	if r.Status == Succeeded && r.Options.Deliver != nil && !shutdown {
		s.deliverRun(ctx, r, log)
	}
	if s.afterRun != nil && !shutdown {
		if err := s.afterRun(ctx, r); err != nil && !errors.Is(err, ErrSandboxGone) {
			s.snapshotFailed(ctx, r, err, log)
		}
	}
	// Forget the job before announcing the end, so a client reacting to
	// "done" (cancel, a new run) sees the run as finished.
	s.mu.Lock()
	delete(s.jobs, j.run.ID)
	s.mu.Unlock()
	done := DoneData{Status: r.Status, ExitCode: r.ExitCode, Error: r.Error}
	if _, err := s.hub.Append(ctx, r.ID, NewEvent(TypeDone, done, "")); err != nil {
		log.Error("append done event", "err", err)
	}
	s.hub.Close(r.ID)
	s.m.runs.WithLabelValues(string(r.Status)).Inc()
	log.Info("run finished", "status", r.Status, "exit_code", st.Code, "duration", r.FinishedAt.Sub(r.StartedAt))
}

// publicText is an error's public message, or a generic one.
func publicText(err error) string {
	if e, ok := errs.Public(err); ok {
		return e.Message
	}
	return "the agent could not be run in the sandbox"
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Cancel asks the owner's active run to stop: SIGINT now (the CLI writes
// its final result), SIGKILL after the grace period. The run ends as
// cancelled. A run served by another replica is asked through the feed.
// Like Start, it first waits for Run's start-up recovery (see
// awaitRecovery). ownerID "" skips the owner check (admins).
func (s *Service) Cancel(ctx context.Context, ownerID, runID string) (Run, error) {
	if err := s.awaitRecovery(ctx); err != nil {
		return Run{}, err
	}
	r, err := s.Get(ctx, ownerID, runID)
	if err != nil {
		return Run{}, err
	}
	if s.cancelLocal(runID) {
		return r, nil
	}
	if !r.Status.Active() {
		return r, errs.E(errs.Conflict, "run %s already finished (%s)", runID, r.Status)
	}
	if s.endStale(ctx, r, Cancelled, "cancelled (the run's agent process was gone)") {
		return s.Get(ctx, ownerID, runID)
	}
	if err := s.hub.SendCancel(ctx, runID); err != nil {
		if errors.Is(err, errNoFeed) {
			return r, errs.E(errs.Unavailable, "run %s is served by another server", runID)
		}
		return r, err
	}
	return r, nil
}

// cancelLocal cancels the run if this process runs it (see Cancel) and
// reports whether it does.
func (s *Service) cancelLocal(runID string) bool {
	s.mu.Lock()
	j, ok := s.jobs[runID]
	s.mu.Unlock()
	if !ok {
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cancelled {
		return true
	}
	j.cancelled = true
	if j.signals == nil {
		// Not started yet or already ending: stop the exec outright.
		if j.cancelExec != nil {
			j.cancelExec()
		}
		return true
	}
	select {
	case j.signals <- syscall.SIGINT:
	default:
	}
	cancelExec := j.cancelExec
	j.killTimer = time.AfterFunc(s.cfg.CancelGrace, func() {
		j.mu.Lock()
		if j.signals != nil {
			select {
			case j.signals <- syscall.SIGKILL:
			default:
			}
		}
		j.mu.Unlock()
		cancelExec()
	})
	return true
}

// Get returns a run. Another owner's run is errs.NotFound; ownerID ""
// skips the check (admins).
func (s *Service) Get(ctx context.Context, ownerID, runID string) (Run, error) {
	r, err := s.store.GetRun(ctx, runID)
	if err != nil {
		return Run{}, err
	}
	if ownerID != "" && r.OwnerID != ownerID {
		return Run{}, errs.E(errs.NotFound, "run not found")
	}
	return r, nil
}

// List returns the runs of the owner's sandbox, newest first.
func (s *Service) List(ctx context.Context, ownerID, sandboxID string, limit int) ([]Run, error) {
	if _, err := s.sbx.Get(ctx, ownerID, sandboxID); err != nil {
		return nil, err
	}
	return s.store.ListRuns(ctx, sandboxID, limit)
}

// Subscribe returns the run's events after seq `after` and, while it
// runs, the live feed (see Hub.Subscribe).
func (s *Service) Subscribe(ctx context.Context, ownerID, runID string, after int64) (*Subscription, error) {
	if _, err := s.Get(ctx, ownerID, runID); err != nil {
		return nil, err
	}
	return s.hub.Subscribe(ctx, runID, after)
}

// Usage summarises metered usage.
func (s *Service) Usage(ctx context.Context, q UsageQuery) ([]UsageGroup, error) {
	return s.store.UsageSummary(ctx, q)
}

// HashToken is the stored form of a run token.
func HashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// AuthenticateRunToken resolves a run-scoped gateway token. It is valid
// only while its run is active and, on a sandbox's own gateway listener,
// only for that sandbox.
func (s *Service) AuthenticateRunToken(ctx context.Context, token string) (Principal, error) {
	deny := errs.E(errs.Unauthenticated, "invalid or expired run token")
	if !strings.HasPrefix(token, "tbr_") || len(token) > 200 {
		return Principal{}, deny
	}
	if p, ok := s.localRunToken(ctx, token); ok {
		// A run of this process: no store round trip, so the agent's
		// model calls go on while the database is unreachable.
		return p, nil
	}
	t, err := s.store.RunToken(ctx, HashToken(token))
	if errs.KindOf(err) == errs.NotFound {
		return Principal{}, deny
	}
	if err != nil {
		return Principal{}, err
	}
	if bound, ok := BoundSandbox(ctx); ok && bound != t.SandboxID {
		return Principal{}, deny
	}
	r, err := s.store.GetRun(ctx, t.RunID)
	if err != nil || !r.Status.Active() || r.OwnerID != t.UserID || r.SandboxID != t.SandboxID {
		return Principal{}, deny
	}
	return Principal{UserID: t.UserID, SandboxID: t.SandboxID, RunID: t.RunID}, nil
}

// RecordUsage stores one metered LLM call and, for a run's call, adds it
// to the run's totals and appends a usage event to its log. While the
// database is unreachable the record waits in a bounded queue (then in the
// spool at shutdown) and is stored once it is back: nothing is lost.
func (s *Service) RecordUsage(ctx context.Context, rec UsageRecord) error {
	if rec.ID == "" {
		rec.ID = "use_" + randHex(12)
	}
	if rec.Time.IsZero() {
		rec.Time = s.now().UTC()
	}
	// Stored with the run's totals in one go; while the database is
	// unreachable, queued and retried (see usageQueue).
	if err := s.storeUsage(ctx, rec); err != nil {
		return err
	}
	s.m.tokens.WithLabelValues("input").Add(float64(rec.Usage.InputTokens))
	s.m.tokens.WithLabelValues("output").Add(float64(rec.Usage.OutputTokens))
	s.m.tokens.WithLabelValues("cache_read").Add(float64(rec.Usage.CacheReadTokens))
	s.m.tokens.WithLabelValues("cache_creation").Add(float64(rec.Usage.CacheCreationTokens))
	s.m.cost.Add(float64(rec.CostNanoUSD) / 1e9)
	if rec.RunID == "" {
		return nil
	}
	if s.hub.Live(rec.RunID) {
		ev := NewEvent(TypeUsage, UsageData{Source: "gateway", Model: rec.Model, Usage: rec.Usage, CostUSD: float64(rec.CostNanoUSD) / 1e9}, "")
		if _, err := s.hub.Append(ctx, rec.RunID, ev); err != nil {
			s.log.Debug("usage event after run end", "run_id", rec.RunID, "err", err)
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// tailBuffer keeps the last max bytes written (the CLI's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// retry calls fn until it succeeds, fails for good (the record is gone or
// ended elsewhere: errs.NotFound, errs.Conflict), or the service's
// shutdown grace runs out, waiting with backoff between attempts. It logs
// once when the store starts failing.
func (s *Service) retry(ctx context.Context, log *slog.Logger, what string, fn func(ctx context.Context) error) error {
	wait := 50 * time.Millisecond
	warned := false
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx)
		cancel()
		if k := errs.KindOf(err); err == nil || k == errs.NotFound || k == errs.Conflict {
			if warned && err == nil {
				log.Info(what + ": the store answered again")
			}
			return err
		}
		if !warned {
			log.Warn(what+": the store failed; retrying", "err", err)
			warned = true
		}
		timer := time.NewTimer(wait)
		select {
		case <-s.hardStop:
			timer.Stop()
			return err
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		wait = min(2*wait, s.hub.dur.RetryMax)
	}
}

// endStale ends an active run that this process should be running but
// is not (its job is gone: the record is stale), or that no process can
// be running (a single-process server whose run belongs to a previous
// process), with status and reason and a done event. It reports whether
// it ended the run; a run some live process runs is left alone.
func (s *Service) endStale(ctx context.Context, r Run, status Status, reason string) bool {
	s.mu.Lock()
	_, local := s.jobs[r.ID]
	s.mu.Unlock()
	if local || s.hub.Live(r.ID) || (r.Replica != s.replica && s.hub.feed != nil) {
		return false
	}
	r.Status, r.Error, r.FinishedAt = status, reason, s.now().UTC()
	if err := s.store.UpdateRun(ctx, r); err != nil {
		s.log.Warn("end stale run", "run_id", r.ID, "err", err)
		return false
	}
	_ = s.store.DeleteRunTokens(ctx, r.ID)
	s.hub.Open(r.ID, r.LastSeq)
	if _, err := s.hub.Append(ctx, r.ID, NewEvent(TypeDone, DoneData{Status: status, Error: reason}, "")); err != nil {
		s.log.Error("close stale run", "run_id", r.ID, "err", err)
	}
	s.hub.Close(r.ID)
	s.m.runs.WithLabelValues(string(status)).Inc()
	s.log.Warn("ended a stale run", "run_id", r.ID, "status", status)
	return true
}

// localRunToken resolves a run token of a run this process runs.
func (s *Service) localRunToken(ctx context.Context, token string) (Principal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.jobs {
		if j.token == "" || !hmacEqual(j.token, token) {
			continue
		}
		if bound, ok := BoundSandbox(ctx); ok && bound != j.run.SandboxID {
			return Principal{}, false
		}
		return Principal{UserID: j.run.OwnerID, SandboxID: j.run.SandboxID, RunID: j.run.ID}, true
	}
	return Principal{}, false
}

func hmacEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// stdinOf is the run's stdin: its stream-json prompt, or none.
func stdinOf(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}
