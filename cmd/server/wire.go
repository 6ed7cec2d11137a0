package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/blob"
	blobfs "github.com/techbossai/techboss/internal/blob/fs"
	blobs3 "github.com/techbossai/techboss/internal/blob/s3"
	"github.com/techbossai/techboss/internal/config"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/llm"
	llmanthropic "github.com/techbossai/techboss/internal/llm/anthropic"
	"github.com/techbossai/techboss/internal/llm/bedrock"
	"github.com/techbossai/techboss/internal/llm/gateway"
	llmopenai "github.com/techbossai/techboss/internal/llm/openai"
	"github.com/techbossai/techboss/internal/repo"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/local/netpolicy"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
	"github.com/techbossai/techboss/internal/webhooks"
)

// Where the host's Claude Code CLI installs (glibc and musl builds) and
// the launcher that picks one are mounted read-only in local sandboxes.
const (
	claudeMount     = "/opt/techboss/claude"
	claudeMuslMount = "/opt/techboss/claude-musl"
	launcherMount   = "/opt/techboss/bin"
)

// Where `make run` installs the CLI (scripts/deps.sh).
var (
	defaultClaudeBin     = filepath.Join(".tools", "claude", "node_modules", ".bin", "claude")
	defaultClaudeMuslBin = filepath.Join(".tools", "claude-musl", "node_modules", "@anthropic-ai", "claude-code-linux-x64-musl", "claude")
)

// writeClaudeLauncher writes the `claude` launcher runs start in a local
// sandbox: the image's own claude if it has one on PATH (the original
// design installs it with dockerfile_commands), else the mounted -musl
// build on musl images (Alpine), else the mounted glibc build. It returns
// the directory to mount.
func writeClaudeLauncher(dir, glibc, musl string) (string, error) {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Written by the TechBoss server: picks the Claude Code CLI for this image.\n")
	b.WriteString("IFS=:\nfor d in $PATH; do\n\tif [ -x \"$d/claude\" ]; then exec \"$d/claude\" \"$@\"; fi\ndone\nunset IFS\n")
	if musl != "" {
		fmt.Fprintf(&b, "if [ -e /lib/ld-musl-x86_64.so.1 ]; then exec %s \"$@\"; fi\n", musl)
	}
	if glibc != "" {
		fmt.Fprintf(&b, "exec %s \"$@\"\n", glibc)
	} else {
		b.WriteString("echo 'claude: the Claude Code CLI is not installed on this server or in this image' >&2\nexit 127\n")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("claude launcher: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("claude launcher: %w", err)
	}
	tmp := filepath.Join(abs, ".claude.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o755); err != nil {
		return "", fmt.Errorf("claude launcher: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(abs, "claude")); err != nil {
		return "", fmt.Errorf("claude launcher: %w", err)
	}
	return abs, nil
}

// domains is the wired domain graph: what the HTTP server serves and the
// long-lived parts run() starts under its errgroup.
type domains struct {
	sandboxes *sandbox.Manager
	snapshots *snapshot.Service
	runs      *agent.Service
	gateway   http.Handler
	llm       *httpapi.LLMDeps
	secrets   *secrets.Store
	previews  *sandbox.PreviewLinks
	repos     *repo.Service
	broker    *repo.Broker
	webhooks  *webhooks.Service
	// ready are the checks /readyz runs besides the database's.
	ready []httpapi.ReadyCheck
	// runners are started by run() and return when ctx is done.
	runners []func(ctx context.Context) error
	// closers release resources after the runners stopped.
	closers []func()
}

// defaultRunsc is where `TECHBOSS_LOCAL_RUNTIME=runsc scripts/deps.sh run`
// builds gVisor's runsc.
const defaultRunsc = ".tools/bin/runsc"

// runscBin resolves TECHBOSS_RUNSC_BIN: the setting, else the checkout's
// build, else runsc on PATH.
func runscBin(set string) string {
	if set != "" {
		return set
	}
	if fi, err := os.Stat(defaultRunsc); err == nil && !fi.IsDir() {
		if abs, err := filepath.Abs(defaultRunsc); err == nil {
			return abs
		}
	}
	return "runsc"
}

// wire builds sandboxes (driver + Manager), snapshots, agent runs, the LLM
// gateway and /v1/chat from the configuration.
func wire(ctx context.Context, cfg *config.Config, getenv func(string) string, log *slog.Logger, reg *prometheus.Registry, db *store.DB, authSvc *auth.Service) (_ *domains, err error) {
	d := &domains{}
	// A wiring that fails releases what it made so far (the local driver's
	// mounts and loops, a Modal client).
	defer func() {
		if err != nil {
			for _, c := range d.closers {
				c()
			}
		}
	}()
	host, err := hostID(cfg.DataDir)
	if err != nil {
		return nil, err
	}

	// Sandbox drivers.
	drivers := map[string]sandbox.Driver{}
	var mounts []sandbox.Mount
	claudeBin := "claude" // on the image's PATH unless a host install is mounted
	operator, err := netpolicy.ParseOperatorAllow(cfg.NetworkAllow)
	if err != nil {
		return nil, fmt.Errorf("config: invalid TECHBOSS_NETWORK_ALLOW: %w", err)
	}
	switch cfg.SandboxDriver {
	case "local":
		initBin := cfg.SandboxInit
		if initBin == "" {
			p, err := local.FindInitBinary()
			if err != nil {
				return nil, fmt.Errorf("config: TECHBOSS_SANDBOX_INIT: %w", err)
			}
			initBin = p
		}
		drv, err := local.New(local.Options{
			NetworkOperator: operator,
			DataDir:         filepath.Join(cfg.DataDir, "sandboxes"), InitBinary: initBin,
			Logger: log.With("component", "sandbox/local"), Metrics: reg,
			IDs:           sandbox.IDMap{HostBase: uint32(cfg.SandboxUIDBase), Size: 65536},
			DefaultDiskMB: cfg.DefaultDiskMB, WarmPool: cfg.WarmPool,
			Runtime:       cfg.LocalRuntime,
			Runsc:         runscBin(cfg.RunscBin),
			RunscPlatform: cfg.RunscPlatform,
		})
		if err != nil {
			return nil, fmt.Errorf("local sandbox driver: %w", err)
		}
		drivers["local"] = drv
		d.closers = append(d.closers, func() { _ = drv.Close() })
		var glibc, musl string
		if prefix, rel, ok := claudeInstall(cfg.ClaudeBin, defaultClaudeBin); ok {
			mounts = append(mounts, sandbox.Mount{Source: prefix, Target: claudeMount, ReadOnly: true})
			glibc = filepath.Join(claudeMount, rel)
		} else {
			log.Warn("the Claude Code CLI was not found on the host; agent runs need `claude` on the image's PATH (run `make run` to install it, or set TECHBOSS_CLAUDE_BIN)")
		}
		if prefix, rel, ok := claudeInstall(cfg.ClaudeMuslBin, defaultClaudeMuslBin); ok {
			mounts = append(mounts, sandbox.Mount{Source: prefix, Target: claudeMuslMount, ReadOnly: true})
			musl = filepath.Join(claudeMuslMount, rel)
		}
		dir, err := writeClaudeLauncher(filepath.Join(cfg.DataDir, "tools", "bin"), glibc, musl)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, sandbox.Mount{Source: dir, Target: launcherMount, ReadOnly: true})
		claudeBin = filepath.Join(launcherMount, "claude")
	case "modal":
		var allowed []string
		if u, err := url.Parse(cfg.PublicURL); err == nil && u.Hostname() != "" {
			allowed = append(allowed, u.Hostname())
		}
		drv, err := modal.New(ctx, modal.Options{
			TokenID: cfg.ModalTokenID, TokenSecret: string(cfg.ModalTokenSecret),
			AppName: cfg.ModalApp, Environment: cfg.ModalEnvironment,
			AllowedDomains: allowed, Logger: log.With("component", "sandbox/modal"),
			Secrets: cfg.ModalSecrets, RegistrySecret: cfg.ModalRegistrySecret,
		})
		if err != nil {
			return nil, fmt.Errorf("modal sandbox driver: %w", err)
		}
		drivers["modal"] = drv
		d.closers = append(d.closers, func() { drv.Close() })
	default:
		return nil, fmt.Errorf("config: TECHBOSS_SANDBOX_DRIVER=%q is not available", cfg.SandboxDriver)
	}

	// Blob stores and snapshots.
	fsStore, err := blobfs.New(filepath.Join(cfg.DataDir, "blobs"), blobfs.Options{NoSync: true}) // snapshots Sync before each manifest
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	var buckets snapshot.Buckets
	defaultBucket := ""
	if cfg.BlobStore == "s3" || cfg.S3Endpoint != "" || cfg.S3Bucket != "" {
		op, err := blobs3.NewOpener(ctx, blobs3.Config{
			Endpoint: cfg.S3Endpoint, Region: cfg.S3Region, ForcePathStyle: cfg.S3ForcePathStyle,
		})
		if err != nil {
			return nil, fmt.Errorf("s3: %w", err)
		}
		buckets = op
		if cfg.BlobStore == "s3" {
			defaultBucket = cfg.S3Bucket
			d.ready = append(d.ready, httpapi.ReadyCheck{Name: "blob_store", Check: func(ctx context.Context) error {
				return op.Check(ctx, defaultBucket)
			}})
		}
		if cfg.S3SweepInterval > 0 {
			sw := blobs3.NewSweeper(op, blobs3.SweeperConfig{Scopes: sweepScopes(db), Interval: cfg.S3SweepInterval, Logger: log.With("component", "s3sweep")})
			d.runners = append(d.runners, sw.Run)
		}
	}
	snaps, err := snapshot.NewService(snapshot.ServiceDeps{
		Snapshotter:  snapshot.New(snapshot.Config{Logger: log.With("component", "snapshot"), Metrics: snapshot.NewMetrics(reg)}),
		Index:        db,
		DefaultStore: blob.Store(fsStore),
		Buckets:      buckets, DefaultBucket: defaultBucket,
		Drivers:     drivers,
		OnTerminate: cfg.SnapshotOnStop,
		Retention:   snapshot.Retention{KeepLast: cfg.SnapshotKeepLast, KeepFor: cfg.SnapshotKeepFor},
		Mirror:      cfg.SnapshotMirror,
		Logger:      log.With("component", "snapshot"),
	})
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	d.snapshots = snaps

	// Agent runs. The Manager's terminate hook also needs the run service
	// (to close the sandbox's gateway listener), so the hooks are composed
	// once both exist.
	key, err := secrets.LoadKey(cfg.SecretKey.Reveal(), cfg.DataDir)
	if err != nil {
		return nil, err
	}
	secretStore, err := secrets.New(db, key)
	if err != nil {
		return nil, err
	}
	d.secrets = secretStore
	hookSvc, err := webhooks.New(db, key, webhooks.Options{Allow: cfg.WebhookAllow, RetryBase: cfg.WebhookRetry}, log.With("component", "webhooks"))
	if err != nil {
		return nil, err
	}
	d.webhooks = hookSvc
	hooks := snaps.Hooks()
	var runs *agent.Service
	var repos *repo.Service // clones at create (after a snapshot restore); set once runs exists
	limits := sandbox.DefaultLimits()
	limits.MaxRunningPerUser = cfg.MaxSandboxesPerUser
	limits.DefaultDiskMB = cfg.DefaultDiskMB
	limits.PTYGrace = cfg.PTYGrace
	limits.MaxDiskMB = max(limits.MaxDiskMB, cfg.DefaultDiskMB)
	mgr, err := sandbox.NewManager(sandbox.Deps{
		Repo: db, Drivers: drivers, DefaultDriver: cfg.SandboxDriver, Limits: limits, Mounts: mounts,
		Host: host, HostTimeout: replicaTimeout(cfg, db), RevealSecret: secretStore.RevealRef(teamSecretUser(db)), Events: hookSvc,
		Hooks: sandbox.Hooks{
			AfterCreate: func(ctx context.Context, sb *sandbox.Sandbox) error {
				if hooks.AfterCreate != nil {
					if err := hooks.AfterCreate(ctx, sb); err != nil {
						return err
					}
				}
				if repos != nil {
					return repos.AfterCreate(ctx, sb)
				}
				return nil
			},
			BeforeTerminate: func(ctx context.Context, sb *sandbox.Sandbox) error {
				var err error
				if hooks.BeforeTerminate != nil {
					// The final snapshot: retried, counted and recorded on
					// the sandbox's last run by the run service.
					take := func(ctx context.Context) error { return hooks.BeforeTerminate(ctx, sb) }
					if runs != nil {
						err = runs.SnapshotBeforeStop(ctx, sb.ID, take)
					} else {
						err = take(ctx)
					}
				}
				if runs != nil {
					runs.ReleaseSandbox(sb.ID)
				}
				return err
			},
		},
		Logger: log.With("component", "sandbox"), Metrics: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox manager: %w", err)
	}
	d.sandboxes = mgr
	// Share-link tokens are signed with a key derived from the secret key,
	// so every replica checks every replica's links.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("techboss preview links"))
	if d.previews, err = sandbox.NewPreviewLinks(mgr, db, mac.Sum(nil), time.Now); err != nil {
		return nil, err
	}

	llmCfg, err := llm.LoadConfig(getenv)
	if err != nil {
		return nil, err
	}
	llmCfg.FallbackPrice = gateway.DefaultPrice // list prices by model family, so budgets count every call
	registry, err := llm.NewRegistry(ctx, llmCfg, map[string]llm.Factory{
		llm.TypeAnthropic: llmanthropic.Factory(nil),
		llm.TypeOpenAI:    llmopenai.Factory(nil),
		llm.TypeBedrock:   bedrock.Factory(),
	})
	if err != nil {
		return nil, err
	}
	budgets := llm.NewBudgets(llmCfg.Budget, db, db, time.Now)

	var afterRun func(ctx context.Context, r agent.Run) error
	if cfg.SnapshotAfterRun {
		// A failure is recorded on the run and retried by the run service
		// until a snapshot is stored or the sandbox is gone.
		afterRun = func(ctx context.Context, r agent.Run) error {
			sb, err := mgr.Get(ctx, r.OwnerID, r.SandboxID)
			if errs.KindOf(err) == errs.NotFound || (err == nil && sb.State != sandbox.Running) {
				return agent.ErrSandboxGone
			}
			if err != nil {
				return err
			}
			if _, err := snaps.Take(ctx, sb, snapshot.TriggerRun, r.ID); err != nil {
				return fmt.Errorf("snapshot sandbox %s after run %s: %w", r.SandboxID, r.ID, err)
			}
			return nil
		}
	}
	runs, err = agent.NewService(agent.Config{
		Credentials: cfg.ClaudeCredentials, PublicURL: cfg.PublicURL, MCPAllow: allowPrefixes(operator),
		UpstreamBaseURL: getenv("ANTHROPIC_BASE_URL"), UpstreamAPIKey: string(cfg.AnthropicAPIKey),
		KeyInSandbox: cfg.SandboxDriver == "modal" && len(cfg.ModalSecrets) > 0,
		Root:         cfg.SandboxDriver == "local", ReplicaTimeout: replicaTimeout(cfg, db), Host: host,
		Durability: agent.Durability{
			MemoryBytes: runEventsMemory(cfg.RunEventsMemMB), SpoolBytes: int64(cfg.RunEventsSpoolMB) << 20,
			SpoolDir: filepath.Join(cfg.DataDir, "run-events"),
			// Part of the shutdown budget for final writes, part for the
			// events still waiting, the rest for streams and the listener.
			DrainTimeout: cfg.ShutdownTimeout / 3,
		},
	}, agent.Deps{
		Store: db, CLI: claude.New(claude.Config{Bin: claudeBin, Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": strconv.Itoa(cfg.ClaudeMaxRetries)}}), Sandboxes: mgr,
		Logger: log.With("component", "agent"), Metrics: reg, AfterRun: afterRun, Feed: db.RunFeed(), Secrets: agent.RevealFunc(secretStore.RevealRef(teamSecretUser(db))), Events: hookSvc,
		BeforeRun: func(ctx context.Context, sb *sandbox.Sandbox) error {
			if repos == nil {
				return nil
			}
			return repos.BeforeRun(ctx, sb)
		},
		Deliver: func(ctx context.Context, r agent.Run) (agent.DeliveryData, error) {
			return deliverRun(ctx, repos, db, cfg.PublicURL, r)
		},
	})
	if err != nil {
		return nil, err
	}
	if llmCfg.Gateway.AnthropicBaseURL == "" {
		// The server's own ANTHROPIC_BASE_URL names the gateway's upstream
		// (a proxy, or a local model server speaking the Messages API).
		llmCfg.Gateway.AnthropicBaseURL = getenv("ANTHROPIC_BASE_URL")
	}
	upstream, err := gateway.UpstreamFromConfig(ctx, llmCfg.Gateway)
	if err != nil {
		return nil, err
	}
	gw, err := gateway.New(gateway.Config{
		Upstream: upstream, RunTokens: runs, Recorder: runs,
		Users: func(ctx context.Context, tok string) (string, error) {
			u, err := authSvc.Authenticate(ctx, tok)
			if err != nil {
				return "", err
			}
			return u.ID, nil
		},
		Price: func(model string) (llm.Price, bool) {
			if p, ok := registry.PriceOf(model); ok {
				return p, true
			}
			return gateway.DefaultPrice(model) // list prices by model family
		},
		Admit:        budgets.Check,
		AdmitSandbox: teams.BudgetCheck(db, nil),
		Logger:       log.With("component", "gateway"), Metrics: reg,
	})
	if err != nil {
		return nil, err
	}
	// One handler for every gateway protocol, served on the API listener and
	// on in-sandbox listeners: Claude Code speaks Anthropic, Codex-style
	// agents speak OpenAI.
	gwMux := http.NewServeMux()
	gwMux.Handle("/llm/anthropic", gw)
	gwMux.Handle("/llm/anthropic/", gw)
	gwMux.Handle(agent.ApprovalPath, runs.ApprovalHandler())
	gwMux.Handle(agent.MCPProxyPath, runs.MCPProxyHandler())
	gwMux.Handle(gateway.OpenAIPrefix+"/", gateway.NewOpenAI(gw, "openai", llmCfg.Gateway.OpenAIBaseURL, llmCfg.Gateway.OpenAIKey, nil))
	broker, err := repo.NewBroker(repo.BrokerConfig{
		Lookup: db.GetSandbox, Reveal: secretStore.RevealRef(teamSecretUser(db)), Bound: agent.BoundSandbox,
		Key: brokerKey(key), Allow: allowPrefixes(operator), Logger: log.With("component", "git"),
		SecretUpdated: func(ctx context.Context, ownerID, name string) (time.Time, error) {
			// A team's secret ("team:<team>/<name>", secrets.RevealRef):
			// rewriting or deleting it revokes grants as a user's does.
			if rest, ok := strings.CutPrefix(name, "team:"); ok {
				team, n, _ := strings.Cut(rest, "/")
				ownerID, name = secrets.TeamOwner(team), n
			}
			list, err := secretStore.List(ctx, ownerID)
			if err != nil {
				return time.Time{}, err
			}
			for _, s := range list {
				if s.Name == name {
					return s.UpdatedAt, nil
				}
			}
			return time.Time{}, errs.E(errs.NotFound, "no secret %q", name)
		},
		GrantTTL: cfg.GitGrantTTL,
	})
	if err != nil {
		return nil, err
	}
	gwMux.Handle(repo.BrokerPrefix, broker)
	d.closers = append(d.closers, broker.Close)
	repos = repo.NewService(repo.Deps{Broker: broker, Sandboxes: mgr, GatewayURL: runs.SandboxGatewayURL, Logger: log.With("component", "git")})
	d.repos, d.broker = repos, broker
	runs.SetGateway(gwMux)
	d.runs, d.gateway = runs, gwMux
	d.llm = &httpapi.LLMDeps{Registry: registry, Budgets: budgets, Recorder: runs}

	if err := mgr.Reconcile(ctx); err != nil {
		return nil, fmt.Errorf("reconcile sandboxes: %w", err)
	}
	d.runners = append(d.runners, mgr.Run, runs.Run, hookSvc.Run)
	return d, nil
}

// claudeInstall finds a host install of the Claude Code CLI: the npm
// prefix to mount (the directory holding node_modules) and the CLI's path
// relative to it. bin is the configured path, or "" for def.
func claudeInstall(bin, def string) (prefix, rel string, ok bool) {
	if bin == "" {
		bin = def
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", "", false
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", "", false
	}
	// The prefix is the directory above the outermost node_modules, so the
	// native package (a sibling under node_modules) comes along.
	i := strings.Index(real, string(filepath.Separator)+"node_modules"+string(filepath.Separator))
	if i < 0 {
		return filepath.Dir(real), filepath.Base(real), true
	}
	prefix = real[:i]
	rel, err = filepath.Rel(prefix, real)
	if err != nil {
		return "", "", false
	}
	if _, err := os.Stat(real); err != nil {
		return "", "", false
	}
	return prefix, rel, true
}

// replicaTimeout is agent.Config.ReplicaTimeout: on PostgreSQL several
// replicas may share the database, and a replica unseen for
// TECHBOSS_REPLICA_TIMEOUT is taken for dead (its runs are interrupted);
// on SQLite this process is the only one.
func replicaTimeout(cfg *config.Config, db *store.DB) time.Duration {
	if db.Dialect() == store.Postgres {
		return cfg.ReplicaTimeout
	}
	return 0
}

// hostID names this machine's data directory for the other replicas (see
// sandbox.Deps.Host): a random name kept in <data dir>/host-id, so it
// survives restarts.
func hostID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "host-id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "host_" + hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", p, err)
	}
	return id, nil
}

// sweepScopes is where the S3 sweeper looks: every bucket prefix snapshots
// were written under.
func sweepScopes(db *store.DB) func(ctx context.Context) ([]blobs3.Scope, error) {
	return func(ctx context.Context) ([]blobs3.Scope, error) {
		locs, err := db.SnapshotLocations(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]blobs3.Scope, len(locs))
		for i, l := range locs {
			out[i] = blobs3.Scope{Bucket: l.Bucket, Prefix: l.Prefix}
		}
		return out, nil
	}
}

// runEventsMemory is the in-memory bound of run events waiting for the
// database. 0 MiB (the default) keeps none there: every waiting event goes
// to the spool at once, where a kill -9 of the server does not lose it.
func runEventsMemory(mb int) int64 {
	if mb <= 0 {
		return 1 // no event fits
	}
	return int64(mb) << 20
}

// brokerKey derives the git broker's token key from the secret store's
// key, so sandbox tokens written into clones survive restarts.
func brokerKey(secretKey []byte) []byte {
	m := hmac.New(sha256.New, secretKey)
	m.Write([]byte("techboss git broker token key"))
	return m.Sum(nil)
}

// deliverRun carries out a succeeded run's deliver option: commit as the
// run's owner, push, and open a pull request whose body links the run.
func deliverRun(ctx context.Context, repos *repo.Service, db *store.DB, publicURL string, r agent.Run) (agent.DeliveryData, error) {
	d := r.Options.Deliver
	if repos == nil || d == nil {
		return agent.DeliveryData{}, errs.E(errs.Unavailable, "repositories are not configured on this server")
	}
	title := d.Title
	if title == "" {
		title, _, _ = strings.Cut(strings.TrimSpace(r.Prompt), "\n")
		if len(title) > 72 {
			title = title[:69] + "..."
		}
	}
	email := ""
	if u, err := db.UserByID(ctx, r.OwnerID); err == nil {
		email = u.Email
	}
	transcript := strings.TrimSuffix(publicURL, "/") + "/runs/" + r.ID + "/events"
	body := fmt.Sprintf("Opened by TechBoss AI run `%s` in sandbox `%s`.\n\nTranscript: %s\n\nPrompt:\n\n> %s\n",
		r.ID, r.SandboxID, transcript, strings.ReplaceAll(strings.TrimSpace(r.Prompt), "\n", "\n> "))
	res, err := repos.Deliver(ctx, r.OwnerID, r.SandboxID, repo.DeliverRequest{
		Repo: d.Repo, Branch: d.Branch, PullRequest: d.PullRequest, Base: d.Base,
		Message: title + "\n\nTechBoss AI run " + r.ID, Title: title, Body: body, AuthorEmail: email,
	})
	out := agent.DeliveryData{Branch: d.Branch}
	if res != nil {
		out.Commit, out.PullRequestURL, out.NothingChanged = res.Commit, res.PullRequestURL, res.NothingChanged
	}
	return out, err
}

// allowPrefixes are the address ranges of the operator's allow rules
// (TECHBOSS_NETWORK_ALLOW), for the remote MCP proxy, which checks
// addresses, not ports.
func allowPrefixes(rules []netpolicy.Rule) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rules {
		if r.Host == "" && r.Prefix.IsValid() {
			out = append(out, r.Prefix)
		}
	}
	return out
}

// teamSecretUser reports whether a user may use a team's secrets in their
// sandboxes (secrets.RevealRef): team owners and members, checked at each
// use, so leaving the team ends it.
func teamSecretUser(db *store.DB) func(ctx context.Context, teamID, userID string) (bool, error) {
	return func(ctx context.Context, teamID, userID string) (bool, error) {
		r, err := db.MemberRole(ctx, teamID, userID)
		return r == teams.RoleOwner || r == teams.RoleMember, err
	}
}
