package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
)

// opsOps documents the operational routes.
var opsOps = []apiOp{
	{Method: "GET", Path: "/healthz", Summary: "Liveness: the process serves HTTP", Response: healthResponse{}, Public: true, NoDatabase: true},
	{Method: "GET", Path: "/readyz", Summary: "Readiness: every dependency (database, blob store, sandbox driver) answers; 503 names the ones that are down in \"checks\"", Response: readyResponse{}, Public: true},
	{Method: "GET", Path: "/metrics", Summary: "Prometheus metrics (text exposition format)", Public: true, NoDatabase: true},
	{Method: "GET", Path: "/openapi.json", Summary: "This OpenAPI 3.1 document", Public: true, NoDatabase: true},
	// The embedded web UI (web.Mount in routes.go).
	{Method: "GET", Path: "/", Summary: "Redirect to the web UI", Public: true, NoDatabase: true},
	{Method: "GET", Path: "/static/*", Summary: "Web UI assets (the app is /static/modal-sandbox-ui.html)", Public: true, NoDatabase: true},
}

type healthResponse struct {
	Status  string `json:"status"`
	Version string `json:"version,omitempty"`
}

func (s *server) mountOps(r chi.Router) {
	r.Get("/healthz", s.api(func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, healthResponse{Status: "ok", Version: s.deps.Version})
	}))
	r.Get("/readyz", s.api(s.handleReady))
	r.Method("GET", "/metrics", promhttp.HandlerFor(s.deps.Metrics, promhttp.HandlerOpts{}))
	r.Get("/openapi.json", s.handleOpenAPI())
}

// ReadyCheck is one dependency /readyz checks: the database always, and
// whatever else the server was built with (blob store, sandbox driver).
type ReadyCheck struct {
	// Name names the dependency in the /readyz body: "database", "blob_store", "sandbox_driver".
	Name string
	// Check returns nil when the dependency answers. Its error's public
	// text (an *errs.Error message) is shown; any other text is not.
	Check func(ctx context.Context) error
}

// readyCheckResult is one dependency's state in the /readyz body.
type readyCheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status" enum:"ok,down"`
	// Error says what is wrong, without host paths, URLs or secrets.
	Error string `json:"error,omitempty"`
}

// readyResponse is the /readyz body when every dependency answers.
type readyResponse struct {
	Status  string             `json:"status"`
	Version string             `json:"version,omitempty"`
	Checks  []readyCheckResult `json:"checks"`
}

// readyTimeout bounds each dependency check of /readyz.
const readyTimeout = 2 * time.Second

// handleReady checks every dependency concurrently and answers 200 when all
// answer, else 503 code "unavailable" with Retry-After, a message naming the
// ones that are down and the per-dependency "checks" next to the error.
func (s *server) handleReady(w http.ResponseWriter, r *http.Request) error {
	checks := []ReadyCheck{{Name: "database", Check: func(ctx context.Context) error {
		if s.deps.Store == nil {
			return errs.E(errs.Unavailable, "no database configured")
		}
		return s.deps.Store.Ping(ctx)
	}}}
	checks = append(checks, s.deps.Ready...)
	results := make([]readyCheckResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			results[i] = readyCheckResult{Name: c.Name, Status: "ok"}
			if err := c.Check(ctx); err != nil {
				results[i].Status, results[i].Error = "down", "unreachable"
				if e, ok := errs.Public(err); ok && e.Message != "" {
					results[i].Error = e.Message
				}
				s.logger(r).WarnContext(r.Context(), "readiness check failed", "dependency", c.Name, "err", err)
			}
		})
	}
	wg.Wait()
	var down []string
	for _, res := range results {
		if res.Status != "ok" {
			down = append(down, res.Name)
		}
	}
	if len(down) == 0 {
		return writeJSON(w, http.StatusOK, readyResponse{Status: "ready", Version: s.deps.Version, Checks: results})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Retry-After", strconv.Itoa(store.RetryAfter))
	w.WriteHeader(http.StatusServiceUnavailable)
	return json.NewEncoder(w).Encode(struct {
		Error  errorBody          `json:"error"`
		Checks []readyCheckResult `json:"checks"`
	}{errorBody{
		Code:      errs.Unavailable.String(),
		Message:   "not ready: " + strings.Join(down, ", ") + " down",
		RequestID: requestIDFrom(r.Context()),
	}, results})
}

func errNoRoute(r *http.Request) error {
	return errs.E(errs.NotFound, "no route for %s %s", r.Method, r.URL.Path)
}

// writeMethodNotAllowed answers 405, which has no error kind of its own.
func writeMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_ = json.NewEncoder(w).Encode(map[string]errorBody{"error": {
		Code: "method_not_allowed", Message: "method " + r.Method + " not allowed here", RequestID: requestIDFrom(r.Context()),
	}})
}
