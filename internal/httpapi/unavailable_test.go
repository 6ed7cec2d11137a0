package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// needsNoDatabase are the routes that must keep answering while the
// database is down: liveness, metrics, the API description and the UI's
// static files (so the UI can load and say "the server is reconnecting").
var needsNoDatabase = map[string]bool{
	"GET /healthz":      true,
	"GET /metrics":      true,
	"GET /openapi.json": true,
	"GET /":             true,
	"GET /static/*":     true,
}

var routeParam = regexp.MustCompile(`\{[^}]*\}`)

// samplePath turns a chi pattern into a concrete path: {param} → x1, a
// trailing * → a file name.
func samplePath(pattern string) string {
	p := routeParam.ReplaceAllString(pattern, "x1")
	if strings.HasSuffix(p, "/*") {
		p = strings.TrimSuffix(p, "*") + "a.txt"
	}
	return p
}

// TestEveryRouteUnavailableWhileDatabaseDown stops a real PostgreSQL under
// a running server and calls every route the router knows (enumerated with
// chi.Walk, so a new route is covered without editing this test) with a
// valid API token and session cookie. Each must answer 503 with code
// "unavailable" and a Retry-After header — not 500 — except the few that
// need no database, which must keep working. After PostgreSQL comes back,
// the same server (no restart) serves authenticated requests again.
func TestEveryRouteUnavailableWhileDatabaseDown(t *testing.T) {
	pg := storetest.StartPGServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := store.Open(ctx, pg.URL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	a := auth.New(auth.Options{Store: db, Logger: log, Hash: auth.TestHashParams, SessionTTL: time.Hour,
		AccountLimit: 1000, IPLimit: 1000, ThrottleWindow: time.Minute})
	s := newServer(Deps{Logger: log, Store: db, Auth: a, Metrics: prometheus.NewRegistry(), Version: "test"})
	router := s.routes()
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)

	u, err := a.CreateUser(ctx, "fault@example.com", testPassword, auth.RoleAdmin)
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	_, tok, err := a.CreateToken(ctx, u.ID, "fault test")
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	login, err := a.Login(ctx, "fault@example.com", testPassword, "127.0.0.1")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	call := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
			body = strings.NewReader(`{}`)
			if path == "/auth/login" {
				body = strings.NewReader(`{"email":"fault@example.com","password":"` + testPassword + `"}`)
			}
		}
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, body)
		req.Header.Set("Authorization", "Bearer "+string(tok))
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: string(login.SessionToken)})
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	// Sanity: with the database up, an authenticated route works.
	if resp, b := call("GET", "/auth/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /auth/me before the outage = %d %s, want 200", resp.StatusCode, b)
	}

	type route struct{ method, pattern string }
	var routes []route
	err = chi.Walk(router.(chi.Routes), func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, route{method, pattern})
		return nil
	})
	if err != nil {
		t.Fatalf("walk routes: %v", err)
	}
	if len(routes) < 20 {
		t.Fatalf("walked %d routes, expected the whole API", len(routes))
	}

	// The LLM gateway and the git broker are other handlers (agent's,
	// repo's), authenticating their callers themselves; this server runs
	// without them, so they answer "not configured" whatever the database does.
	gateway := map[string]bool{}
	for _, op := range append(append([]apiOp(nil), gatewayOps...), gitBrokerOps...) {
		gateway[op.Method+" "+op.Path] = true
	}

	pg.Stop()
	for _, rt := range routes {
		key := rt.method + " " + rt.pattern
		if gateway[key] {
			continue
		}
		t.Run(key, func(t *testing.T) {
			resp, b := call(rt.method, samplePath(rt.pattern))
			if needsNoDatabase[key] {
				if resp.StatusCode >= 500 {
					t.Errorf("got %d %s, want it served without the database", resp.StatusCode, b)
				}
				return
			}
			var e struct {
				Error errorBody `json:"error"`
			}
			_ = json.Unmarshal(b, &e)
			if resp.StatusCode != http.StatusServiceUnavailable || (e.Error.Code != "unavailable" && rt.method != "HEAD") { // a HEAD answer has no body
				t.Errorf("got %d %s, want 503 unavailable", resp.StatusCode, b)
			}
			if ra := resp.Header.Get("Retry-After"); ra == "" {
				t.Errorf("no Retry-After header on %d %s", resp.StatusCode, b)
			}
			if strings.Contains(string(b), pg.URL) || strings.Contains(string(b), "127.0.0.1") {
				t.Errorf("error body names the database address: %s", b)
			}
		})
	}

	// /readyz says which dependency is down.
	resp, b := call("GET", "/readyz")
	var ready struct {
		Error  errorBody          `json:"error"`
		Checks []readyCheckResult `json:"checks"`
	}
	if err := json.Unmarshal(b, &ready); err != nil || resp.StatusCode != http.StatusServiceUnavailable ||
		!strings.Contains(ready.Error.Message, "database") || len(ready.Checks) == 0 ||
		ready.Checks[0].Name != "database" || ready.Checks[0].Status != "down" {
		t.Errorf("GET /readyz with the database down = %d %s, want 503 naming the database as down", resp.StatusCode, b)
	}

	pg.Start()
	// The pool reconnects by itself: no server restart.
	if resp, b := call("GET", "/auth/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /auth/me after PostgreSQL restarted = %d %s, want 200", resp.StatusCode, b)
	}
	if resp, b := call("GET", "/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /readyz after PostgreSQL restarted = %d %s, want 200", resp.StatusCode, b)
	}
}
