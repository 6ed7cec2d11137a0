package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/web"
)

// routes lists every route. Middleware order: request ID → recover +
// access log + metrics → (public routes) → authentication → domain routes.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(requestID, s.observe)
	r.Use(s.previewHost) // {port}-{id}.preview.<domain>: the preview proxy's host form (ports.go)
	r.NotFound(s.api(func(w http.ResponseWriter, r *http.Request) error {
		return errNoRoute(r)
	}))
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeMethodNotAllowed(w, r)
	})

	// Public routes.
	s.mountOps(r)
	s.mountAuthPublic(r)
	// Public domain mounts (routes that authenticate themselves, e.g. the
	// LLM gateway, or static assets): add ONE line each below.
	web.Mount(r) // the embedded web UI: GET / and /static/*
	s.mountGateway(r)
	s.mountGitBroker(r)
	s.mountPreview(r)

	// Authenticated routes: currentUser(r) is non-nil in here.
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate, s.audit, s.authorize)
		s.mountAuth(r)
		// Domain mounts: add ONE line each below, e.g. s.mountSandboxes(r).
		s.mountSandboxes(r)
		s.mountLLM(r)
		s.mountRuns(r)
		s.mountSnapshots(r)
		s.mountSecrets(r)
		s.mountGit(r)
		s.mountPprof(r)
		s.mountPorts(r)
		s.mountPTY(r)
		s.mountProcesses(r)
		s.mountWebhooks(r)
		s.mountAudit(r)
		s.mountPresence(r)
		s.mountTeams(r)
		s.mountTeamBudgets(r)
		s.mountTeamSecrets(r)
	})
	return r
}
