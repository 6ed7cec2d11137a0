package browsertest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/store"
)

// stack is a running server with real dependencies.
type stack struct {
	url  string
	db   *store.DB
	auth *auth.Service
}

// newStack starts the real HTTP server over a fresh SQLite database.
func newStack(t *testing.T) *stack {
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
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Logger: logger, Store: db, Auth: a}))
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

// testWriter sends server logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
