package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/auth"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestMetricsUseRoutePatterns(t *testing.T) {
	h := newHarness(t)
	h.createUser("kim@example.com", auth.RoleMember)
	c := h.mustLogin("kim@example.com")
	tok := h.newToken(c, "m")
	wantStatus(t, h.do(c, "DELETE", "/auth/tokens/"+tok.ID, nil), 200)
	wantStatus(t, h.do(c, "GET", "/auth/me", nil), 200)
	wantStatus(t, h.do(h.client(), "GET", "/nope/"+tok.ID, nil), 404)
	r := h.do(h.client(), "GET", "/metrics", nil)
	wantStatus(t, r, 200)
	m := string(r.body)
	for _, want := range []string{
		`techboss_http_requests_total{method="GET",route="/auth/me",status="200"} 1`,
		`techboss_http_requests_total{method="DELETE",route="/auth/tokens/{id}",status="200"} 1`,
		`techboss_http_requests_total{method="POST",route="/auth/login",status="200"} 1`,
		`techboss_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`techboss_http_request_duration_seconds_count{route="/auth/me"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m, tok.ID) {
		t.Errorf("metrics contain an ID")
	}
	// The access log has one line per request with the route pattern, not the path.
	var found bool
	for line := range strings.SplitSeq(h.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"method":"DELETE"`) {
			found = true
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			if rec["route"] != "/auth/tokens/{id}" || rec["status"] != float64(200) || rec["request_id"] == "" || rec["duration_ms"] == nil ||
				rec["user_id"] == nil || rec["user_id"] == "" {
				t.Fatalf("access log = %v", rec)
			}
			if strings.Contains(line, "Cookie") || strings.Contains(line, "Authorization") {
				t.Fatalf("access log has headers: %s", line)
			}
		}
	}
	if !found {
		t.Fatalf("no access log line for DELETE:\n%s", h.logs)
	}
}

// TestOpenAPIMatchesRouter fails when a route is missing from the OpenAPI
// document or the document lists an operation with no route.
func TestOpenAPIMatchesRouter(t *testing.T) {
	s := newServer(Deps{})
	router, ok := s.routes().(chi.Routes)
	if !ok {
		t.Fatal("routes() is not a chi router")
	}
	var routes []string
	err := chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.ReplaceAll(route, "/*/", "/") // chi's marker for mounted subrouters
		if len(route) > 1 {
			route = strings.TrimSuffix(route, "/")
		}
		routes = append(routes, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, ops := range apiOps() {
		for _, op := range ops {
			if op.Summary == "" {
				t.Errorf("%s %s has no summary", op.Method, op.Path)
			}
			documented = append(documented, op.Method+" "+op.Path)
		}
	}
	slices.Sort(routes)
	slices.Sort(documented)
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in the OpenAPI document (add it to an apiOp list)", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("OpenAPI operation %s has no route", d)
		}
	}
	if c := slices.Compact(slices.Clone(documented)); len(c) != len(documented) {
		t.Errorf("duplicate operations in the document")
	}
}

func TestOpenAPIServed(t *testing.T) {
	h := newHarness(t)
	r := h.do(h.client(), "GET", "/openapi.json", nil)
	wantStatus(t, r, 200)
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q", doc.OpenAPI)
	}
	login := doc.Paths["/auth/login"]["post"]
	if login == nil || login["requestBody"] == nil {
		t.Fatalf("login op = %v", login)
	}
	b, _ := json.Marshal(login["requestBody"])
	// Request and answer types are named components the operations refer to.
	if !strings.Contains(string(b), `"$ref":"#/components/schemas/LoginRequest"`) {
		t.Fatalf("login request schema is not the LoginRequest component: %s", b)
	}
	b, _ = json.Marshal(doc.Components.Schemas["LoginRequest"])
	if !strings.Contains(string(b), `"password"`) || !strings.Contains(string(b), `"email"`) {
		t.Fatalf("login request schema lacks fields: %s", b)
	}
	del := doc.Paths["/auth/tokens/{id}"]["delete"]
	if del == nil || del["parameters"] == nil {
		t.Fatalf("delete token op = %v", del)
	}
	if got := openAPIPath("/sandbox/{id}/files/*"); got != "/sandbox/{id}/files/{path}" {
		t.Fatalf("openAPIPath = %q", got)
	}
	if got := openAPIPath("/runs/{id:[0-9a-f-]+}/events"); got != "/runs/{id}/events" {
		t.Fatalf("openAPIPath = %q", got)
	}
}
