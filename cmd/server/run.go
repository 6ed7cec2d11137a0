package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/config"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/memtrim"
	"github.com/techbossai/techboss/internal/store"
)

// run is the whole program: configuration, the object graph, the HTTP
// server, and graceful shutdown when ctx is cancelled (SIGINT/SIGTERM).
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("starting", "version", version(), "config", cfg)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	db, err := store.Open(ctx, cfg.Database())
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	authSvc := auth.New(auth.Options{
		Store: db, Logger: log.With("component", "auth"), SessionTTL: cfg.SessionTTL,
	})
	if cfg.AdminEmail != "" {
		created, err := authSvc.BootstrapAdmin(ctx, cfg.AdminEmail, cfg.AdminPassword)
		if err != nil {
			return fmt.Errorf("bootstrap admin (TECHBOSS_ADMIN_EMAIL): %w", err)
		}
		if created {
			log.Info("created the first admin from TECHBOSS_ADMIN_EMAIL", "email", auth.NormalizeEmail(cfg.AdminEmail))
		}
	}

	dom, err := wire(ctx, cfg, getenv, log, reg, db, authSvc)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range dom.closers {
			c()
		}
	}()

	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	// The audit log writes in the background; it stops (flushing what is
	// queued, for a while) only after in-flight requests have finished.
	auditLog := audit.New(audit.Options{Repo: db, Logger: log.With("component", "audit"), Keep: cfg.AuditKeep})
	auditCtx, stopAudit := context.WithCancel(context.Background())
	defer stopAudit()
	// Presence is shared through the database when replicas share one; it
	// stops (taking this replica's viewers off it) after the streams ended.
	presenceCtx, stopPresence := context.WithCancel(context.Background())
	defer stopPresence()
	handler := httpapi.NewServer(httpapi.Deps{
		Sandboxes:      dom.sandboxes,
		Snapshots:      dom.snapshots,
		Runs:           dom.runs,
		Secrets:        dom.secrets,
		PreviewLinks:   dom.previews,
		PreviewDomain:  cfg.PreviewDomain,
		Repos:          dom.repos,
		GitBroker:      dom.broker,
		Webhooks:       dom.webhooks,
		Audit:          auditLog,
		Gateway:        dom.gateway,
		LLM:            dom.llm,
		Logger:         log,
		Store:          db,
		Auth:           authSvc,
		Metrics:        reg,
		Clock:          time.Now,
		Version:        version(),
		SecureCookies:  cfg.CookiesSecure(),
		TrustedOrigins: cfg.Origins(),
		TrustedProxies: cfg.TrustedProxies,
		Stopping:       stopping,
		// Streams wait this long for their runs' done events (shutdown
		// interrupts runs) before ending with a restarting event.
		StreamDrain:   cfg.ShutdownTimeout / 2,
		Ready:         dom.ready,
		PresenceBoard: db.PresenceBoard(),
	})

	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen on %s (PORT): %w", cfg.Addr(), err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Shutdown runs this after it has closed the listener: from here on only
	// in-flight requests are served, and streams are told to end.
	srv.RegisterOnShutdown(func() {
		log.Info("listener closed; draining in-flight requests")
		stop()
	})
	// Start-up leaves garbage the heap keeps until the runtime's first
	// forced collection two minutes later: the dummy password hash (argon2,
	// 19 MiB), the admin's, migrations. Collect it now and give the pages
	// back, so an idle server holds what it uses (docs/performance.md).
	if st, err := memtrim.Release(); err != nil {
		log.Warn("release start-up memory", "err", err)
	} else {
		log.Debug("released start-up memory", "binary_ranges", st.Ranges, "binary_bytes", st.Released)
	}
	log.Info("listening", "addr", ln.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error { return pruneSessions(gctx, authSvc, log) })
	g.Go(func() error { return auditLog.Run(auditCtx) })
	g.Go(func() error { return handler.RunPresence(presenceCtx) })
	for _, r := range dom.runners {
		g.Go(func() error {
			err := r(gctx)
			if err != nil && gctx.Err() != nil {
				// Cut short by shutdown (e.g. during its start-up work): expected.
				log.Debug("runner stopped by shutdown", "err", err)
				return nil
			}
			return err
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("in-flight requests did not finish in time; closing", "err", err)
			_ = srv.Close()
		}
		if err := handler.WaitStreams(sctx); err != nil {
			log.Warn("event streams did not finish in time", "err", err)
		}
		stopAudit()
		stopPresence()
		return nil
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// pruneSessions deletes expired sessions and throttle entries hourly until ctx is done.
func pruneSessions(ctx context.Context, a *auth.Service, log *slog.Logger) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, m, err := a.Prune(ctx); err != nil {
				log.Warn("prune auth state", "err", err)
			} else if n+m > 0 {
				log.Info("pruned expired auth state", "sessions", n, "login_throttles", m)
			}
		}
	}
}

// buildVersion is set by the Makefile (-X main.buildVersion=<git describe>).
var buildVersion string

// version is the version the build was given, else the module version or
// VCS revision this binary was built from.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
