package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// previewDomain is the preview domain of the tests' servers.
const previewDomain = "example.test"

var previewAppBuild struct {
	once sync.Once
	path string
	err  error
}

// previewAppBin builds internal/testbin/previewapp (static) once per test
// binary, at a fixed path (replaced, not accumulated, across runs; built
// beside it and renamed, as test processes may build it at once).
func previewAppBin(t testing.TB) string {
	t.Helper()
	previewAppBuild.once.Do(func() {
		previewAppBuild.path = filepath.Join(os.TempDir(), fmt.Sprintf("techboss-httpapi-test-previewapp-%d", os.Getuid()))
		tmp := fmt.Sprintf("%s.%d", previewAppBuild.path, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "github.com/techbossai/techboss/internal/testbin/previewapp")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			previewAppBuild.err = fmt.Errorf("build previewapp: %v\n%s", err, out)
			return
		}
		previewAppBuild.err = os.Rename(tmp, previewAppBuild.path)
	})
	if previewAppBuild.err != nil {
		t.Fatal(previewAppBuild.err)
	}
	return previewAppBuild.path
}

// newPreviewHarness is newSandboxHarness with share links and the host form.
// echoPreviewWS opens the preview app's echo WebSocket (port 8000, /ws)
// with an API token and checks one message comes back.
func (h *sbHarness) echoPreviewWS(ctx context.Context, t *testing.T, id, tok, msg string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.srv.URL, "http")+"/sandbox/"+id+"/ports/8000/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.CloseNow()
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != msg {
		c.CloseNow()
		t.Fatalf("echo: %q %v, want %q", b, err, msg)
	}
	return c
}

func newPreviewHarness(t testing.TB, tweak ...func(*Deps)) *sbHarness {
	t.Helper()
	requireSandboxHost(t)
	h := &harness{
		db: storetest.OpenSQLite(t), logs: newLogs(t), reg: prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	if tt, ok := t.(*testing.T); ok {
		h.t = tt
	}
	log := h.logger()
	h.auth = auth.New(auth.Options{
		Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute,
	})
	m := newSandboxManager(t, h.db, h.clock.Now, sandbox.DefaultLimits())
	links, err := sandbox.NewPreviewLinks(m, h.db, bytes.Repeat([]byte{7}, 32), h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{
		Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test", Sandboxes: m,
		PreviewLinks: links, PreviewDomain: previewDomain,
	}
	for _, f := range tweak {
		f(&deps)
	}
	h.srv = httptest.NewServer(NewServer(deps))
	t.Cleanup(h.srv.Close)
	return &sbHarness{harness: h, m: m}
}

// startPreviewApps copies previewapp into a new sandbox of c's user, runs
// it on port 8000 and python3 -m http.server on 8001 (serving
// /workspace/site), and waits until both accept connections.
func (h *sbHarness) startPreviewApps(c *http.Client) string {
	t := h.t
	t.Helper()
	id := h.createSandbox(c, map[string]any{"network": "none"})
	bin, err := os.ReadFile(previewAppBin(t))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.do(c, "PUT", "/sandbox/"+id+"/files/previewapp?mode=0755", bin), http.StatusOK)
	wantStatus(t, h.do(c, "PUT", "/sandbox/"+id+"/files/site/hello.txt", "hello from python\n"), http.StatusOK)
	script := `(./previewapp -port 8000 >/tmp/app.log 2>&1 &); (cd site && python3 -m http.server 8001 --bind 127.0.0.1 >/tmp/py.log 2>&1 &)
for i in $(seq 200); do python3 -c 'import socket; [socket.create_connection(("127.0.0.1", p)) for p in (8000, 8001)]' 2>/dev/null && exit 0; sleep 0.05; done
cat /tmp/app.log /tmp/py.log; exit 1`
	var ex execWaitResponse
	r := h.do(c, "POST", "/sandbox/"+id+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", script}})
	wantStatus(t, r, http.StatusOK)
	r.data(t, &ex)
	if ex.ExitCode != 0 {
		t.Fatalf("starting the apps: %+v", ex)
	}
	return id
}

type echoedRequest struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
}

func echoed(t *testing.T, r resp) echoedRequest {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var e echoedRequest
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("echo %q: %v", r.body, err)
	}
	return e
}

// noRedirect is a client with a jar that does not follow redirects.
func noRedirect() *http.Client {
	c := (&harness{}).client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func TestPreviewProxy(t *testing.T) {
	t.Parallel()
	h := newPreviewHarness(t)
	h.createUser("alice@example.com", auth.RoleMember)
	h.createUser("bob@example.com", auth.RoleMember)
	h.alice, h.bob = h.mustLogin("alice@example.com"), h.mustLogin("bob@example.com")
	tok := h.newToken(h.alice, "cli").Token
	bearer := "Bearer " + tok
	id := h.startPreviewApps(h.alice)
	base := "/sandbox/" + id + "/ports/"

	t.Run("list", func(t *testing.T) {
		var lp listPortsResponse
		r := h.do(h.alice, "GET", "/sandbox/"+id+"/ports", nil)
		wantStatus(t, r, http.StatusOK)
		r.data(t, &lp)
		var got []string
		for _, p := range lp.Ports {
			got = append(got, fmt.Sprintf("%d %s %s %s %s", p.Port.Port, p.Address, p.Process, p.PreviewURL, p.HostURL))
		}
		want := []string{
			fmt.Sprintf("8000 127.0.0.1 previewapp %s8000/ http://8000-%s.preview.%s/", base, hostID(id), previewDomain),
			fmt.Sprintf("8001 127.0.0.1 python3 %s8001/ http://8001-%s.preview.%s/", base, hostID(id), previewDomain),
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("ports:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		wantStatus(t, h.do(h.bob, "GET", "/sandbox/"+id+"/ports", nil), http.StatusNotFound)
	})

	t.Run("python http.server with the session cookie", func(t *testing.T) {
		r := h.do(h.alice, "GET", base+"8001/hello.txt", nil)
		wantStatus(t, r, http.StatusOK)
		if string(r.body) != "hello from python\n" {
			t.Errorf("body %q", r.body)
		}
		if csp := r.header.Get("Content-Security-Policy"); csp != previewCSP {
			t.Errorf("path form CSP %q, want %q", csp, previewCSP)
		}
	})

	t.Run("the app never sees the caller's credentials", func(t *testing.T) {
		e := echoed(t, h.do(h.alice, "GET", base+"8000/headers?x=1", nil, "Authorization", bearer, "Cookie", "appcookie=kept"))
		if e.Path != "/headers" || e.Query != "x=1" {
			t.Errorf("app got path %q query %q, want /headers x=1", e.Path, e.Query)
		}
		if e := echoed(t, h.do(h.alice, "GET", base+"08000/headers", nil)); e.Path != "/headers" {
			t.Errorf("via port 08000 the app got path %q, want /headers", e.Path)
		}
		all := fmt.Sprint(e.Headers)
		if e.Headers.Get("Authorization") != "" || strings.Contains(all, tok) || strings.Contains(all, sessionCookie) {
			t.Errorf("the app saw credentials: %v", e.Headers)
		}
		if !strings.Contains(e.Headers.Get("Cookie"), "appcookie=kept") {
			t.Errorf("the app's own cookie was not forwarded: %v", e.Headers)
		}
		if got := e.Headers.Get("X-Forwarded-Prefix"); got != base+"8000" {
			t.Errorf("X-Forwarded-Prefix %q", got)
		}
		if e.Headers.Get("X-Forwarded-For") == "" || e.Headers.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("X-Forwarded-* missing: %v", e.Headers)
		}
		// Same with the session cookie only.
		e = echoed(t, h.do(h.alice, "GET", base+"8000/headers", nil))
		if strings.Contains(fmt.Sprint(e.Headers), sessionCookie) {
			t.Errorf("the app saw the session cookie: %v", e.Headers)
		}
		// The path form's app cannot set cookies on the server's origin.
		r := h.do(h.alice, "GET", base+"8000/cookie?domain=127.0.0.1", nil)
		wantStatus(t, r, http.StatusOK)
		if sc := r.header.Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("path form passed Set-Cookie %q", sc)
		}
	})

	t.Run("refused", func(t *testing.T) {
		wantStatus(t, h.do(h.bob, "GET", base+"8000/headers", nil), http.StatusNotFound)
		wantStatus(t, h.do(h.client(), "GET", base+"8000/headers", nil), http.StatusUnauthorized)
		wantField(t, h.do(h.alice, "GET", base+"http/", nil), http.StatusUnprocessableEntity, "port")
		wantField(t, h.do(h.alice, "GET", base+"70000/", nil), http.StatusUnprocessableEntity, "port")
		r := h.do(h.alice, "GET", base+"8002/", nil)
		wantStatus(t, r, http.StatusBadGateway)
		if e := r.errBody(t); !strings.Contains(e.Message, "8002") {
			t.Errorf("502 message %q does not name the port", e.Message)
		}
		// A cross-site write with the session cookie is refused (CSRF
		// against the app).
		wantStatus(t, h.do(h.mustLogin("alice@example.com"), "POST", base+"8000/headers", "x", "Sec-Fetch-Site", "cross-site"), http.StatusForbidden)
	})

	var pass *http.Cookie
	t.Run("owner pass", func(t *testing.T) {
		// The session opens the path form and leaves a pass for the page's
		// own requests, which a browser sends without the session cookie
		// (the page is an opaque origin).
		r := h.do(h.mustLogin("alice@example.com"), "GET", base+"8000/", nil)
		wantStatus(t, r, http.StatusOK)
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if c.Name == previewCookie {
				pass = c
			}
		}
		if pass == nil || pass.Path != base+"8000/" || !pass.HttpOnly || !sandbox.IsOwnerPass(pass.Value) {
			t.Fatalf("owner pass cookie %+v, want HttpOnly, Path=%s8000/", pass, base)
		}
		e := echoed(t, h.do(http.DefaultClient, "GET", base+"8000/headers", nil, "Cookie", previewCookie+"="+pass.Value))
		if strings.Contains(fmt.Sprint(e.Headers), pass.Value) {
			t.Errorf("the app saw the owner pass: %v", e.Headers)
		}
		wantStatus(t, h.do(http.DefaultClient, "GET", base+"8001/hello.txt", nil, "Cookie", previewCookie+"="+pass.Value), http.StatusNotFound)
		wantStatus(t, h.do(http.DefaultClient, "GET", base+"8000/", nil, "Cookie", previewCookie+"="+pass.Value+"x"), http.StatusNotFound)
		// Bob's session gets a pass of his own, which opens nothing of Alice's.
		wantStatus(t, h.do(h.bob, "GET", base+"8000/", nil), http.StatusNotFound)
		// A stale cookie beside a live session: the session decides.
		wantStatus(t, h.do(h.alice, "GET", base+"8000/", nil, "Cookie", previewCookie+"=pl_gone.x"), http.StatusOK)
	})

	t.Run("websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		u := "ws" + strings.TrimPrefix(h.srv.URL, "http") + base + "8000/ws"
		c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {bearer}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for _, msg := range []string{"hello", strings.Repeat("x", 100_000)} {
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != msg {
				t.Errorf("echo of %d bytes: got %d bytes", len(msg), len(b))
			}
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		if _, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer nope"}}}); err == nil {
			t.Error("a WebSocket with a bad token was accepted")
		}
	})

	t.Run("share link", func(t *testing.T) {
		var cl createLinkResponse
		r := h.do(h.alice, "POST", base+"8000/links", map[string]any{"expires_in_s": 600})
		wantStatus(t, r, http.StatusCreated)
		r.data(t, &cl)
		u, err := url.Parse(cl.URL)
		if err != nil || u.Path != base+"8000/" || u.Query().Get(previewTokenParam) == "" {
			t.Fatalf("link URL %q", cl.URL)
		}
		linkTok := u.Query().Get(previewTokenParam)
		if want := fmt.Sprintf("http://8000-%s.preview.%s/?", hostID(id), previewDomain); !strings.HasPrefix(cl.HostURL, want) {
			t.Errorf("host_url %q, want %s...", cl.HostURL, want)
		}
		// First visit: a cookie for this preview and a redirect without the token.
		anon := noRedirect()
		r = h.do(anon, "GET", cl.URL, nil)
		wantStatus(t, r, http.StatusSeeOther)
		if loc := r.header.Get("Location"); loc != base+"8000/" {
			t.Errorf("redirect to %q, want %s8000/", loc, base)
		}
		e := echoed(t, h.do(anon, "GET", base+"8000/headers", nil))
		if strings.Contains(fmt.Sprint(e.Headers), linkTok) || strings.Contains(fmt.Sprint(e.Headers), previewCookie) {
			t.Errorf("the app saw the link's token: %v", e.Headers)
		}
		// The cookie is this port's only; the token names its port.
		wantStatus(t, h.do(anon, "GET", base+"8001/hello.txt", nil), http.StatusUnauthorized)
		wantStatus(t, h.do(h.client(), "GET", base+"8001/hello.txt?"+previewTokenParam+"="+url.QueryEscape(linkTok), nil), http.StatusNotFound)
		// A forged token (right ID, wrong MAC) is refused.
		forged := strings.SplitN(linkTok, ".", 2)[0] + ".AAAA"
		wantStatus(t, h.do(h.client(), "GET", base+"8000/?"+previewTokenParam+"="+forged, nil), http.StatusNotFound)
		// Database write access alone mints no link: a row for a token
		// without the server's MAC is refused.
		var me auth.User
		h.do(h.alice, "GET", "/auth/me", nil).data(t, &me)
		minted := "pl_minted.AAAA"
		sum := sha256.Sum256([]byte(minted))
		if err := h.db.CreatePreviewLink(context.Background(), &sandbox.PreviewLink{
			ID: "pl_minted", SandboxID: id, OwnerID: me.ID, Port: 8000, TokenHash: hex.EncodeToString(sum[:]),
			CreatedAt: h.clock.Now(), ExpiresAt: h.clock.Now().Add(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, h.do(h.client(), "GET", base+"8000/?"+previewTokenParam+"="+minted, nil), http.StatusNotFound)
		wantStatus(t, h.do(h.alice, "DELETE", base+"8000/links/pl_minted", nil), http.StatusNoContent)
		// Listed without its token.
		var ll listLinksResponse
		r = h.do(h.alice, "GET", base+"8000/links", nil)
		wantStatus(t, r, http.StatusOK)
		r.data(t, &ll)
		if len(ll.Links) != 1 || ll.Links[0].ID != cl.LinkID || strings.Contains(string(r.body), linkTok) {
			t.Errorf("links %s", r.body)
		}
		wantStatus(t, h.do(h.bob, "GET", base+"8000/links", nil), http.StatusNotFound)
		wantStatus(t, h.do(h.bob, "DELETE", base+"8000/links/"+cl.LinkID, nil), http.StatusNotFound)
		// Revoked: refused at once, cookie or not.
		wantStatus(t, h.do(h.alice, "DELETE", base+"8000/links/"+cl.LinkID, nil), http.StatusNoContent)
		wantStatus(t, h.do(anon, "GET", base+"8000/headers", nil), http.StatusNotFound)
		wantStatus(t, h.do(h.client(), "GET", cl.URL, nil), http.StatusNotFound)
		// The token is in no log line.
		if strings.Contains(h.logs.String(), linkTok) {
			t.Error("the link's token is in the server log")
		}
	})

	t.Run("expired link", func(t *testing.T) {
		var cl createLinkResponse
		r := h.do(h.alice, "POST", base+"8001/links", map[string]any{"expires_in_s": 60})
		wantStatus(t, r, http.StatusCreated)
		r.data(t, &cl)
		anon := h.client()
		wantStatus(t, h.do(anon, "GET", cl.URL, nil), http.StatusOK) // followed the redirect
		h.clock.Advance(2 * time.Minute)
		wantStatus(t, h.do(anon, "GET", base+"8001/hello.txt", nil), http.StatusForbidden)
		wantStatus(t, h.do(h.client(), "GET", cl.URL, nil), http.StatusForbidden)
		wantField(t, h.do(h.alice, "POST", base+"8001/links", map[string]any{"expires_in_s": -1}), http.StatusUnprocessableEntity, "expires_in_s")
		wantField(t, h.do(h.alice, "POST", base+"8001/links", map[string]any{"expires_in_s": 1 << 40}), http.StatusUnprocessableEntity, "expires_in_s")
	})

	t.Run("host form", func(t *testing.T) {
		host := fmt.Sprintf("8000-%s.preview.%s", hostID(id), previewDomain)
		if !strings.Contains(id, "_") || strings.Contains(host, "_") {
			t.Fatalf("host %s for sandbox %s, want the ID's _ spelled -", host, id)
		}
		// The ID as the API spells it works too.
		req0, _ := http.NewRequest("GET", h.srv.URL+"/headers", nil)
		req0.Host = fmt.Sprintf("8000-%s.preview.%s", id, previewDomain)
		req0.Header.Set("Authorization", bearer)
		if res, err := http.DefaultClient.Do(req0); err != nil || res.StatusCode != http.StatusOK {
			t.Errorf("host with the ID's _: %v %v", res, err)
		} else {
			res.Body.Close()
		}
		get := func(c *http.Client, path string, hdr ...string) resp {
			t.Helper()
			req, err := http.NewRequest("GET", h.srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return resp{status: res.StatusCode, header: res.Header, body: b}
		}
		e := echoed(t, get(h.alice, "/headers", "Authorization", bearer))
		if e.Host != host || e.Path != "/headers" || e.Headers.Get("Authorization") != "" || e.Headers.Get("X-Forwarded-Host") != host {
			t.Errorf("host form echo %+v", e)
		}
		// The server's own port in the Host header (the domain names none).
		req, _ := http.NewRequest("GET", h.srv.URL+"/headers", nil)
		req.Host = host + ":8443"
		req.Header.Set("Authorization", bearer)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s:8443: status %d, want the preview", host, res.StatusCode)
		}
		// The session cookie is no key to the preview host.
		wantStatus(t, get(h.alice, "/headers"), http.StatusUnauthorized)
		// A share link: token → host cookie → the app.
		var cl createLinkResponse
		h.do(h.alice, "POST", base+"8000/links", map[string]any{}).data(t, &cl)
		hu, _ := url.Parse(cl.HostURL)
		r := get(noRedirect(), "/headers?"+hu.RawQuery)
		wantStatus(t, r, http.StatusSeeOther)
		var ck *http.Cookie
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if c.Name == previewCookie {
				ck = c
			}
		}
		if ck == nil || ck.Path != "/" || ck.Domain != "" || !ck.HttpOnly {
			t.Fatalf("preview cookie %+v, want host-only HttpOnly Path=/", ck)
		}
		if loc := r.header.Get("Location"); loc != "/headers" {
			t.Errorf("redirect to %q", loc)
		}
		e = echoed(t, get(http.DefaultClient, "/headers", "Cookie", ck.String()))
		if strings.Contains(fmt.Sprint(e.Headers), ck.Value) {
			t.Errorf("the app saw the link's token: %v", e.Headers)
		}
		// Its cookies stay on the preview host; it cannot plant a session.
		r = get(http.DefaultClient, "/cookie?domain="+previewDomain, "Cookie", ck.String())
		wantStatus(t, r, http.StatusOK)
		if r.header.Get("Content-Security-Policy") != "" {
			t.Errorf("the host form got the path form's CSP")
		}
		sc := r.header.Values("Set-Cookie")
		if len(sc) != 2 || strings.Contains(strings.ToLower(strings.Join(sc, ";")), "domain=") || strings.Contains(strings.Join(sc, ";"), sessionCookie) {
			t.Errorf("host form Set-Cookie %q, want app and wide, host-only", sc)
		}
		// Another host name under the domain is not a preview.
		req, _ = http.NewRequest("GET", h.srv.URL+"/headers", nil)
		req.Host = "x." + host
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("x.%s: status %d, want the API's 404", host, res.StatusCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.srv.URL, "http")+"/ws", &websocket.DialOptions{Host: host, HTTPHeader: http.Header{"Cookie": {ck.String()}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || !bytes.Equal(b, []byte{0, 1, 2}) {
			t.Errorf("host form WebSocket echo %v %v", b, err)
		}
	})

	// Last: it moves the clock past every session.
	t.Run("owner pass expires", func(t *testing.T) {
		h.clock.Advance(sandbox.OwnerPassTTL + time.Minute)
		wantStatus(t, h.do(http.DefaultClient, "GET", base+"8000/", nil, "Cookie", previewCookie+"="+pass.Value), http.StatusForbidden)
	})
}

// TestPreviewWebSocketEndsOnShutdown: a proxied WebSocket is a hijacked
// connection http.Server.Shutdown neither waits for nor ends; Stopping
// ends it, and WaitStreams waits for it.
func TestPreviewWebSocketEndsOnShutdown(t *testing.T) {
	t.Parallel()
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	var srv *Server
	h := newPreviewHarness(t, func(d *Deps) { d.Stopping = stopping })
	srv = h.srv.Config.Handler.(*Server)
	h.createUser("alice@example.com", auth.RoleMember)
	h.alice = h.mustLogin("alice@example.com")
	tok := h.newToken(h.alice, "cli").Token
	id := h.startPreviewApps(h.alice)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := h.echoPreviewWS(ctx, t, id, tok, "before")
	defer c.CloseNow()
	if err := srv.WaitStreams(canceledCtx()); err == nil {
		t.Error("WaitStreams did not count the open WebSocket")
	}
	stop()
	if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("read after the server began stopping: %v (ctx %v), want the connection closed", err, ctx.Err())
	}
	if err := srv.WaitStreams(ctx); err != nil {
		t.Errorf("WaitStreams after Stopping: %v", err)
	}
}

func canceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// hostID is a sandbox ID as preview host names spell it.
func hostID(id string) string { return strings.ReplaceAll(id, "_", "-") }
