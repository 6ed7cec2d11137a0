package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// BenchmarkAuthenticatedRequest measures GET /auth/me through the whole
// middleware stack (request ID, access log, metrics, auth lookup in SQLite)
// without the network, for a Bearer token and for a session cookie.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	ctx := context.Background()
	db := storetest.OpenSQLite(b)
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams})
	u, err := svc.CreateUser(ctx, "bench@example.com", "bench-password", auth.RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := svc.CreateToken(ctx, u.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}
	lr, err := svc.Login(ctx, "bench@example.com", "bench-password", "")
	if err != nil {
		b.Fatal(err)
	}
	h := NewServer(Deps{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Store: db, Auth: svc})
	for _, tc := range []struct {
		name string
		set  func(*http.Request)
	}{
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Reveal()) }},
		{"cookie", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: lr.SessionToken.Reveal()}) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest("GET", "/auth/me", nil)
				tc.set(req)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}

// BenchmarkLogin measures a full login with the production argon2id cost.
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	svc := auth.New(auth.Options{Store: storetest.OpenSQLite(b), AccountLimit: 1 << 30})
	if _, err := svc.CreateUser(ctx, "bench@example.com", "bench-password", auth.RoleMember); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := svc.Login(ctx, "bench@example.com", "bench-password", ""); err != nil {
			b.Fatal(err)
		}
	}
}
