package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
)

func testAuth(t *testing.T, db *store.DB) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	alice := auth.User{ID: "u-alice", Email: "alice@example.com", Role: auth.RoleAdmin, CreatedAt: t0}
	bob := auth.User{ID: "u-bob", Email: "bob@example.com", Role: auth.RoleMember, CreatedAt: t0.Add(time.Second)}

	t.Run("Users", func(t *testing.T) {
		if n, err := db.CountUsers(ctx); err != nil || n != 0 {
			t.Fatalf("CountUsers on empty db = %d, %v; want 0, nil", n, err)
		}
		for _, u := range []auth.User{alice, bob} {
			if err := db.CreateUser(ctx, u, "hash-"+u.ID); err != nil {
				t.Fatalf("CreateUser(%s): %v", u.ID, err)
			}
		}
		dup := alice
		dup.ID = "u-other"
		if err := db.CreateUser(ctx, dup, "h"); errs.KindOf(err) != errs.Conflict {
			t.Fatalf("duplicate email: got %v, want Conflict", err)
		}
		got, hash, err := db.UserByEmail(ctx, "alice@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(alice, got); diff != "" || hash != "hash-u-alice" {
			t.Fatalf("UserByEmail mismatch (-want +got):\n%s hash=%q", diff, hash)
		}
		got, err = db.UserByID(ctx, bob.ID)
		if err != nil || !cmp.Equal(bob, got) {
			t.Fatalf("UserByID = %+v, %v; want %+v", got, err, bob)
		}
		if _, _, err := db.UserByEmail(ctx, "nobody@example.com"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("missing email: got %v, want NotFound", err)
		}
		if _, err := db.UserByID(ctx, "nope"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("missing id: got %v, want NotFound", err)
		}
		if n, err := db.CountUsers(ctx); err != nil || n != 2 {
			t.Fatalf("CountUsers = %d, %v; want 2", n, err)
		}
		if err := db.SetPassword(ctx, bob.ID, "new-hash"); err != nil {
			t.Fatal(err)
		}
		if _, h, _ := db.UserByEmail(ctx, bob.Email); h != "new-hash" {
			t.Fatalf("after SetPassword hash = %q, want new-hash", h)
		}
		if err := db.SetPassword(ctx, "nope", "x"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("SetPassword on missing user: got %v, want NotFound", err)
		}
	})

	t.Run("Sessions", func(t *testing.T) {
		s1 := auth.Session{IDHash: "digest-1", UserID: alice.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		s2 := auth.Session{IDHash: "digest-2", UserID: bob.ID, CreatedAt: t0, ExpiresAt: t0.Add(2 * time.Hour)}
		for _, s := range []auth.Session{s1, s2} {
			if err := db.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		gs, gu, err := db.SessionUser(ctx, "digest-1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s1, gs); diff != "" {
			t.Fatalf("session (-want +got):\n%s", diff)
		}
		if gu.ID != alice.ID || gu.Role != auth.RoleAdmin {
			t.Fatalf("session user = %+v, want alice", gu)
		}
		if _, _, err := db.SessionUser(ctx, "digest-x"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("unknown session: got %v, want NotFound", err)
		}
		n, err := db.DeleteExpiredSessions(ctx, t0.Add(time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("DeleteExpiredSessions = %d, %v; want 1", n, err)
		}
		if _, _, err := db.SessionUser(ctx, "digest-1"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("expired session still there: %v", err)
		}
		if err := db.DeleteSession(ctx, "digest-2"); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteSession(ctx, "digest-2"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("second delete: got %v, want NotFound", err)
		}
	})

	t.Run("Tokens", func(t *testing.T) {
		tk1 := auth.Token{ID: "t1", UserID: alice.ID, Name: "laptop", CreatedAt: t0}
		tk2 := auth.Token{ID: "t2", UserID: alice.ID, Name: "ci", CreatedAt: t0.Add(time.Minute)}
		tk3 := auth.Token{ID: "t3", UserID: bob.ID, Name: "bob's", CreatedAt: t0}
		for i, tk := range []auth.Token{tk1, tk2, tk3} {
			if err := db.CreateToken(ctx, tk, "tokdigest-"+tk.ID); err != nil {
				t.Fatalf("CreateToken %d: %v", i, err)
			}
		}
		if err := db.CreateToken(ctx, auth.Token{ID: "t4", UserID: bob.ID, Name: "x", CreatedAt: t0}, "tokdigest-t1"); errs.KindOf(err) != errs.Conflict {
			t.Fatalf("duplicate digest: got %v, want Conflict", err)
		}
		list, err := db.ListTokens(ctx, alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]auth.Token{tk2, tk1}, list); diff != "" {
			t.Fatalf("ListTokens (-want +got):\n%s", diff)
		}
		gt, gu, err := db.TokenUser(ctx, "tokdigest-t3")
		if err != nil || gt.ID != "t3" || gu.ID != bob.ID {
			t.Fatalf("TokenUser = %+v, %+v, %v", gt, gu, err)
		}
		if err := db.TouchToken(ctx, "t3", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		gt, _, _ = db.TokenUser(ctx, "tokdigest-t3")
		if !gt.LastUsedAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("LastUsedAt = %v, want %v", gt.LastUsedAt, t0.Add(time.Hour))
		}
		// Bob cannot revoke Alice's token.
		if err := db.RevokeToken(ctx, bob.ID, "t1", t0); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("revoke other's token: got %v, want NotFound", err)
		}
		rev := t0.Add(2 * time.Hour)
		if err := db.RevokeToken(ctx, alice.ID, "t1", rev); err != nil {
			t.Fatal(err)
		}
		// Revoking again keeps the first revocation time.
		if err := db.RevokeToken(ctx, alice.ID, "t1", rev.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		gt, _, err = db.TokenUser(ctx, "tokdigest-t1")
		if err != nil || !gt.RevokedAt.Equal(rev) {
			t.Fatalf("RevokedAt = %v (%v), want %v", gt.RevokedAt, err, rev)
		}
		if _, _, err := db.TokenUser(ctx, "nope"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("unknown token: got %v, want NotFound", err)
		}
		if list, _ := db.ListTokens(ctx, "nobody"); list == nil || len(list) != 0 {
			t.Fatalf("ListTokens(nobody) = %#v, want empty non-nil", list)
		}
	})

	t.Run("CascadeOnUserDelete", func(t *testing.T) {
		if _, err := db.SQL().ExecContext(ctx, db.Rebind("DELETE FROM users WHERE id = ?"), bob.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.TokenUser(ctx, "tokdigest-t3"); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("token of deleted user: got %v, want NotFound", err)
		}
	})
}
