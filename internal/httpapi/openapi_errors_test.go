package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
)

// storageRoutes read or write the blob store, an S3 bucket or the data
// dir's disk: 424 when S3 is unreachable (TestS3Unreachable), 507 when a
// disk is full (TestDiskFull, TestS3Full). Uploads write only the
// sandbox's own disk (413 past its disk_mb, 507 when the host's is full).
var storageRoutes = map[string][]string{
	"POST /sandbox":                    {"424", "507"},
	"POST /sandbox/{id}/snapshots":     {"424", "507"},
	"GET /snapshots/{id}":              {"424", "507"},
	"GET /snapshots/{id}/diff/{other}": {"424", "507"},
	"POST /sandbox/{id}/restore":       {"424", "507", "413"},
	"PUT /sandbox/{id}/files/*":        {"507", "413"},
	"PUT /sandbox/{id}/archive":        {"507", "413"},
}

// unauthenticatedRoutes never ask who is calling.
var unauthenticatedRoutes = map[string]bool{"GET /readyz": true, "POST /auth/logout": true}

// TestOpenAPIErrorTable walks the router and checks that the OpenAPI
// document lists, for every route, the error responses it can answer:
// 503 unavailable (the database is down) on every route that needs the
// database, and on no other; 401 wherever the caller is authenticated; 424
// and 507 (413 for a sandbox's disk) on the storage routes; each with the Error schema (or the
// provider's format on the LLM gateway) and a description naming its code.
// It also checks the error table is complete: every error kind's status
// has a description.
func TestOpenAPIErrorTable(t *testing.T) {
	doc := openAPIDoc("test")
	paths := doc["paths"].(map[string]map[string]any)
	router := newServer(Deps{}).routes().(chi.Routes)
	gateway := map[string]bool{}
	for _, op := range gatewayOps {
		gateway[op.Method+" "+op.Path] = true
	}
	n := 0
	err := chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.ReplaceAll(route, "/*/", "/")
		if len(route) > 1 {
			route = strings.TrimSuffix(route, "/")
		}
		key := method + " " + route
		n++
		op, ok := paths[openAPIPath(route)][strings.ToLower(method)].(map[string]any)
		if !ok {
			t.Errorf("%s: not in the OpenAPI document", key)
			return nil
		}
		responses := op["responses"].(map[string]any)
		noDB := needsNoDatabase[key] || key == "HEAD /llm/anthropic" // the gateway's probe
		want := map[string]bool{"503": !noDB}
		if !noDB && !unauthenticatedRoutes[key] {
			want["401"] = true
		}
		for _, code := range storageRoutes[key] {
			want[code] = true
		}
		for code, documented := range want {
			if _, has := responses[code]; has != documented {
				t.Errorf("%s: documents %s = %v, want %v", key, code, has, documented)
			}
		}
		for code, r := range responses {
			status, err := strconv.Atoi(code)
			if err != nil {
				continue // 2XX, default
			}
			resp := r.(map[string]any)
			if d, _ := resp["description"].(string); !strings.HasPrefix(d, "`") {
				t.Errorf("%s %s: description %q does not name the error code", key, code, d)
			}
			_, hasSchema := resp["content"]
			if hasSchema == gateway[key] {
				t.Errorf("%s %s: Error schema = %v, want %v (the gateway answers in the provider's format)", key, code, hasSchema, !gateway[key])
			}
			if status == http.StatusServiceUnavailable {
				if _, ok := resp["headers"].(map[string]any)["Retry-After"]; !ok {
					t.Errorf("%s 503: Retry-After header not documented", key)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 40 {
		t.Fatalf("walked %d routes, expected the whole API", n)
	}
	for k := errs.Internal + 1; k <= errs.NotImplemented; k++ {
		if _, ok := errorDescriptions[statusOf(k)]; !ok {
			t.Errorf("error kind %s (%d) has no description in the error table", k, statusOf(k))
		}
	}
	for route := range storageRoutes {
		method, path, _ := strings.Cut(route, " ")
		if _, ok := paths[openAPIPath(path)][strings.ToLower(method)]; !ok {
			t.Errorf("storage route %s is not a route", route)
		}
	}
}
