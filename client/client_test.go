package client_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func newServer(t *testing.T) (*httptest.Server, *auth.Service) {
	t.Helper()
	db := storetest.OpenSQLite(t)
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams, AccountLimit: 2})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Store: db, Auth: svc}))
	t.Cleanup(srv.Close)
	return srv, svc
}

func TestClientAuthFlow(t *testing.T) {
	ctx := context.Background()
	srv, svc := newServer(t)
	if _, err := svc.CreateUser(ctx, "root@example.com", "root-password-1", auth.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if _, err := c.Me(ctx); !errors.As(err, &ce) || ce.StatusCode != 401 || ce.Code != "unauthenticated" || ce.RequestID == "" {
		t.Fatalf("Me before login: %v", err)
	}
	u, err := c.Login(ctx, "root@example.com", "root-password-1")
	if err != nil || u.Role != "admin" {
		t.Fatalf("Login = %+v, %v", u, err)
	}
	if _, err := c.CreateUser(ctx, "m@example.com", "member-pass-1", "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser(ctx, "bad", "x", "member"); !errors.As(err, &ce) || ce.StatusCode != 422 || len(ce.Fields) == 0 {
		t.Fatalf("invalid user: %v", err)
	}
	nt, err := c.CreateToken(ctx, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := client.New(srv.URL, client.WithToken(nt.Token))
	me, err := tc.Me(ctx)
	if err != nil || me.Email != "root@example.com" {
		t.Fatalf("token Me = %+v, %v", me, err)
	}
	ts, err := tc.ListTokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].ID != nt.ID {
		t.Fatalf("ListTokens = %+v, %v", ts, err)
	}
	rt, err := c.RevokeToken(ctx, nt.ID)
	if err != nil || rt.RevokedAt.IsZero() {
		t.Fatalf("RevokeToken = %+v, %v", rt, err)
	}
	if _, err := tc.Me(ctx); !errors.As(err, &ce) || ce.StatusCode != 401 {
		t.Fatalf("revoked token Me: %v", err)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Me(ctx); !errors.As(err, &ce) || ce.StatusCode != 401 {
		t.Fatalf("Me after logout: %v", err)
	}
	// Throttled logins carry Retry-After.
	for range 2 {
		_, _ = c.Login(ctx, "m@example.com", "wrong-password")
	}
	if _, err := c.Login(ctx, "m@example.com", "member-pass-1"); !errors.As(err, &ce) || ce.StatusCode != 429 || ce.RetryAfter < time.Second {
		t.Fatalf("throttled login: %v", err)
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}
