package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
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

// clientFrom returns a client whose connections come from the loopback
// address ip (127.0.0.0/8 is all local on Linux), so the server sees a
// different peer than the default 127.0.0.1.
func (h *harness) clientFrom(ip string) *http.Client {
	h.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	h.t.Cleanup(tr.CloseIdleConnections)
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Transport: tr}
}

// behindProxies serves the harness's auth service again with
// TrustedProxies set.
func (h *harness) behindProxies(cidrs ...string) {
	h.t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	h.srv = httptest.NewServer(validateResponses(h.t, NewServer(Deps{
		Logger: h.logger(), Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test",
		TrustedProxies: ps,
	})))
	h.t.Cleanup(h.srv.Close)
}

// loginVia logs in with one X-Forwarded-For header line per xff value.
func (h *harness) loginVia(c *http.Client, email, password string, xff ...string) resp {
	h.t.Helper()
	body := `{"email":"` + email + `","password":"` + password + `"}`
	req, err := http.NewRequest("POST", h.srv.URL+"/auth/login", strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	res, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// wantThrottled checks a 429 with Retry-After retryAfter and a message
// naming the reason; the body never echoes the password tried.
func wantThrottled(t *testing.T, r resp, retryAfter int, reason, password string) {
	t.Helper()
	wantStatus(t, r, http.StatusTooManyRequests)
	if got := r.header.Get("Retry-After"); got != strconv.Itoa(retryAfter) {
		t.Fatalf("Retry-After = %q, want %d", got, retryAfter)
	}
	e := r.errBody(t)
	if e.Code != "too_many_requests" || !strings.Contains(e.Message, reason) || e.RequestID == "" {
		t.Fatalf("error = %+v, want too_many_requests naming %q", e, reason)
	}
	if strings.Contains(string(r.body), password) {
		t.Fatalf("429 body echoes the password: %s", r.body)
	}
}

// The guesser's address is slowed with a doubling wait; the owner, from
// another address, logs in as usual; a success clears the guesser's pair.
func TestLoginThrottleOwnerElsewhere(t *testing.T) {
	h := newHarness(t) // AccountLimit 3: the 3rd failure starts a 1 s wait
	h.createUser("fay@example.com", auth.RoleMember)
	guesser, owner := h.clientFrom("127.0.0.2"), h.client()
	for i := range 3 {
		wantStatus(t, h.login(guesser, "fay@example.com", "wrong-"+strconv.Itoa(i)), http.StatusUnauthorized)
	}
	wantThrottled(t, h.login(guesser, "fay@example.com", testPassword), 1, "from your address", testPassword)
	wantStatus(t, h.login(owner, "fay@example.com", testPassword), http.StatusOK)

	// Each further failure doubles the guesser's wait.
	for _, wait := range []int{1, 2, 4, 8} {
		h.clock.Advance(time.Duration(wait) * time.Second)
		wantStatus(t, h.login(guesser, "fay@example.com", "wrong"), http.StatusUnauthorized)
		wantThrottled(t, h.login(guesser, "fay@example.com", "wrong"), 2*wait, "from your address", "wrong")
		wantStatus(t, h.login(owner, "fay@example.com", testPassword), http.StatusOK)
	}

	// A success from the guesser's address clears it: three free failures again.
	h.clock.Advance(16 * time.Second)
	wantStatus(t, h.login(guesser, "fay@example.com", testPassword), http.StatusOK)
	for range 3 {
		wantStatus(t, h.login(guesser, "fay@example.com", "wrong"), http.StatusUnauthorized)
	}
	wantThrottled(t, h.login(guesser, "fay@example.com", "wrong"), 1, "from your address", "wrong")

	m := string(h.do(h.client(), "GET", "/metrics", nil).body)
	for _, want := range []string{
		`techboss_auth_logins_total{result="ok"} 6`,
		`techboss_auth_logins_total{result="rejected"} 10`,
		`techboss_auth_logins_total{result="throttled"} 6`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if logs := h.logs.String(); strings.Contains(logs, testPassword) || strings.Contains(logs, "wrong-1") {
		t.Errorf("a password reached the logs")
	}
}

func TestLoginThrottlePerIP(t *testing.T) {
	h := newHarness(t, func(o *auth.Options) { o.AccountLimit, o.IPLimit = 100, 4 })
	h.createUser("hal@example.com", auth.RoleMember)
	sprayer := h.clientFrom("127.0.0.3")
	// Spraying different accounts from one address trips the per-address limit ...
	for i := range 4 {
		wantStatus(t, h.login(sprayer, "spray"+strconv.Itoa(i)+"@example.com", "x"), http.StatusUnauthorized)
	}
	wantThrottled(t, h.login(sprayer, "hal@example.com", testPassword), 1, "from your address", testPassword)
	// ... and nobody else's.
	wantStatus(t, h.login(h.client(), "hal@example.com", testPassword), http.StatusOK)
}

// Without trusted proxies X-Forwarded-For is ignored: a guesser cannot
// dodge its throttle by rotating it, nor pin its failures on the owner's
// address by naming it.
func TestLoginForwardedForFromUntrustedPeer(t *testing.T) {
	h := newHarness(t)
	h.createUser("ida@example.com", auth.RoleMember)
	guesser := h.clientFrom("127.0.0.2")
	for i := range 3 {
		// 127.0.0.1 is where the owner logs in from.
		xff := []string{"127.0.0.1", "203.0.113." + strconv.Itoa(i), "127.0.0.1, 127.0.0.1"}[i]
		wantStatus(t, h.loginVia(guesser, "ida@example.com", "wrong", xff), http.StatusUnauthorized)
	}
	wantThrottled(t, h.loginVia(guesser, "ida@example.com", testPassword, "198.51.100.77"), 1, "from your address", testPassword)
	wantStatus(t, h.loginVia(h.client(), "ida@example.com", testPassword), http.StatusOK)
}

// Behind trusted proxies the client is the right-most X-Forwarded-For
// address that is not a proxy; what the client wrote to its left counts
// for nothing.
func TestLoginForwardedForFromTrustedProxy(t *testing.T) {
	h := newHarness(t)
	h.behindProxies("127.0.0.1/32", "10.0.0.0/8") // the edge proxy dials from 127.0.0.1; 10/8 are inner hops
	h.createUser("jo@example.com", auth.RoleMember)
	proxy := h.client()
	const ownerAddr, guesserAddr = "203.0.113.9", "198.51.100.7"
	for range 3 {
		wantStatus(t, h.loginVia(proxy, "jo@example.com", "wrong", guesserAddr), http.StatusUnauthorized)
	}
	for _, tc := range []struct {
		name string
		xff  []string
	}{
		{"one hop", []string{guesserAddr}},
		{"spoofed owner address on the left", []string{ownerAddr + ", " + guesserAddr}},
		{"through an inner proxy", []string{ownerAddr + ",  " + guesserAddr + ", 10.1.2.3"}},
		{"split across header lines", []string{ownerAddr, guesserAddr + ":51000", "10.1.2.3"}},
		{"garbage left of the client", []string{"not-an-ip, " + guesserAddr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantThrottled(t, h.loginVia(proxy, "jo@example.com", testPassword, tc.xff...), 1, "from your address", testPassword)
		})
	}
	// The owner behind the same proxy is a different client.
	wantStatus(t, h.loginVia(proxy, "jo@example.com", testPassword, ownerAddr), http.StatusOK)
	wantStatus(t, h.loginVia(proxy, "jo@example.com", testPassword, "10.9.9.9, "+ownerAddr+", 10.1.2.3"), http.StatusOK)

	// A peer that is not a trusted proxy is the client, whatever it forwards:
	// its failures land on its own address, not on the owner's it names.
	direct := h.clientFrom("127.0.0.2")
	for range 3 {
		wantStatus(t, h.loginVia(direct, "jo@example.com", "wrong", ownerAddr), http.StatusUnauthorized)
	}
	wantThrottled(t, h.loginVia(direct, "jo@example.com", testPassword, "192.0.2.200"), 1, "from your address", testPassword)
	wantStatus(t, h.loginVia(proxy, "jo@example.com", testPassword, ownerAddr), http.StatusOK)
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy", "192.0.2.1:5000", nil, "192.0.2.1"},
		{"untrusted peer, header ignored", "192.0.2.1:5000", []string{"198.51.100.1"}, "192.0.2.1"},
		{"untrusted v6 peer", "[2001:db8::1]:443", []string{"198.51.100.1"}, "2001:db8::1"},
		{"trusted peer, no header", "10.0.0.1:5000", nil, "10.0.0.1"},
		{"trusted peer", "10.0.0.1:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"right-most untrusted wins", "10.0.0.1:5000", []string{"6.6.6.6, 198.51.100.1, 10.0.0.2"}, "198.51.100.1"},
		{"several lines", "10.0.0.1:5000", []string{"6.6.6.6", "198.51.100.1", "10.0.0.2"}, "198.51.100.1"},
		{"all proxies", "10.0.0.1:5000", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"garbage at a proxy hop", "10.0.0.1:5000", []string{"198.51.100.1, junk, 10.0.0.2"}, "10.0.0.2"},
		{"empty entry", "10.0.0.1:5000", []string{"198.51.100.1,,"}, "10.0.0.1"},
		{"ports and brackets", "[fd00::1]:80", []string{"[2001:db8::7]:1234, 10.0.0.9:80"}, "2001:db8::7"},
		{"mapped v4", "[::ffff:10.0.0.1]:80", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"not an IP peer", "@", []string{"198.51.100.1"}, "@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientIP(tc.peer, tc.xff, trusted); got != tc.want {
				t.Fatalf("clientIP(%q, %q) = %q, want %q", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
}

// FuzzClientIP: X-Forwarded-For is untrusted input. An untrusted peer is
// always the answer; behind a proxy the answer is an address.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"", "198.51.100.1", "1.1.1.1, 10.0.0.2", "[::1]:80,junk", ",,,", "1.2.3.4:99999", "fe80::1%eth0", strings.Repeat("1.1.1.1,", 100)} {
		f.Add(s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, xff string) {
		if got := clientIP("192.0.2.1:1", []string{xff}, trusted); got != "192.0.2.1" {
			t.Fatalf("untrusted peer: got %q", got)
		}
		got := clientIP("10.0.0.1:1", []string{xff}, trusted)
		if _, err := netip.ParseAddr(got); err != nil {
			t.Fatalf("behind a proxy: got %q, not an address", got)
		}
	})
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
