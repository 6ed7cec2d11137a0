package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestAuditCoversEveryRoute walks the router: every state-changing route
// must name its audit action (or say why it is not recorded), so a new
// route cannot slip past the audit log.
func TestAuditCoversEveryRoute(t *testing.T) {
	s := newServer(Deps{})
	var missing []string
	seen := map[string]bool{}
	err := chi.Walk(s.routes().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.ReplaceAll(route, "/*/", "/")
		if len(route) > 1 {
			route = strings.TrimSuffix(route, "/")
		}
		key := method + " " + route
		seen[key] = true
		if method == http.MethodGet || method == http.MethodHead {
			return nil
		}
		if rt, ok := auditRoutes[key]; !ok || rt.Action == "" && rt.Skip == "" {
			missing = append(missing, key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(missing)
	for _, k := range missing {
		t.Errorf("route %s has no audit action: add it to auditRoutes (audit.go)", k)
	}
	for k, rt := range auditRoutes {
		if rt.Action != "" && rt.Skip != "" {
			t.Errorf("%s: both an action and a reason to skip", k)
		}
	}
}

// auditHarness is the server with real sandboxes, secrets and the audit
// log, on SQLite or PostgreSQL.
type auditHarness struct {
	*harness
	log          *audit.Log
	sb           *sbHarness
	alice, admin *http.Client
}

func newAuditHarness(t *testing.T, d store.Dialect) *auditHarness {
	t.Helper()
	requireSandboxHost(t)
	h := &harness{
		t: t, db: storetest.Open(t, d), logs: newLogs(t), reg: prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	log := h.logger()
	h.auth = auth.New(auth.Options{
		Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute,
	})
	m := newSandboxManager(t, h.db, h.clock.Now, sandbox.DefaultLimits())
	sec, err := secrets.New(h.db, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	links, err := sandbox.NewPreviewLinks(m, h.db, bytes.Repeat([]byte{7}, 32), h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	al := audit.New(audit.Options{Repo: h.db, Logger: log, Clock: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = al.Run(ctx) })
	h.srv = httptest.NewServer(validateResponses(t, NewServer(Deps{
		Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test",
		Sandboxes: m, Secrets: sec, Audit: al, PreviewLinks: links,
	})))
	t.Cleanup(func() {
		h.srv.Close()
		cancel()
		wg.Wait()
		items, _ := h.db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range items {
			_, _ = m.Terminate(context.Background(), sb.OwnerID, sb.ID)
		}
	})
	h.createUser("alice@example.com", auth.RoleMember)
	h.createUser("admin@example.com", auth.RoleAdmin)
	ah := &auditHarness{harness: h, log: al, alice: h.mustLogin("alice@example.com"), admin: h.mustLogin("admin@example.com")}
	ah.sb = &sbHarness{harness: h, m: m, alice: ah.alice}
	return ah
}

// entries flushes the log and returns every entry, oldest first.
func (h *auditHarness) entries() []audit.Entry {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.log.Flush(ctx); err != nil {
		h.t.Fatalf("flush audit log: %v", err)
	}
	es, err := h.db.ListAudit(ctx, audit.Filter{})
	if err != nil {
		h.t.Fatal(err)
	}
	slices.Reverse(es)
	return es
}

func TestAuditLog(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) { testAuditLog(t, d) })
	}
}

func testAuditLog(t *testing.T, d store.Dialect) {
	h := newAuditHarness(t, d)
	const (
		secretValue = "s3cr3t-value-7fa1c"
		envSecret   = "env-secret-91bd2e"
	)
	// Each request at its own second, so the entries sort in request order.
	h.clock.Advance(time.Minute)
	start := h.clock.Now()
	tick := func() { h.clock.Advance(time.Second) }
	tick()

	// A failed login.
	wantStatus(t, h.login(h.client(), "alice@example.com", "wrong password 1234"), http.StatusUnauthorized)
	// A token, used for the rest of alice's actions.
	tick()
	tok := h.newToken(h.alice, "ci")
	bearer := []string{"Authorization", "Bearer " + tok.Token}
	tick()
	id := func() string {
		r := h.do(h.client(), "POST", "/sandbox", map[string]any{"image_base": "host"}, bearer...)
		wantStatus(t, r, http.StatusOK)
		var out createSandboxResponse
		r.data(t, &out)
		return out.SandboxID
	}()
	tick()
	wantStatus(t, h.do(h.client(), "POST", "/sandbox/"+id+"/exec?wait=true",
		map[string]any{"command": []string{"sh", "-c", "test -n \"$TOKEN\""}, "env": map[string]string{"TOKEN": envSecret}}, bearer...), http.StatusOK)
	tick()
	wantStatus(t, h.do(h.client(), "PUT", "/sandbox/"+id+"/files/notes/a.txt", "hello "+secretValue, bearer...), http.StatusOK)
	// The terminal (a WebSocket upgrade: recorded when it opens), a
	// managed process, a share link.
	tick()
	tm := h.sb.mustDialPTY(h.alice, id, "")
	tick()
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id+"/pty/sessions/"+tm.id, nil), http.StatusNoContent)
	tick()
	r := h.do(h.client(), "POST", "/sandbox/"+id+"/processes", map[string]any{"command": []string{"sleep", "60"}, "env": map[string]string{"TOKEN": envSecret}}, bearer...)
	wantStatus(t, r, http.StatusCreated)
	var p sandbox.Process
	r.data(t, &p)
	pid := fmt.Sprint(p.PID)
	tick()
	wantStatus(t, h.do(h.client(), "POST", "/sandbox/"+id+"/processes/"+pid+"/signal", map[string]string{"signal": "SIGTERM"}, bearer...), http.StatusNoContent)
	tick()
	r = h.do(h.client(), "POST", "/sandbox/"+id+"/ports/8000/links", map[string]any{"expires_in_s": 600}, bearer...)
	wantStatus(t, r, http.StatusCreated)
	var link struct {
		LinkID string `json:"link_id"`
	}
	r.data(t, &link)
	tick()
	wantStatus(t, h.do(h.client(), "DELETE", "/sandbox/"+id+"/ports/8000/links/"+link.LinkID, nil, bearer...), http.StatusNoContent)
	tick()
	wantStatus(t, h.do(h.client(), "PUT", "/secrets/DEPLOY_KEY", map[string]string{"value": secretValue}, bearer...), http.StatusNoContent)
	tick()
	wantStatus(t, h.do(h.client(), "DELETE", "/secrets/DEPLOY_KEY", nil, bearer...), http.StatusNoContent)
	// A failed action records its status and error code.
	tick()
	wantStatus(t, h.do(h.client(), "POST", "/sandbox/sb_nope/exec?wait=true", map[string]any{"command": []string{"true"}}, bearer...), http.StatusNotFound)
	tick()
	wantStatus(t, h.do(h.alice, "DELETE", "/auth/tokens/"+tok.ID, nil), http.StatusOK)
	tick()
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id, nil), http.StatusOK)
	tick()
	wantStatus(t, h.do(h.alice, "POST", "/auth/logout", nil), http.StatusNoContent)
	// Reads are not recorded.
	tick()
	wantStatus(t, h.do(h.admin, "GET", "/auth/me", nil), http.StatusOK)

	var es []audit.Entry
	for _, e := range h.entries() {
		if e.At.After(start) {
			es = append(es, e)
		}
	}
	type row struct {
		Action, Email, Auth, TokenID, Resource, ErrorCode string
		Status                                            int
	}
	var got []row
	for _, e := range es {
		got = append(got, row{e.Action, e.Email, e.Auth, e.TokenID, e.Resource, e.ErrorCode, e.Status})
		if e.IP != "127.0.0.1" || e.Route == "" || e.Method == "" || e.RequestID == "" || e.At.IsZero() || e.ID == "" {
			t.Errorf("entry %+v: want ip 127.0.0.1 and route, method, request ID, time, ID", e)
		}
	}
	const a = "alice@example.com"
	want := []row{
		{"login.failed", a, "password", "", "", "unauthenticated", 401},
		{"token.create", a, "session", "", "token:" + tok.ID, "", 201},
		{"sandbox.create", a, "token", tok.ID, "sandbox:" + id, "", 200},
		{"exec", a, "token", tok.ID, "sandbox:" + id, "", 200},
		{"file.write", a, "token", tok.ID, "sandbox:" + id + "/file:notes/a.txt", "", 200},
		{"pty.open", a, "session", "", "sandbox:" + id, "", 101},
		{"pty.close", a, "session", "", "sandbox:" + id + "/pty:" + tm.id, "", 204},
		{"process.start", a, "token", tok.ID, "sandbox:" + id + "/process:" + pid, "", 201},
		{"process.signal", a, "token", tok.ID, "sandbox:" + id + "/process:" + pid, "", 204},
		{"preview_link.create", a, "token", tok.ID, "sandbox:" + id + "/port:8000/link:" + link.LinkID, "", 201},
		{"preview_link.revoke", a, "token", tok.ID, "sandbox:" + id + "/port:8000/link:" + link.LinkID, "", 204},
		{"secret.put", a, "token", tok.ID, "secret:DEPLOY_KEY", "", 204},
		{"secret.delete", a, "token", tok.ID, "secret:DEPLOY_KEY", "", 204},
		{"exec", a, "token", tok.ID, "sandbox:sb_nope", "not_found", 404},
		{"token.revoke", a, "session", "", "token:" + tok.ID, "", 200},
		{"sandbox.delete", a, "session", "", "sandbox:" + id, "", 200},
		{"logout", a, "session", "", "", "", 204},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries:\n got %v\nwant %v", got, want)
	}
	for _, e := range es {
		if e.UserID == "" {
			t.Errorf("%s: no user ID", e.Action)
		}
	}

	// Nothing secret anywhere in the table: not the secret's value, the
	// exec env, the token, the password, the session cookie.
	var cookie string
	u, _ := url.Parse(h.srv.URL)
	for _, c := range h.admin.Jar.Cookies(u) {
		if c.Name == sessionCookie {
			cookie = c.Value
		}
	}
	dump := dumpTable(t, h.harness, "audit_log")
	if dump == "" {
		t.Fatal("the audit table is empty")
	}
	for name, v := range map[string]string{"secret value": secretValue, "exec env": envSecret, "token": tok.Token,
		"password": testPassword, "wrong password": "wrong password 1234", "session cookie": cookie} {
		if v == "" {
			t.Fatalf("%s is empty", name)
		}
		if strings.Contains(dump, v) {
			t.Errorf("the audit table holds the %s", name)
		}
	}
}

func TestAuditRoutes(t *testing.T) {
	h := newHarness(t)
	al := audit.New(audit.Options{Repo: h.db, Clock: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = al.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	srv := httptest.NewServer(validateResponses(t, NewServer(Deps{
		Logger: h.logger(), Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test", Audit: al,
	})))
	t.Cleanup(srv.Close)
	h.srv = srv
	h.createUser("alice@example.com", auth.RoleMember)
	h.createUser("admin@example.com", auth.RoleAdmin)
	alice, admin := h.mustLogin("alice@example.com"), h.mustLogin("admin@example.com")

	// A member may not read the audit log.
	wantStatus(t, h.do(alice, "GET", "/audit", nil), http.StatusForbidden)
	wantStatus(t, h.do(alice, "GET", "/audit/export", nil), http.StatusForbidden)

	// Seven token creations by alice, one a second apart.
	var toks []string
	for range 7 {
		h.clock.Advance(time.Second)
		toks = append(toks, h.newToken(alice, "t").ID)
	}
	if err := al.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	page := func(q string) auditPage {
		t.Helper()
		r := h.do(admin, "GET", "/audit?"+q, nil)
		wantStatus(t, r, http.StatusOK)
		var p auditPage
		r.data(t, &p)
		return p
	}
	// Paging: newest first, 3 at a time, no entry twice or missed.
	var ids []string
	for q := "action=token.create&limit=3"; ; {
		p := page(q)
		for _, e := range p.Entries {
			ids = append(ids, strings.TrimPrefix(e.Resource, "token:"))
		}
		if p.NextCursor == "" {
			break
		}
		q = "action=token.create&limit=3&cursor=" + p.NextCursor
	}
	slices.Reverse(ids)
	if fmt.Sprint(ids) != fmt.Sprint(toks) {
		t.Errorf("paged token IDs %v, want %v", ids, toks)
	}
	// Filters.
	count := func(q string) int { t.Helper(); return len(page(q).Entries) }
	for q, want := range map[string]int{
		"user=alice@example.com":    8, // her login and 7 tokens (the refused GETs are reads: not recorded)
		"action=login":              2,
		"resource=token:" + toks[2]: 1,
		"from=" + h.clock.Now().Add(-2*time.Second).Format(time.RFC3339) + "&action=token.create": 3,
		"to=" + h.clock.Now().Add(-5*time.Second).Format(time.RFC3339) + "&action=token.create":   1,
		"user=nobody": 0,
	} {
		if got := count(q); got != want {
			t.Errorf("GET /audit?%s: %d entries, want %d", q, got, want)
		}
	}
	wantField(t, h.do(admin, "GET", "/audit?from=yesterday", nil), 422, "from")
	wantField(t, h.do(admin, "GET", "/audit?limit=0", nil), 422, "limit")
	wantField(t, h.do(admin, "GET", "/audit?cursor=!!", nil), 422, "cursor")

	// JSON lines: every matching entry, one per line.
	r := h.do(admin, "GET", "/audit/export?user=alice@example.com", nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	n := 0
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Email != "alice@example.com" {
			t.Errorf("line %q: %v", sc.Text(), err)
		}
		n++
	}
	if n != 8 {
		t.Errorf("export: %d lines, want 8", n)
	}
}

// TestAuditRuns: a run's start (its ID from X-Run-ID), an approval answer
// (refused: no such request) and the cancel are recorded.
func TestAuditRuns(t *testing.T) {
	h := newRunHarness(t, modeltest.Hang("thinking"))
	sb := h.newSandbox(h.alice)
	h.clock.Advance(time.Second)
	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "long task"})
	defer resp.Body.Close()
	runID := resp.Header.Get("X-Run-ID")
	readTyped(t, bufio.NewReader(resp.Body), func(e typedEvent) bool { return e.event == "run.started" })
	h.clock.Advance(time.Second)
	r := h.do(h.alice, "POST", "/runs/"+runID+"/permissions/perm_nope", map[string]any{"behavior": "allow"})
	if r.status < 400 {
		t.Fatalf("answering no request: status %d", r.status)
	}
	h.clock.Advance(time.Second)
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), 202)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := h.db.ListAudit(ctx, audit.Filter{Resource: "sandbox:" + sb})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s %s %d", e.Action, e.Resource, e.Status))
	}
	want := []string{"run.start sandbox:" + sb + "/run:" + runID + " 200", "sandbox.create sandbox:" + sb + " 200"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sandbox entries %q, want %q", got, want)
	}
	if es, err = h.db.ListAudit(ctx, audit.Filter{Resource: "run:" + runID}); err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s %s %d %s", e.Action, e.Resource, e.Status, e.Email))
	}
	want = []string{"run.cancel run:" + runID + " 202 alice@example.com",
		fmt.Sprintf("approval run:%s/permission:perm_nope %d alice@example.com", runID, r.status)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("run entries %q, want %q", got, want)
	}
}

// TestAuditPanicAndUnnamedRoute: a handler that panics is recorded with
// the 500 the client gets, and a route missing from the table is still
// recorded, under "METHOD pattern".
func TestAuditPanicAndUnnamedRoute(t *testing.T) {
	h := newHarness(t)
	al := audit.New(audit.Options{Repo: h.db, Clock: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = al.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	s := newServer(Deps{Logger: h.logger(), Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Audit: al})
	r := chi.NewRouter()
	r.Use(requestID, s.observe)
	r.With(s.audit).Post("/boom/{id}", func(http.ResponseWriter, *http.Request) { panic("boom") })
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	res, err := http.Post(srv.URL+"/boom/x1", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 500 {
		t.Fatalf("status %d, want 500", res.StatusCode)
	}
	if err := al.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := h.db.ListAudit(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Action != "POST /boom/{id}" || es[0].Status != 500 {
		t.Errorf("entries %+v, want one POST /boom/{id} with status 500", es)
	}
}
