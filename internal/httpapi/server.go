// Package httpapi is the HTTP adapter: routes, middleware, the JSON
// envelope, error mapping, SSE and the OpenAPI document. Every route is
// listed in routes.go; handlers are plain net/http functions that return
// errors to one adapter (api) which writes, logs and counts them.
package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/presence"
	"github.com/techbossai/techboss/internal/repo"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
	"github.com/techbossai/techboss/internal/webhooks"
)

// Deps are the server's dependencies. Domain owners add their fields here.
type Deps struct {
	Logger  *slog.Logger
	Store   *store.DB
	Auth    *auth.Service
	Metrics *prometheus.Registry
	Clock   func() time.Time
	// Sandboxes runs sandboxes; nil answers 503 on the sandbox routes.
	Sandboxes *sandbox.Manager
	// LLM serves /v1/chat and /v1/models; nil answers 503 on chat.
	LLM *LLMDeps
	// Runs starts and follows agent runs; nil answers 503 on the run routes.
	Runs *agent.Service
	// Snapshots takes, lists, diffs and restores workspace snapshots; nil
	// answers 503 on the snapshot routes.
	Snapshots *snapshot.Service
	// Secrets is the users' secret store; nil answers 503 on /secrets.
	Secrets *secrets.Store
	// PreviewLinks issues and checks share links to sandbox ports; nil
	// answers 503 on the link routes (the owner still reaches previews).
	PreviewLinks *sandbox.PreviewLinks
	// PreviewDomain turns on the preview host form
	// {port}-{id}.preview.<PreviewDomain> (TECHBOSS_PREVIEW_DOMAIN).
	PreviewDomain string
	// Repos runs the git operations of sandboxes' repositories; nil
	// answers 503 on /sandbox/{id}/git/*.
	Repos *repo.Service
	// GitBroker is the git credential broker, also served at /git/ on the
	// API listener for sandboxes that reach the server by its public URL.
	GitBroker http.Handler
	// Webhooks manages users' webhooks; nil answers 503 on /webhooks.
	Webhooks *webhooks.Service
	// Teams holds teams, shares and the sandbox access rule (authz.go);
	// nil builds one over Store.
	Teams *teams.Service
	// Audit records every state-changing request (audit.go); nil records
	// nothing and answers 503 on /audit.
	Audit *audit.Log
	// Gateway is the Anthropic passthrough mounted at /llm/anthropic
	// (outside session auth: it checks run and API tokens itself); nil = not mounted.
	Gateway http.Handler

	// Ready are the dependencies /readyz checks besides the database (which
	// it always checks): the blob store, the sandbox driver.
	Ready []ReadyCheck

	// Version is reported by /healthz.
	Version string
	// SecureCookies marks the session cookie Secure even on plain-HTTP
	// connections (set when a TLS-terminating proxy is in front). Requests
	// that arrive over TLS always get Secure cookies.
	SecureCookies bool
	// TrustedOrigins are extra origins (scheme://host[:port]) allowed to make
	// cookie-authenticated writes, e.g. a UI served from another host.
	TrustedOrigins []string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed when they are the direct peer; the login throttle then
	// counts the right-most address in it that is not one of them. Empty:
	// X-Forwarded-For is ignored and the peer is the client.
	TrustedProxies []netip.Prefix
	// MaxJSONBody bounds JSON request bodies for handlers that use
	// decodeJSONLimit(r, v, s.deps.MaxJSONBody) (default 1 MiB).
	MaxJSONBody int64
	// Heartbeat is how often an idle run event stream gets a heartbeat
	// (default 15 s).
	Heartbeat time.Duration
	// Stopping is done when the server begins shutting down, so long-lived
	// streams (SSE, WebSocket) end and let Shutdown finish; clients resume.
	// Nil means never.
	Stopping context.Context
	// StreamDrain is how long a run event stream goes on after Stopping,
	// so the client gets the run's done event (shutdown interrupts runs),
	// before it ends with a "restarting" event (default 5 s; keep it
	// inside TECHBOSS_SHUTDOWN_TIMEOUT).
	StreamDrain time.Duration
	// PresenceDebounce is how long joins and leaves gather before run
	// streams get a presence event (default presence.DefaultDebounce).
	PresenceDebounce time.Duration
	// PresenceBoard shares who watches which sandbox with the other
	// replicas on the same database (store.DB.PresenceBoard; Server.RunPresence
	// keeps it up to date). Nil (SQLite: one replica) keeps presence in
	// this server's memory only.
	PresenceBoard presence.Board
	// PresenceHeartbeat and PresencePoll pace the board (defaults
	// presence.DefaultHeartbeat and presence.DefaultPoll).
	PresenceHeartbeat, PresencePoll time.Duration
}

// server holds the handlers' shared state. Handlers are methods on it.
type server struct {
	deps    Deps
	log     *slog.Logger
	now     func() time.Time
	metrics *httpMetrics
	csrf    *http.CrossOriginProtection
	streams streamCount
	// presence: who watches which sandbox through this server's streams.
	presence *presence.Tracker
	teams    *teams.Service
	live     liveStreams // shared users' open streams, ended on revoke (authz.go)

	previewOnce sync.Once
	previewRT   *http.Transport // the preview proxy's (ports.go)
}

// Server is the HTTP handler for the whole API.
type Server struct {
	http.Handler
	s *server
}

// NewServer returns the HTTP handler for the whole API.
func NewServer(deps Deps) *Server {
	s := newServer(deps)
	return &Server{Handler: s.routes(), s: s}
}

// WaitStreams waits until every event stream that took its connection
// over from net/http has ended, or ctx is done. http.Server.Shutdown does
// not wait for those; Deps.Stopping ends them.
func (h *Server) WaitStreams(ctx context.Context) error { return h.s.streams.wait(ctx) }

// RunPresence shares this server's viewers with the other replicas
// through Deps.PresenceBoard until ctx is done, then takes them off the
// board (see presence.Tracker.Run). Without a board it only waits.
func (h *Server) RunPresence(ctx context.Context) error { return h.s.presence.Run(ctx) }

// streamCount counts the streams in progress. Not a sync.WaitGroup: a
// request already in flight may start a stream while shutdown waits, and a
// WaitGroup forbids Add from zero concurrently with Wait; nor can a
// WaitGroup's wait be given up when ctx ends.
type streamCount struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil before the first stream
}

func (c *streamCount) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		c.idle = make(chan struct{})
	}
	c.n++
}

func (c *streamCount) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		close(c.idle)
	}
}

func (c *streamCount) wait(ctx context.Context) error {
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("event streams still open: %w", ctx.Err())
	}
}

func newServer(deps Deps) *server {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	if deps.MaxJSONBody <= 0 {
		deps.MaxJSONBody = defaultMaxJSONBody
	}
	s := &server{
		deps:    deps,
		log:     deps.Logger,
		now:     deps.Clock,
		metrics: newHTTPMetrics(deps.Metrics),
		csrf:    http.NewCrossOriginProtection(),
	}
	// A watched sandbox is not idle: its first viewer marks it busy until
	// the last one leaves.
	var busy func(string) func()
	if deps.Sandboxes != nil {
		busy = deps.Sandboxes.MarkBusy
	}
	s.presence = presence.New(presence.Options{
		Debounce: deps.PresenceDebounce, Clock: deps.Clock, Busy: busy,
		Board: deps.PresenceBoard, Heartbeat: deps.PresenceHeartbeat, Poll: deps.PresencePoll,
		Logger: deps.Logger.With("component", "presence"),
	})
	s.teams = deps.Teams
	if s.teams == nil && deps.Store != nil {
		s.teams = teams.New(deps.Store, storeUsers{deps.Store}, deps.Clock)
	}
	for _, o := range deps.TrustedOrigins {
		if err := s.csrf.AddTrustedOrigin(o); err != nil {
			s.log.Warn("ignoring trusted origin", "origin", o, "err", err)
		}
	}
	return s
}
