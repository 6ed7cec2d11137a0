// Package web is the embedded browser UI: static ES modules, styles and one
// HTML shell, served by the API server itself so it works offline. The app
// talks only to the server's JSON and SSE API; it never renders untrusted
// text as HTML.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// AppPath is the URL path of the app's HTML shell (the original design's path).
const AppPath = "/static/modal-sandbox-ui.html"

//go:embed static
var static embed.FS

// FS returns the static files (modal-sandbox-ui.html, *.js, *.css) rooted at
// the static directory.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// fs.Sub fails only for an invalid path literal; the embed guarantees it exists.
		panic(err)
	}
	return sub
}

// contentSecurityPolicy forbids inline scripts, inline event handlers and any
// third-party origin, so even a rendering bug cannot execute agent output.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the UI. Mount it for "/static/*" and "/": the root redirects
// to AppPath and everything under /static/ is served from the embedded files.
// It needs no authentication: the assets are public, the API behind them is not.
func Handler() http.Handler {
	files := http.StripPrefix("/static/", http.FileServerFS(FS()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch {
		case r.URL.Path == "/" || r.URL.Path == "/static" || r.URL.Path == "/static/":
			http.Redirect(w, r, AppPath, http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/static/"):
			// Assets are small and change with the binary: revalidate every load.
			h.Set("Cache-Control", "no-cache")
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// Router is the part of a router Mount needs (chi.Router has it).
type Router interface {
	Get(pattern string, h http.HandlerFunc)
}

// Mount registers the UI on r for GET / and GET /static/*.
func Mount(r Router) {
	h := Handler().ServeHTTP
	r.Get("/", h)
	r.Get("/static/*", h)
}
