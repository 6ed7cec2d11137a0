// Package config is the server's configuration: one Config read from the
// environment (flags mirror every variable and win over it), validated at
// start with one clear line naming any bad setting.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/auth"
)

// Config is every setting of the server. Add a field and one line in
// settings(); put cross-field checks in Validate.
type Config struct {
	Host             string        // TECHBOSS_HOST: listen address host ("" = all interfaces)
	Port             int           // PORT
	DataDir          string        // TECHBOSS_DATA_DIR
	DatabaseURL      string        // DATABASE_URL (default: SQLite at DataDir/techboss.db)
	LogLevel         slog.Level    // TECHBOSS_LOG_LEVEL
	PublicURL        string        // TECHBOSS_PUBLIC_URL
	SecureCookies    string        // TECHBOSS_SECURE_COOKIES: auto | true | false
	TrustedOrigins   []string      // TECHBOSS_TRUSTED_ORIGINS
	SessionTTL       time.Duration // TECHBOSS_SESSION_TTL
	AuditKeep        time.Duration // TECHBOSS_AUDIT_KEEP: how long audit entries are kept (0: forever)
	ShutdownTimeout  time.Duration // TECHBOSS_SHUTDOWN_TIMEOUT
	ReplicaTimeout   time.Duration // TECHBOSS_REPLICA_TIMEOUT (PostgreSQL: several replicas)
	RunEventsMemMB   int           // TECHBOSS_RUN_EVENTS_MEMORY_MB: run events waiting in memory for the database
	RunEventsSpoolMB int           // TECHBOSS_RUN_EVENTS_SPOOL_MB: beyond that, in spool files under the data dir

	TrustedProxies []netip.Prefix // TECHBOSS_TRUSTED_PROXIES: peers whose X-Forwarded-For is believed

	WebhookAllow []netip.Prefix // TECHBOSS_WEBHOOK_ALLOW: local or private CIDRs webhooks may be delivered to
	WebhookRetry time.Duration  // TECHBOSS_WEBHOOK_RETRY: wait after a delivery's first failed attempt (doubling)

	AdminEmail    string      // TECHBOSS_ADMIN_EMAIL
	AdminPassword auth.Secret // TECHBOSS_ADMIN_PASSWORD

	SandboxDriver     string // TECHBOSS_SANDBOX_DRIVER: local | modal | docker
	BlobStore         string // TECHBOSS_BLOB_STORE: fs | s3
	ClaudeCredentials string // TECHBOSS_CLAUDE_CREDENTIALS: gateway | direct

	S3Endpoint       string // S3_ENDPOINT
	S3ForcePathStyle bool   // S3_FORCE_PATH_STYLE
	S3Bucket         string // S3_BUCKET
	S3Region         string // S3_REGION (else the AWS default chain's region)
	// S3SweepInterval is how often unfinished multipart uploads of ours are
	// looked for and aborted (TECHBOSS_S3_SWEEP_INTERVAL; 0 turns the sweeper off).
	S3SweepInterval time.Duration

	ClaudeBin           string        // TECHBOSS_CLAUDE_BIN: host path of the Claude Code CLI mounted into sandboxes
	ClaudeMaxRetries    int           // TECHBOSS_CLAUDE_MAX_RETRIES: the CLI's retries of a failed model call
	SecretKey           auth.Secret   // TECHBOSS_SECRET_KEY: seals users' secrets (32 bytes, hex or base64)
	ClaudeMuslBin       string        // TECHBOSS_CLAUDE_MUSL_BIN: the CLI's -musl build, for musl images
	SandboxInit         string        // TECHBOSS_SANDBOX_INIT: the static techboss-sandbox-init helper
	MaxSandboxesPerUser int           // TECHBOSS_MAX_SANDBOXES_PER_USER
	SandboxUIDBase      int           // TECHBOSS_SANDBOX_UID_BASE: host uid/gid of a local sandbox's uid 0 (65,536 ids from it)
	DefaultDiskMB       int           // TECHBOSS_DEFAULT_DISK_MB: a sandbox's disk when its spec names none
	WarmPool            int           // TECHBOSS_WARM_POOL: started local sandboxes kept ready per recent spec
	LocalRuntime        string        // TECHBOSS_LOCAL_RUNTIME: bwrap | runsc (gVisor)
	RunscBin            string        // TECHBOSS_RUNSC_BIN: gVisor's runsc (default ./.tools/bin/runsc, then PATH)
	RunscPlatform       string        // TECHBOSS_RUNSC_PLATFORM: systrap | ptrace
	NetworkAllow        []string      // TECHBOSS_NETWORK_ALLOW: private CIDRs sandboxes with network may reach
	SnapshotAfterRun    bool          // TECHBOSS_SNAPSHOT_AFTER_RUN
	SnapshotOnStop      bool          // TECHBOSS_SNAPSHOT_ON_STOP: before terminate and idle stop
	SnapshotKeepLast    int           // TECHBOSS_SNAPSHOT_KEEP_LAST: versions kept per sandbox (0: no count limit)
	SnapshotKeepFor     time.Duration // TECHBOSS_SNAPSHOT_KEEP_FOR: versions younger than this are kept (0: no age limit)
	SnapshotMirror      bool          // TECHBOSS_SNAPSHOT_MIRROR: also keep the latest files as plain objects
	PreviewDomain       string        // TECHBOSS_PREVIEW_DOMAIN: wildcard domain of the preview host form ({port}-{id}.preview.<domain>)
	PTYGrace            time.Duration // TECHBOSS_PTY_GRACE: how long a terminal session outlives its last connection
	GitGrantTTL         time.Duration // TECHBOSS_GIT_GRANT_TTL: life of a sandbox's git broker grant (0: the sandbox's lifetime)
	ModalApp            string        // MODAL_APP_NAME
	ModalEnvironment    string        // MODAL_ENVIRONMENT
	ModalSecrets        []string      // TECHBOSS_MODAL_SECRETS: Modal secrets attached to every Modal sandbox
	ModalRegistrySecret string        // TECHBOSS_MODAL_REGISTRY_SECRET: Modal secret pulling private image_base

	ModalTokenID     string      // MODAL_TOKEN_ID
	ModalTokenSecret auth.Secret // MODAL_TOKEN_SECRET
	AnthropicAPIKey  auth.Secret // ANTHROPIC_API_KEY
	OpenAIAPIKey     auth.Secret // OPENAI_API_KEY
}

// setting binds one environment variable (and its mirroring flag) to a field.
type setting struct {
	env, flag, def, usage string
	set                   func(string) error
}

func (c *Config) settings() []setting {
	return []setting{
		{"TECHBOSS_HOST", "host", "", "listen host (empty: all interfaces)", str(&c.Host)},
		{"PORT", "port", "8080", "HTTP listen port (0 picks a free port)", port(&c.Port)},
		{"TECHBOSS_DATA_DIR", "data-dir", "./data", "directory for the SQLite database, blobs and sandboxes", str(&c.DataDir)},
		{"DATABASE_URL", "database-url", "", "postgres:// URL; empty uses SQLite at <data-dir>/techboss.db", str(&c.DatabaseURL)},
		{"TECHBOSS_LOG_LEVEL", "log-level", "info", "debug | info | warn | error", level(&c.LogLevel)},
		{"TECHBOSS_PUBLIC_URL", "public-url", "", "URL clients (and Modal sandboxes) reach this server at", str(&c.PublicURL)},
		{"TECHBOSS_SECURE_COOKIES", "secure-cookies", "auto", "auto (Secure when the public URL is https) | true | false", oneOf(&c.SecureCookies, "auto", "true", "false")},
		{"TECHBOSS_TRUSTED_ORIGINS", "trusted-origins", "", "comma-separated extra origins allowed to make cookie-authenticated writes", list(&c.TrustedOrigins)},
		{"TECHBOSS_TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated CIDRs or IPs of reverse proxies whose X-Forwarded-For names the client (login throttling); empty: the peer is the client", prefixes(&c.TrustedProxies)},
		{"TECHBOSS_SESSION_TTL", "session-ttl", "168h", "login session lifetime", duration(&c.SessionTTL)},
		{"TECHBOSS_AUDIT_KEEP", "audit-keep", "2160h", "how long audit log entries are kept (default 90 days; 0: forever); older ones are swept hourly", duration(&c.AuditKeep)},
		{"TECHBOSS_SHUTDOWN_TIMEOUT", "shutdown-timeout", "30s", "how long in-flight requests get on shutdown", duration(&c.ShutdownTimeout)},
		{"TECHBOSS_REPLICA_TIMEOUT", "replica-timeout", "30s", "with PostgreSQL: how long a replica may go unseen before its runs are interrupted and its host's local sandboxes taken for lost", duration(&c.ReplicaTimeout)},
		{"TECHBOSS_RUN_EVENTS_MEMORY_MB", "run-events-memory-mb", "0", "MiB of run events (all runs) kept in memory while the database cannot take them, before the spool; 0: spool them at once (they survive a kill -9)", count(&c.RunEventsMemMB)},
		{"TECHBOSS_RUN_EVENTS_SPOOL_MB", "run-events-spool-mb", "1024", "MiB of run events spooled under <data-dir>/run-events beyond that; when both are full, runs wait (nothing is dropped)", count(&c.RunEventsSpoolMB)},
		{"TECHBOSS_ADMIN_EMAIL", "admin-email", "", "first admin's email, created on start when no user exists", str(&c.AdminEmail)},
		{"TECHBOSS_ADMIN_PASSWORD", "admin-password", "", "first admin's password (with TECHBOSS_ADMIN_EMAIL)", secret(&c.AdminPassword)},
		{"TECHBOSS_SANDBOX_DRIVER", "sandbox-driver", "local", "local | modal", oneOf(&c.SandboxDriver, "local", "modal")},
		{"TECHBOSS_BLOB_STORE", "blob-store", "fs", "fs | s3", oneOf(&c.BlobStore, "fs", "s3")},
		{"TECHBOSS_CLAUDE_CREDENTIALS", "claude-credentials", "gateway", "gateway | direct", oneOf(&c.ClaudeCredentials, "gateway", "direct")},
		{"S3_ENDPOINT", "s3-endpoint", "", "S3-compatible endpoint URL (empty: AWS)", str(&c.S3Endpoint)},
		{"S3_FORCE_PATH_STYLE", "s3-force-path-style", "false", "use path-style S3 addressing", boolean(&c.S3ForcePathStyle)},
		{"S3_BUCKET", "s3-bucket", "", "bucket for the s3 blob store", str(&c.S3Bucket)},
		{"S3_REGION", "s3-region", "", "S3 region (empty: from the AWS configuration)", str(&c.S3Region)},
		{"TECHBOSS_S3_SWEEP_INTERVAL", "s3-sweep-interval", "10m", "how often to abort our unfinished S3 multipart uploads older than an hour (0: never)", duration(&c.S3SweepInterval)},
		{"TECHBOSS_CLAUDE_BIN", "claude-bin", "", "host path of the Claude Code CLI (default: ./.tools/claude/node_modules/.bin/claude)", str(&c.ClaudeBin)},
		{"TECHBOSS_SECRET_KEY", "secret-key", "", "key sealing users' secrets at rest: 32 bytes as 64 hex digits or base64 (empty: a key made once in <data-dir>/secret.key; replicas must share one)", secret(&c.SecretKey)},
		{"TECHBOSS_CLAUDE_MAX_RETRIES", "claude-max-retries", "2", "retries of a failed model call by the Claude Code CLI (its own default, 10, takes ~3 minutes to give up)", count(&c.ClaudeMaxRetries)},
		{"TECHBOSS_CLAUDE_MUSL_BIN", "claude-musl-bin", "", "host path of the Claude Code CLI's -musl build, for musl images (default: ./.tools/claude-musl/...)", str(&c.ClaudeMuslBin)},
		{"TECHBOSS_SANDBOX_INIT", "sandbox-init", "", "path of techboss-sandbox-init (default: next to the server binary, then PATH)", str(&c.SandboxInit)},
		{"TECHBOSS_MAX_SANDBOXES_PER_USER", "max-sandboxes-per-user", "10", "running sandboxes a user may have at once (0: no cap)", count(&c.MaxSandboxesPerUser)},
		{"TECHBOSS_SANDBOX_UID_BASE", "sandbox-uid-base", "1000000000", "host uid and gid of a local sandbox's root; sandboxes use the 65,536 ids from there", count(&c.SandboxUIDBase)},
		{"TECHBOSS_WARM_POOL", "warm-pool", "0", "local driver: started sandboxes kept ready per recently created spec (at most 4 specs), so a matching create takes one in milliseconds; 0: none", count(&c.WarmPool)},
		{"TECHBOSS_DEFAULT_DISK_MB", "default-disk-mb", "10240", "disk of a sandbox whose spec names no disk_mb, in MiB (local sandboxes get a filesystem of that size)", count(&c.DefaultDiskMB)},
		{"TECHBOSS_LOCAL_RUNTIME", "local-runtime", "bwrap", "what local sandboxes run under: bwrap (bubblewrap) | runsc (gVisor, a second kernel between the sandbox and the host)", oneOf(&c.LocalRuntime, "bwrap", "runsc")},
		{"TECHBOSS_RUNSC_BIN", "runsc-bin", "", "gVisor's runsc, with TECHBOSS_LOCAL_RUNTIME=runsc (default: ./.tools/bin/runsc, which `TECHBOSS_LOCAL_RUNTIME=runsc scripts/deps.sh run` builds, then PATH)", str(&c.RunscBin)},
		{"TECHBOSS_RUNSC_PLATFORM", "runsc-platform", "systrap", "gVisor's platform: systrap | ptrace (both without KVM)", oneOf(&c.RunscPlatform, "systrap", "ptrace")},
		{"TECHBOSS_NETWORK_ALLOW", "network-allow", "", "comma-separated private or link-local CIDRs (optionally :port) that sandboxes with network may reach, e.g. a corporate proxy; empty: none", list(&c.NetworkAllow)},
		{"TECHBOSS_WEBHOOK_ALLOW", "webhook-allow", "", "comma-separated local, link-local or private CIDRs or IPs webhooks may be delivered to (all others of those are refused, checked on the address dialed); empty: none", prefixes(&c.WebhookAllow)},
		{"TECHBOSS_WEBHOOK_RETRY", "webhook-retry", "30s", "wait after a webhook delivery's first failed attempt; it doubles with each of the 8 attempts, with jitter (30s: about an hour in all)", duration(&c.WebhookRetry)},
		{"TECHBOSS_PREVIEW_DOMAIN", "preview-domain", "", "domain[:port] whose wildcard *.preview.<domain> points at this server: sandbox ports are then also served at {port}-{id}.preview.<domain>, an origin of their own (empty: only the path form /sandbox/{id}/ports/{port}/)", str(&c.PreviewDomain)},
		{"TECHBOSS_SNAPSHOT_AFTER_RUN", "snapshot-after-run", "true", "snapshot the workspace after every agent run", boolean(&c.SnapshotAfterRun)},
		{"TECHBOSS_SNAPSHOT_ON_STOP", "snapshot-on-stop", "true", "snapshot the workspace before terminate and idle stop", boolean(&c.SnapshotOnStop)},
		{"TECHBOSS_SNAPSHOT_KEEP_LAST", "snapshot-keep-last", "0", "snapshot versions kept per sandbox (0: keep all, unless keep-for limits them)", count(&c.SnapshotKeepLast)},
		{"TECHBOSS_SNAPSHOT_KEEP_FOR", "snapshot-keep-for", "0s", "keep snapshot versions younger than this, e.g. 720h (0: no age rule)", duration(&c.SnapshotKeepFor)},
		{"TECHBOSS_SNAPSHOT_MIRROR", "snapshot-mirror", "false", "also write the latest workspace files as plain objects under the prefix", boolean(&c.SnapshotMirror)},
		{"TECHBOSS_GIT_GRANT_TTL", "git-grant-ttl", "0s", "life of the grant git in a sandbox presents to the credential broker, renewed at each run's start and whenever the server runs git there (0: the sandbox's lifetime)", duration(&c.GitGrantTTL)},
		{"TECHBOSS_PTY_GRACE", "pty-grace", "5m", "how long a terminal session (GET /sandbox/{id}/pty) keeps running with nobody attached", duration(&c.PTYGrace)},
		{"MODAL_APP_NAME", "modal-app", "techboss", "Modal App the sandboxes belong to", str(&c.ModalApp)},
		{"MODAL_ENVIRONMENT", "modal-environment", "", "Modal environment (empty: the profile's default)", str(&c.ModalEnvironment)},
		{"TECHBOSS_MODAL_SECRETS", "modal-secrets", "", "comma-separated names of Modal secrets attached to every Modal sandbox as env, e.g. anthropic-api-key with TECHBOSS_CLAUDE_CREDENTIALS=direct (their values are visible to sandbox code)", list(&c.ModalSecrets)},
		{"TECHBOSS_MODAL_REGISTRY_SECRET", "modal-registry-secret", "", "Modal secret (REGISTRY_USERNAME, REGISTRY_PASSWORD) that pulls image_base for specs without a registry_credential of their own", str(&c.ModalRegistrySecret)},
		{"MODAL_TOKEN_ID", "modal-token-id", "", "Modal token ID (modal driver)", str(&c.ModalTokenID)},
		{"MODAL_TOKEN_SECRET", "modal-token-secret", "", "Modal token secret (modal driver)", secret(&c.ModalTokenSecret)},
		{"ANTHROPIC_API_KEY", "anthropic-api-key", "", "Anthropic API key for the gateway", secret(&c.AnthropicAPIKey)},
		{"OPENAI_API_KEY", "openai-api-key", "", "OpenAI API key for the gateway", secret(&c.OpenAIAPIKey)},
	}
}

// ErrHelp is returned by Load when -h or -help was given (usage was printed).
var ErrHelp = flag.ErrHelp

// Load reads defaults, then the environment through getenv, then flags in
// args, and validates the result. Usage goes to usage (may be io.Discard).
func Load(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{}
	ss := c.settings()
	for _, s := range ss {
		if err := s.set(s.def); err != nil {
			return nil, fmt.Errorf("config: default of %s: %w", s.env, err)
		}
	}
	for _, s := range ss {
		if v, ok := lookup(getenv, s.env); ok {
			if err := s.set(v); err != nil {
				return nil, settingError(s.env, v, isSecret(s), err)
			}
		}
	}
	fs := flag.NewFlagSet("techboss", flag.ContinueOnError)
	fs.SetOutput(usage)
	for _, s := range ss {
		def := ""
		if s.def != "" {
			def = " (default " + s.def + ")"
		}
		fs.Func(s.flag, s.usage+"; env "+s.env+def, func(v string) error {
			if err := s.set(v); err != nil {
				return settingError("-"+s.flag, v, isSecret(s), err)
			}
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// lookup reads an environment variable, treating empty as unset.
func lookup(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

func isSecret(s setting) bool {
	return strings.Contains(s.env, "PASSWORD") || strings.Contains(s.env, "SECRET") || strings.HasSuffix(s.env, "_KEY")
}

func settingError(name, value string, secret bool, err error) error {
	if secret {
		return fmt.Errorf("config: invalid %s: %v", name, err)
	}
	return fmt.Errorf("config: invalid %s=%q: %v", name, value, err)
}

// Validate checks settings that depend on each other. Each error is one
// line naming the setting.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("config: TECHBOSS_DATA_DIR must not be empty")
	}
	if c.DatabaseURL != "" && strings.Contains(c.DatabaseURL, "://") &&
		!strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return fmt.Errorf("config: invalid DATABASE_URL: scheme must be postgres:// or postgresql:// (or a SQLite file path)")
	}
	if c.PublicURL != "" {
		if err := checkHTTPURL(c.PublicURL); err != nil {
			return fmt.Errorf("config: invalid TECHBOSS_PUBLIC_URL=%q: %v", c.PublicURL, err)
		}
	}
	for _, o := range c.TrustedOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("config: invalid TECHBOSS_TRUSTED_ORIGINS entry %q: want scheme://host[:port]", o)
		}
	}
	if c.PreviewDomain != "" && !validPreviewDomain(c.PreviewDomain) {
		return fmt.Errorf("config: invalid TECHBOSS_PREVIEW_DOMAIN=%q: want a lowercase domain name with an optional :port, e.g. example.com", c.PreviewDomain)
	}
	if c.S3Endpoint != "" {
		if err := checkHTTPURL(c.S3Endpoint); err != nil {
			return fmt.Errorf("config: invalid S3_ENDPOINT=%q: %v", c.S3Endpoint, err)
		}
	}
	if (c.AdminEmail == "") != (c.AdminPassword == "") {
		return errors.New("config: TECHBOSS_ADMIN_EMAIL and TECHBOSS_ADMIN_PASSWORD must be set together")
	}
	if c.AdminPassword != "" && len([]rune(string(c.AdminPassword))) < auth.MinPasswordLen {
		return fmt.Errorf("config: invalid TECHBOSS_ADMIN_PASSWORD: must be at least %d characters", auth.MinPasswordLen)
	}
	if c.SessionTTL < time.Minute {
		return fmt.Errorf("config: invalid TECHBOSS_SESSION_TTL=%s: must be at least 1m", c.SessionTTL)
	}
	if c.AuditKeep < 0 {
		return fmt.Errorf("config: invalid TECHBOSS_AUDIT_KEEP=%s: must be 0 (keep all) or positive", c.AuditKeep)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("config: invalid TECHBOSS_SHUTDOWN_TIMEOUT=%s: must be positive", c.ShutdownTimeout)
	}
	if c.ReplicaTimeout < 4*time.Second {
		return fmt.Errorf("config: invalid TECHBOSS_REPLICA_TIMEOUT=%s: must be at least 4s (replicas renew every quarter of it)", c.ReplicaTimeout)
	}
	if c.SandboxUIDBase < 65536 || c.SandboxUIDBase > 1<<32-1-65536 {
		return fmt.Errorf("config: invalid TECHBOSS_SANDBOX_UID_BASE=%d: must be from 65536 to %d (65,536 ids above it)", c.SandboxUIDBase, 1<<32-1-65536)
	}
	if c.DefaultDiskMB < 32 {
		return fmt.Errorf("config: invalid TECHBOSS_DEFAULT_DISK_MB=%d: must be at least 32", c.DefaultDiskMB)
	}
	if c.S3SweepInterval < 0 {
		return fmt.Errorf("config: invalid TECHBOSS_S3_SWEEP_INTERVAL=%s: must not be negative", c.S3SweepInterval)
	}
	if c.PTYGrace <= 0 {
		return fmt.Errorf("config: invalid TECHBOSS_PTY_GRACE=%s: must be positive", c.PTYGrace)
	}
	if c.SnapshotKeepFor < 0 {
		return fmt.Errorf("config: invalid TECHBOSS_SNAPSHOT_KEEP_FOR=%s: must not be negative", c.SnapshotKeepFor)
	}
	if c.BlobStore == "s3" && c.S3Bucket == "" {
		return errors.New("config: S3_BUCKET is required when TECHBOSS_BLOB_STORE=s3")
	}
	if c.SandboxDriver == "modal" && (c.ModalTokenID == "") != (c.ModalTokenSecret == "") {
		return errors.New("config: MODAL_TOKEN_ID and MODAL_TOKEN_SECRET must be set together")
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("host is missing")
	}
	return nil
}

// Addr is the listen address host:port.
func (c *Config) Addr() string { return c.Host + ":" + strconv.Itoa(c.Port) }

// Database returns the store URL: DATABASE_URL, or the SQLite file in DataDir.
func (c *Config) Database() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	return filepath.Join(c.DataDir, "techboss.db")
}

// Origins are the origins allowed to make cookie-authenticated writes besides
// the request's own Host: TECHBOSS_TRUSTED_ORIGINS plus the origin of
// TECHBOSS_PUBLIC_URL (a proxy in front may rewrite Host).
func (c *Config) Origins() []string {
	out := append([]string(nil), c.TrustedOrigins...)
	if u, err := url.Parse(c.PublicURL); err == nil && c.PublicURL != "" {
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out
}

// CookiesSecure resolves TECHBOSS_SECURE_COOKIES (auto: the public URL is https).
func (c *Config) CookiesSecure() bool {
	switch c.SecureCookies {
	case "true":
		return true
	case "false":
		return false
	}
	return strings.HasPrefix(c.PublicURL, "https://")
}

// LogValue implements slog.LogValuer: the effective settings, secrets redacted.
func (c *Config) LogValue() slog.Value {
	db := "sqlite"
	if strings.HasPrefix(c.Database(), "postgres") {
		db = "postgres"
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr()), slog.String("data_dir", c.DataDir), slog.String("database", db),
		slog.String("sandbox_driver", c.SandboxDriver), slog.String("blob_store", c.BlobStore),
		slog.String("claude_credentials", c.ClaudeCredentials), slog.String("public_url", c.PublicURL),
		slog.String("log_level", c.LogLevel.String()),
	)
}

func str(p *string) func(string) error {
	return func(v string) error { *p = strings.TrimSpace(v); return nil }
}

func secret(p *auth.Secret) func(string) error {
	return func(v string) error { *p = auth.Secret(v); return nil }
}

func port(p *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 65535 {
			return errors.New("must be a port number 0-65535")
		}
		*p = n
		return nil
	}
}

func boolean(p *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return errors.New("must be true or false")
		}
		*p = b
		return nil
	}
}

func count(p *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return errors.New("must be a whole number >= 0")
		}
		*p = n
		return nil
	}
}

func duration(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return errors.New("must be a duration such as 30s or 2h")
		}
		*p = d
		return nil
	}
}

func level(p *slog.Level) func(string) error {
	return func(v string) error {
		if err := p.UnmarshalText([]byte(strings.TrimSpace(v))); err != nil {
			return errors.New("must be debug, info, warn or error")
		}
		return nil
	}
}

func oneOf(p *string, allowed ...string) func(string) error {
	return func(v string) error {
		v = strings.ToLower(strings.TrimSpace(v))
		for _, a := range allowed {
			if v == a {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
	}
}

func list(p *[]string) func(string) error {
	return func(v string) error {
		*p = nil
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*p = append(*p, s)
			}
		}
		return nil
	}
}

// prefixes parses a comma-separated list of CIDRs and single addresses (a
// whole-address prefix); the first bad entry is named.
func prefixes(p *[]netip.Prefix) func(string) error {
	return func(v string) error {
		var out []netip.Prefix
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			if strings.Contains(e, "/") {
				pf, err := netip.ParsePrefix(e)
				if err != nil || pf.Addr().Zone() != "" {
					return fmt.Errorf("entry %q is not a CIDR such as 10.0.0.0/8 or fd00::/8", e)
				}
				if pf.Addr().Is4In6() && pf.Bits() >= 96 {
					pf = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
				}
				out = append(out, pf.Masked())
				continue
			}
			a, err := netip.ParseAddr(e)
			if err != nil || a.Zone() != "" {
				return fmt.Errorf("entry %q is not an IP address or CIDR", e)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
		*p = out
		return nil
	}
}

// validPreviewDomain accepts domain[:port]: dot-separated labels of
// lowercase letters, digits and inner hyphens.
func validPreviewDomain(d string) bool {
	host, port, hasPort := strings.Cut(d, ":")
	if hasPort {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	if host == "" || len(host) > 200 {
		return false
	}
	for l := range strings.SplitSeq(host, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
