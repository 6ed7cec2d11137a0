package httpapi

import (
	"net/http"
	"net/http/pprof"

	"github.com/go-chi/chi/v5"
)

// pprofOps documents the Go runtime profiles.
var pprofOps = []apiOp{
	{Method: "GET", Path: "/debug/pprof/*", Summary: "Go runtime profiles (net/http/pprof: index, heap, goroutine, profile?seconds=, trace, ...); admins only, 404 for everyone else"},
}

// mountPprof serves net/http/pprof under /debug/pprof/ to admins. Mount
// it inside the authenticated group; anyone else gets the ordinary 404,
// so the profiles' existence is not advertised.
func (s *server) mountPprof(r chi.Router) {
	r.Get("/debug/pprof/*", s.api(func(w http.ResponseWriter, r *http.Request) error {
		if !currentUser(r).IsAdmin() {
			return errNoRoute(r)
		}
		// CPU profiles and traces run for ?seconds=; no write deadline applies.
		liftDeadlines(w)
		switch chi.URLParam(r, "*") {
		case "cmdline":
			pprof.Cmdline(w, r)
		case "profile":
			pprof.Profile(w, r)
		case "symbol":
			pprof.Symbol(w, r)
		case "trace":
			pprof.Trace(w, r)
		default: // the index, or a named profile (heap, goroutine, allocs, ...)
			pprof.Index(w, r)
		}
		return nil
	}))
}
