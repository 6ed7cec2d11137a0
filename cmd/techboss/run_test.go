package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb strings.Builder
	err := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestUserAndTokenCreate(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"TECHBOSS_DATA_DIR": dir}
	out, _, err := runCLI(t, env, "", "migrate")
	if err != nil || !strings.Contains(out, "sqlite") {
		t.Fatalf("migrate: %q %v", out, err)
	}
	out, _, err = runCLI(t, env, "", "user", "create", "--email", "root@example.com", "--password", "root-password-1", "--admin")
	if err != nil || !strings.Contains(out, "created admin root@example.com") {
		t.Fatalf("user create: %q %v", out, err)
	}
	// Password from stdin.
	out, _, err = runCLI(t, env, "member-password-1\n", "user", "create", "--email", "m@example.com")
	if err != nil || !strings.Contains(out, "created member m@example.com") {
		t.Fatalf("user create (stdin): %q %v", out, err)
	}
	if _, _, err := runCLI(t, env, "", "user", "create", "--email", "root@example.com", "--password", "whatever-123"); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate user: %v", err)
	}
	if _, _, err := runCLI(t, env, "", "user", "create", "--email", "x@example.com", "--password", "short"); err == nil ||
		!strings.Contains(err.Error(), "password") {
		t.Fatalf("short password: %v", err)
	}
	tok, stderr, err := runCLI(t, env, "", "token", "create", "--email", "root@example.com", "--name", "ci")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	tok = strings.TrimSpace(tok)
	if !strings.HasPrefix(tok, auth.TokenPrefix) || strings.Contains(stderr, tok) {
		t.Fatalf("token = %q (stderr %q)", tok, stderr)
	}
	// The printed token authenticates as that user against the same database.
	db, err := store.Open(context.Background(), dir+"/techboss.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u, err := auth.New(auth.Options{Store: db}).Authenticate(context.Background(), tok)
	if err != nil || u.Email != "root@example.com" || !u.IsAdmin() {
		t.Fatalf("authenticate printed token: %+v %v", u, err)
	}
	if _, _, err := runCLI(t, env, "", "token", "create", "--email", "nobody@example.com", "--name", "x"); err == nil {
		t.Fatal("token for unknown user succeeded")
	}
}

func TestDispatch(t *testing.T) {
	out, _, err := runCLI(t, nil, "", "version")
	if err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("version: %q %v", out, err)
	}
	out, _, err = runCLI(t, nil, "")
	if err != nil || !strings.Contains(out, "user create") || !strings.Contains(out, "token create") {
		t.Fatalf("usage: %q %v", out, err)
	}
	if _, _, err := runCLI(t, nil, "", "frobnicate"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown: %v", err)
	}
	if _, _, err := runCLI(t, nil, "", "user", "create"); err == nil || !strings.Contains(err.Error(), "--email") {
		t.Fatalf("missing email: %v", err)
	}
	if _, _, err := runCLI(t, map[string]string{"DATABASE_URL": "mysql://x"}, "", "migrate"); err == nil ||
		!strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("bad DATABASE_URL: %v", err)
	}
}

func TestWhoami(t *testing.T) {
	db := storetest.OpenSQLite(t)
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams})
	u, err := svc.CreateUser(context.Background(), "who@example.com", "who-password", auth.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := svc.CreateToken(context.Background(), u.ID, "cli")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Store: db, Auth: svc}))
	defer srv.Close()
	out, _, err := runCLI(t, map[string]string{"TECHBOSS_URL": srv.URL, "TECHBOSS_TOKEN": tok.Reveal()}, "", "whoami")
	if err != nil || !strings.Contains(out, "who@example.com (member, "+u.ID+")") {
		t.Fatalf("whoami: %q %v", out, err)
	}
	if _, _, err := runCLI(t, map[string]string{"TECHBOSS_URL": srv.URL, "TECHBOSS_TOKEN": "tbk_wrong"}, "", "whoami"); err == nil ||
		!strings.Contains(err.Error(), "401") {
		t.Fatalf("whoami with a bad token: %v", err)
	}
	if _, _, err := runCLI(t, map[string]string{"TECHBOSS_URL": srv.URL}, "", "whoami"); err == nil ||
		!strings.Contains(err.Error(), "TECHBOSS_TOKEN") {
		t.Fatalf("whoami without token: %v", err)
	}
}
