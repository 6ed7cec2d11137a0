package browsertest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/store"
)

// stack is a running server with real dependencies.
type stack struct {
	url  string
	db   *store.DB
	auth *auth.Service
}

// newStack starts the real HTTP server over a fresh SQLite database, with
// auth only (no sandbox manager).
func newStack(t *testing.T) *stack { return buildStack(t, false) }

// newSandboxStack adds a sandbox manager on the real local driver.
func newSandboxStack(t *testing.T) *stack { return buildStack(t, true) }

func buildStack(t *testing.T, sandboxes bool) *stack {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "techboss.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a := auth.New(auth.Options{Store: db, Logger: logger})
	deps := httpapi.Deps{Logger: logger, Store: db, Auth: a}
	if sandboxes {
		deps.Sandboxes = sandboxManager(t, db, logger)
	}
	srv := httptest.NewServer(httpapi.NewServer(deps))
	t.Cleanup(srv.Close)
	return &stack{url: srv.URL, db: db, auth: a}
}

// user creates a member account.
func (s *stack) user(t *testing.T, email, password string) {
	t.Helper()
	if _, err := s.auth.CreateUser(context.Background(), email, auth.Secret(password), auth.RoleMember); err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
}

// sandboxManager returns a Manager on the real local (bubblewrap) driver; its
// sandboxes are destroyed at cleanup.
func sandboxManager(t *testing.T, db *store.DB, logger *slog.Logger) *sandbox.Manager {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "the local sandbox driver needs root"
	} else if _, err := exec.LookPath("bwrap"); err != nil {
		why = "bubblewrap (bwrap) is not installed"
	}
	if why != "" {
		need(t, why)
	}
	initBin := filepath.Join(t.TempDir(), "techboss-sandbox-init")
	cmd := exec.Command("go", "build", "-o", initBin, "github.com/techbossai/techboss/cmd/techboss-sandbox-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sandbox helper: %v\n%s", err, out)
	}
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: initBin, Logger: logger})
	if err != nil {
		t.Fatalf("local driver: %v", err)
	}
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local",
		Limits: sandbox.DefaultLimits(), Logger: logger,
	})
	if err != nil {
		t.Fatalf("sandbox manager: %v", err)
	}
	t.Cleanup(func() {
		all, _ := db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range all {
			_ = drv.Destroy(context.Background(), sandbox.Ref(sb.ID))
		}
	})
	return m
}

// testWriter sends server logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
