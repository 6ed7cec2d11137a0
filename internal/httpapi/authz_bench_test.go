package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store/storetest"
	"github.com/techbossai/techboss/internal/teams"
)

// BenchmarkAuthorize measures GET /sandbox/{id}/shares through the whole
// stack on SQLite, where the authorization gate is most of the work: for
// the owner (one sandbox read), a team member (and a role read) and a
// user with a share (and a grants read). Compare with
// BenchmarkAuthenticatedRequest, the stack without the gate.
func BenchmarkAuthorize(b *testing.B) {
	ctx := context.Background()
	db := storetest.OpenSQLite(b)
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams})
	toks := map[string]string{}
	ids := map[string]string{}
	for _, n := range []string{"owner", "member", "shared"} {
		u, err := svc.CreateUser(ctx, n+"@example.com", "bench-password", auth.RoleMember)
		if err != nil {
			b.Fatal(err)
		}
		_, tok, err := svc.CreateToken(ctx, u.ID, "bench")
		if err != nil {
			b.Fatal(err)
		}
		toks[n], ids[n] = tok.Reveal(), u.ID
	}
	ts := teams.New(db, storeUsers{db}, nil)
	tm, err := ts.Create(ctx, ids["owner"], "bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ts.PutMember(ctx, ids["owner"], tm.ID, "member@example.com", teams.RoleMember); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	if err := db.CreateSandbox(ctx, &sandbox.Sandbox{ID: "sb_bench", OwnerID: ids["owner"], TeamID: tm.ID, State: sandbox.Terminated,
		Driver: "local", Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}); err != nil {
		b.Fatal(err)
	}
	if _, err := ts.CreateShare(ctx, ids["owner"], "sb_bench", ids["owner"], teams.ShareRequest{Email: "shared@example.com", Role: teams.ShareViewer}); err != nil {
		b.Fatal(err)
	}
	h := NewServer(Deps{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Store: db, Auth: svc})
	for _, who := range []string{"owner", "member", "shared"} {
		b.Run(who, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest("GET", "/sandbox/sb_bench/shares", nil)
				req.Header.Set("Authorization", "Bearer "+toks[who])
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
