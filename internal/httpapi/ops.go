package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/techbossai/techboss/internal/errs"
)

// opsOps documents the operational routes.
var opsOps = []apiOp{
	{Method: "GET", Path: "/healthz", Summary: "Liveness: the process serves HTTP", Response: healthResponse{}, Public: true},
	{Method: "GET", Path: "/readyz", Summary: "Readiness: the database is reachable", Response: healthResponse{}, Public: true},
	{Method: "GET", Path: "/metrics", Summary: "Prometheus metrics (text exposition format)", Public: true},
	{Method: "GET", Path: "/openapi.json", Summary: "This OpenAPI 3.1 document", Public: true},
	// The embedded web UI (web.Mount in routes.go).
	{Method: "GET", Path: "/", Summary: "Redirect to the web UI", Public: true},
	{Method: "GET", Path: "/static/*", Summary: "Web UI assets (the app is /static/modal-sandbox-ui.html)", Public: true},
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

func (s *server) handleReady(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Store == nil {
		return errs.E(errs.Unavailable, "no database configured")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.deps.Store.Ping(ctx); err != nil {
		return errs.Wrap(errs.Unavailable, err, "database unreachable")
	}
	return writeJSON(w, http.StatusOK, healthResponse{Status: "ready", Version: s.deps.Version})
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
