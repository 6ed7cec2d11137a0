package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
)

// TestSecretsNeverLoggedOrStored logs in and creates a token with every
// log line captured (debug level), then checks neither the password, the
// session cookie nor the API token appears in the logs or in any row.
func TestSecretsNeverLoggedOrStored(t *testing.T) {
	h := newHarness(t)
	h.createUser("jo@example.com", auth.RoleMember)
	c := h.client()
	r := h.login(c, "jo@example.com", testPassword)
	wantStatus(t, r, 200)
	var session string
	for _, ck := range c.Jar.Cookies(mustURL(t, h.srv.URL)) {
		if ck.Name == sessionCookie {
			session = ck.Value
		}
	}
	if session == "" {
		t.Fatal("no session cookie")
	}
	// A failed login with a different password must not log it either.
	wrongPassword := "hunter2-wrong-password"
	wantStatus(t, h.login(h.client(), "jo@example.com", wrongPassword), 401)
	tok := h.newToken(c, "deploy")
	wantStatus(t, h.do(h.client(), "GET", "/auth/me", nil, "Authorization", "Bearer "+tok.Token), 200)
	// Secrets handed to a logger directly redact themselves.
	slog.New(slog.NewJSONHandler(h.logs, nil)).Info("direct", "password", auth.Secret(testPassword), "fmt", fmt.Sprint(auth.Secret(tok.Token)))

	logs := h.logs.String()
	if !strings.Contains(logs, `"route":"/auth/login"`) || !strings.Contains(logs, "api token created") {
		t.Fatalf("expected login and token-creation log lines, got:\n%s", logs)
	}
	for name, secret := range map[string]string{"password": testPassword, "wrong password": wrongPassword, "session": session, "token": tok.Token} {
		if strings.Contains(logs, secret) {
			t.Errorf("%s appears in logs", name)
		}
		// The random part alone must not leak either (e.g. prefix stripped).
		if len(secret) > 12 && strings.Contains(logs, secret[len(secret)-12:]) {
			t.Errorf("tail of %s appears in logs", name)
		}
	}

	// Nothing in the database holds a secret in plain text.
	for _, table := range []string{"users", "sessions", "api_tokens"} {
		dump := dumpTable(t, h, table)
		for name, secret := range map[string]string{"password": testPassword, "wrong password": wrongPassword, "session": session, "token": tok.Token} {
			if strings.Contains(dump, secret) {
				t.Errorf("table %s holds the %s in plain text", table, name)
			}
		}
	}
	if !strings.Contains(dumpTable(t, h, "users"), "$argon2id$") {
		t.Errorf("users table has no argon2id hash")
	}
	if !strings.Contains(dumpTable(t, h, "api_tokens"), auth.Digest(auth.Secret(tok.Token))) {
		t.Errorf("api_tokens does not hold the token digest")
	}
}

func dumpTable(t *testing.T, h *harness, table string) string {
	t.Helper()
	rows, err := h.db.SQL().QueryContext(context.Background(), "SELECT * FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			fmt.Fprintf(&b, "%s|", v)
		}
		b.WriteByte('\n')
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestSecretStore: a secret is written, listed by name only, never
// returned nor logged nor stored in plain text, per user, and deleted;
// bad names and values are field errors.
func TestSecretStore(t *testing.T) {
	h := newHarness(t)
	h.createUser("ann@example.com", auth.RoleMember)
	h.createUser("ben@example.com", auth.RoleMember)
	ann, ben := h.mustLogin("ann@example.com"), h.mustLogin("ben@example.com")
	const value = "ghp_secret-value-for-the-store-0123"
	wantStatus(t, h.do(ann, "PUT", "/secrets/github_token", map[string]string{"value": value}), 204)
	r := h.do(ann, "GET", "/secrets", nil)
	wantStatus(t, r, 200)
	if strings.Contains(string(r.body), value) || !strings.Contains(string(r.body), `"name":"github_token"`) {
		t.Errorf("list %s", r.body)
	}
	if r := h.do(ben, "GET", "/secrets", nil); strings.TrimSpace(string(r.body)) != `{"data":[]}` {
		t.Errorf("ben sees %s", r.body)
	}
	wantStatus(t, h.do(ben, "DELETE", "/secrets/github_token", nil), 404)
	for _, bad := range []struct{ path, body, field string }{
		{"/secrets/bad%20name", `{"value":"x"}`, "name"},
		{"/secrets/ok", `{"value":""}`, "value"},
	} {
		r := h.do(ann, "PUT", bad.path, bad.body)
		if r.status != 422 || !strings.Contains(string(r.body), `"field":"`+bad.field+`"`) {
			t.Errorf("PUT %s %s: %d %s", bad.path, bad.body, r.status, r.body)
		}
	}
	// Nowhere in the database or the logs in plain text.
	if strings.Contains(h.logs.String(), value) {
		t.Error("the secret is in the logs")
	}
	if dump := dumpTable(t, h, "user_secrets"); strings.Contains(dump, value) || !strings.Contains(dump, "v1:") {
		t.Error("the secret is stored in plain text (or not sealed)")
	}
	wantStatus(t, h.do(ann, "DELETE", "/secrets/github_token", nil), 204)
	if r := h.do(ann, "GET", "/secrets", nil); strings.TrimSpace(string(r.body)) != `{"data":[]}` {
		t.Errorf("after delete: %s", r.body)
	}
}
