package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
)

func TestLoginCookieMe(t *testing.T) {
	h := newHarness(t)
	u := h.createUser("Alice@Example.com", auth.RoleMember)
	c := h.client()
	r := h.login(c, "alice@example.COM ", testPassword)
	wantStatus(t, r, http.StatusOK)

	var cookie *http.Cookie
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == sessionCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.Path != "/" {
		t.Fatalf("session cookie = %+v, want HttpOnly SameSite=Lax Path=/", cookie)
	}
	if cookie.Secure {
		t.Fatalf("cookie Secure on plain HTTP without SecureCookies")
	}

	r = h.do(c, "GET", "/auth/me", nil)
	wantStatus(t, r, http.StatusOK)
	var me auth.User
	r.data(t, &me)
	if me.ID != u.ID || me.Email != "alice@example.com" || me.Role != auth.RoleMember {
		t.Fatalf("me = %+v, want %+v", me, u)
	}

	// Logout ends the session server-side: replaying the old cookie fails.
	wantStatus(t, h.do(c, "POST", "/auth/logout", nil), http.StatusNoContent)
	replay := h.client()
	req, _ := http.NewRequest("GET", h.srv.URL+"/auth/me", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie.Value})
	res, err := replay.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old cookie after logout: status %d, want 401", res.StatusCode)
	}
}

func TestNoAuth(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ name, method, path, hdrK, hdrV string }{
		{"no credentials", "GET", "/auth/me", "", ""},
		{"tokens list", "GET", "/auth/tokens", "", ""},
		{"bad scheme", "GET", "/auth/me", "Authorization", "Basic YTpi"},
		{"unknown token", "GET", "/auth/me", "Authorization", "Bearer tbk_nope"},
		{"empty bearer", "GET", "/auth/me", "Authorization", "Bearer "},
		{"garbage cookie", "GET", "/auth/me", "Cookie", sessionCookie + "=garbage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.hdrK != "" {
				hdr = []string{tc.hdrK, tc.hdrV}
			}
			r := h.do(h.client(), tc.method, tc.path, nil, hdr...)
			wantStatus(t, r, http.StatusUnauthorized)
			e := r.errBody(t)
			if e.Code != "unauthenticated" || e.RequestID == "" || e.RequestID != r.header.Get(requestIDHeader) {
				t.Fatalf("error = %+v, header id %q", e, r.header.Get(requestIDHeader))
			}
		})
	}
}

func TestBearerTokenLifecycle(t *testing.T) {
	h := newHarness(t)
	u := h.createUser("bob@example.com", auth.RoleMember)
	c := h.mustLogin("bob@example.com")
	tok := h.newToken(c, "ci")
	if !strings.HasPrefix(tok.Token, auth.TokenPrefix) || tok.ID == "" || tok.Name != "ci" {
		t.Fatalf("token response = %+v", tok)
	}
	bearer := []string{"Authorization", "Bearer " + tok.Token}

	r := h.do(h.client(), "GET", "/auth/me", nil, bearer...)
	wantStatus(t, r, http.StatusOK)
	var me auth.User
	r.data(t, &me)
	if me.ID != u.ID {
		t.Fatalf("bearer me = %+v, want user %s", me, u.ID)
	}

	// The list shows metadata, never the token.
	r = h.do(h.client(), "GET", "/auth/tokens", nil, bearer...)
	wantStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.body), tok.Token) {
		t.Fatalf("token list leaks the token: %s", r.body)
	}
	var list []auth.Token
	r.data(t, &list)
	if len(list) != 1 || list[0].ID != tok.ID || list[0].LastUsedAt.IsZero() {
		t.Fatalf("tokens = %+v, want one used token %s", list, tok.ID)
	}

	// Another user cannot revoke it: 404, and it keeps working.
	h.createUser("eve@example.com", auth.RoleMember)
	eve := h.mustLogin("eve@example.com")
	wantStatus(t, h.do(eve, "DELETE", "/auth/tokens/"+tok.ID, nil), http.StatusNotFound)
	wantStatus(t, h.do(h.client(), "GET", "/auth/me", nil, bearer...), http.StatusOK)

	// Revoked: 401.
	r = h.do(c, "DELETE", "/auth/tokens/"+tok.ID, nil)
	wantStatus(t, r, http.StatusOK)
	var revoked auth.Token
	r.data(t, &revoked)
	if revoked.RevokedAt.IsZero() {
		t.Fatalf("revoked token = %+v, want revoked_at", revoked)
	}
	wantStatus(t, h.do(h.client(), "GET", "/auth/me", nil, bearer...), http.StatusUnauthorized)
}

func TestCrossOriginCookieWrite(t *testing.T) {
	h := newHarness(t)
	h.createUser("carol@example.com", auth.RoleMember)
	c := h.mustLogin("carol@example.com")
	body := map[string]string{"name": "x"}

	wantStatus(t, h.do(c, "POST", "/auth/tokens", body, "Origin", "https://evil.example"), http.StatusForbidden)
	r := h.do(c, "POST", "/auth/tokens", body, "Sec-Fetch-Site", "cross-site")
	wantStatus(t, r, http.StatusForbidden)
	if e := r.errBody(t); e.Code != "forbidden" {
		t.Fatalf("error = %+v, want forbidden", e)
	}
	// Reads are not blocked; same-origin writes and non-browser clients pass.
	wantStatus(t, h.do(c, "GET", "/auth/me", nil, "Origin", "https://evil.example"), http.StatusOK)
	wantStatus(t, h.do(c, "POST", "/auth/tokens", body, "Origin", h.srv.URL), http.StatusCreated)
	wantStatus(t, h.do(c, "POST", "/auth/tokens", body, "Sec-Fetch-Site", "same-origin"), http.StatusCreated)
	tok := h.newToken(c, "api")
	// A Bearer request is exempt: browsers never attach it on their own.
	wantStatus(t, h.do(h.client(), "POST", "/auth/tokens", body,
		"Authorization", "Bearer "+tok.Token, "Origin", "https://evil.example"), http.StatusCreated)
	// Login from a foreign site is refused too (login CSRF).
	r = h.do(h.client(), "POST", "/auth/login", map[string]string{"email": "carol@example.com", "password": testPassword},
		"Origin", "https://evil.example")
	wantStatus(t, r, http.StatusForbidden)
}

func TestSessionExpiry(t *testing.T) {
	h := newHarness(t)
	h.createUser("dan@example.com", auth.RoleMember)
	c := h.mustLogin("dan@example.com")
	wantStatus(t, h.do(c, "GET", "/auth/me", nil), http.StatusOK)
	h.clock.Advance(59 * time.Minute)
	wantStatus(t, h.do(c, "GET", "/auth/me", nil), http.StatusOK)
	h.clock.Advance(time.Minute) // TTL is one hour
	r := h.do(c, "GET", "/auth/me", nil)
	wantStatus(t, r, http.StatusUnauthorized)
	if e := r.errBody(t); !strings.Contains(e.Message, "expired") {
		t.Fatalf("message = %q, want it to say expired", e.Message)
	}
	if n, err := h.auth.PruneSessions(context.Background()); err != nil || n != 1 {
		t.Fatalf("PruneSessions = %d, %v; want 1", n, err)
	}
}

func TestNoUserEnumeration(t *testing.T) {
	h := newHarness(t)
	h.createUser("erin@example.com", auth.RoleMember)
	wrong := h.login(h.client(), "erin@example.com", "not the password")
	unknown := h.login(h.client(), "nobody@example.com", "not the password")
	wantStatus(t, wrong, http.StatusUnauthorized)
	wantStatus(t, unknown, http.StatusUnauthorized)
	we, ue := wrong.errBody(t), unknown.errBody(t)
	if we.Code != ue.Code || we.Message != ue.Message {
		t.Fatalf("wrong password %+v vs unknown email %+v: responses differ", we, ue)
	}
	if strings.Contains(strings.ToLower(we.Message), "user") && strings.Contains(we.Message, "not found") {
		t.Fatalf("message reveals existence: %q", we.Message)
	}
}

func TestLoginThrottle(t *testing.T) {
	h := newHarness(t) // AccountLimit 3 within 10 minutes
	h.createUser("fay@example.com", auth.RoleMember)
	for i := range 3 {
		wantStatus(t, h.login(h.client(), "fay@example.com", "wrong-"+strconv.Itoa(i)), http.StatusUnauthorized)
	}
	h.clock.Advance(time.Minute)
	r := h.login(h.client(), "fay@example.com", testPassword) // even the right password
	wantStatus(t, r, http.StatusTooManyRequests)
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra != 9*60 {
		t.Fatalf("Retry-After = %q, want %d", r.header.Get("Retry-After"), 9*60)
	}
	if e := r.errBody(t); e.Code != "too_many_requests" {
		t.Fatalf("code = %q", e.Code)
	}
	// Other accounts are unaffected.
	h.createUser("gus@example.com", auth.RoleMember)
	wantStatus(t, h.login(h.client(), "gus@example.com", testPassword), http.StatusOK)
	// After the window the account can log in again, and success clears the count.
	h.clock.Advance(9 * time.Minute)
	wantStatus(t, h.login(h.client(), "fay@example.com", testPassword), http.StatusOK)
	wantStatus(t, h.login(h.client(), "fay@example.com", "wrong"), http.StatusUnauthorized)
	wantStatus(t, h.login(h.client(), "fay@example.com", testPassword), http.StatusOK)
	m := string(h.do(h.client(), "GET", "/metrics", nil).body)
	for _, want := range []string{
		`techboss_auth_logins_total{result="ok"} 3`,
		`techboss_auth_logins_total{result="rejected"} 4`,
		`techboss_auth_logins_total{result="throttled"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestLoginThrottlePerIP(t *testing.T) {
	h := newHarness(t, func(o *auth.Options) { o.AccountLimit, o.IPLimit = 100, 4 })
	h.createUser("hal@example.com", auth.RoleMember)
	// Spraying different accounts from one address trips the per-IP limit.
	for i := range 4 {
		wantStatus(t, h.login(h.client(), "spray"+strconv.Itoa(i)+"@example.com", "x"), http.StatusUnauthorized)
	}
	wantStatus(t, h.login(h.client(), "hal@example.com", testPassword), http.StatusTooManyRequests)
}

func TestAdminCreatesUser(t *testing.T) {
	h := newHarness(t)
	h.createUser("root@example.com", auth.RoleAdmin)
	h.createUser("mem@example.com", auth.RoleMember)
	admin, member := h.mustLogin("root@example.com"), h.mustLogin("mem@example.com")
	body := map[string]string{"email": "new@example.com", "password": "another long one", "role": "member"}
	wantStatus(t, h.do(member, "POST", "/auth/users", body), http.StatusForbidden)
	r := h.do(admin, "POST", "/auth/users", body)
	wantStatus(t, r, http.StatusCreated)
	var u auth.User
	r.data(t, &u)
	wantStatus(t, h.do(admin, "POST", "/auth/users", body), http.StatusConflict)
	wantStatus(t, h.do(admin, "GET", "/auth/users/"+u.ID, nil), http.StatusOK)
	wantStatus(t, h.do(member, "GET", "/auth/users/"+u.ID, nil), http.StatusNotFound)
	r = h.do(admin, "POST", "/auth/users", map[string]string{"email": "bad", "password": "short", "role": "king"})
	wantStatus(t, r, http.StatusUnprocessableEntity)
	got := map[string]bool{}
	for _, f := range r.errBody(t).Fields {
		got[f.Field] = true
	}
	if !got["email"] || !got["password"] || !got["role"] {
		t.Fatalf("fields = %+v, want email, password, role", r.errBody(t).Fields)
	}
}
