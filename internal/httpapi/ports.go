package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/net/http/httpguts"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Preview URLs: a port listening inside a sandbox is reachable through the
// server in two forms.
//
//   - The path form /sandbox/{id}/ports/{port}/... is on the server's own
//     origin, so what the sandbox serves is answered with
//     "Content-Security-Policy: sandbox ..." (an opaque origin: its
//     scripts cannot read the UI's storage nor call the API with the
//     user's session) and without its Set-Cookie headers.
//   - The host form {port}-{id}.preview.<TECHBOSS_PREVIEW_DOMAIN> is an
//     origin of its own, for apps that need one (service workers, cookies,
//     absolute paths). It never accepts the session cookie.
//
// Access: the owner's API token (either form) or session cookie (path
// form), or a share link's token: ?techboss_preview_token=... on the first
// visit sets a cookie scoped to that preview (path or host) and redirects
// to the same URL without the token. The sandbox never sees the caller's
// Authorization header nor the server's cookies.

// portOps documents the ports routes.
var portOps = append([]apiOp{
	{Method: "GET", Path: "/sandbox/{id}/ports", Summary: "The TCP ports listening inside the sandbox, each with its preview URL (the server's own listeners left out)", Response: listPortsResponse{}},
	{Method: "POST", Path: "/sandbox/{id}/ports/{port}/links", Summary: "Create a share link to a port: anyone with its URL reaches the port's preview until it expires (expires_in_s, default 3600) or is revoked; the token is shown only in this response", Request: createLinkRequest{}, Response: createLinkResponse{}, Errors: []int{409}},
	{Method: "GET", Path: "/sandbox/{id}/ports/{port}/links", Summary: "The unexpired share links to a port (never their tokens)", Response: listLinksResponse{}},
	{Method: "DELETE", Path: "/sandbox/{id}/ports/{port}/links/{link_id}", Summary: "Revoke a share link: its URL stops working at once"},
}, proxyOps()...)

// proxyMethods are the methods the preview proxy forwards.
var proxyMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func proxyOps() []apiOp {
	var ops []apiOp
	for _, m := range proxyMethods {
		ops = append(ops, apiOp{Method: m, Path: "/sandbox/{id}/ports/{port}/*", Public: true, Errors: []int{401, 403, 409, 422, 502},
			Summary: "Preview proxy: HTTP and WebSocket to the port inside the sandbox (any network mode), with the prefix stripped. Owner's token or session cookie, or a share link (?techboss_preview_token= once, then a cookie scoped to this preview). Answers carry Content-Security-Policy: sandbox (an opaque origin) and lose their Set-Cookie; 502 when nothing listens"})
	}
	return ops
}

// Preview proxy names and bounds.
const (
	previewTokenParam  = "techboss_preview_token"
	previewCookie      = "techboss_preview"
	previewMaxBody     = 256 << 20 // request bodies to the sandbox
	previewMaxRespHead = 1 << 20   // response headers from the sandbox
	// previewCSP makes the path form's documents an opaque origin.
	previewCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
)

type portView struct {
	sandbox.Port
	PreviewURL string `json:"preview_url"`
	// HostURL is the host form's URL, when the server has a preview domain.
	HostURL string `json:"host_url,omitempty"`
}

type listPortsResponse struct {
	Ports []portView `json:"ports"`
}

type createLinkRequest struct {
	ExpiresIn int64 `json:"expires_in_s,omitempty"`
}

type createLinkResponse struct {
	LinkID    string    `json:"link_id"`
	URL       string    `json:"url"`                // the path form, relative to the server
	HostURL   string    `json:"host_url,omitempty"` // the host form, when the server has a preview domain
	ExpiresAt time.Time `json:"expires_at"`
}

type listLinksResponse struct {
	Links []*sandbox.PreviewLink `json:"links"`
}

func (s *server) mountPorts(r chi.Router) {
	r.Get("/sandbox/{id}/ports", s.api(s.handleListPorts))
	r.Post("/sandbox/{id}/ports/{port}/links", s.api(s.handleCreateLink))
	r.Get("/sandbox/{id}/ports/{port}/links", s.api(s.handleListLinks))
	r.Delete("/sandbox/{id}/ports/{port}/links/{link_id}", s.api(s.handleRevokeLink))
}

// mountPreview mounts the path-form proxy, which authenticates itself
// (owner or share link).
func (s *server) mountPreview(r chi.Router) {
	for _, m := range proxyMethods {
		r.Method(m, "/sandbox/{id}/ports/{port}/*", http.HandlerFunc(s.handlePreviewPath))
	}
}

func (s *server) previewLinks() (*sandbox.PreviewLinks, error) {
	if s.deps.PreviewLinks == nil {
		return nil, errs.E(errs.Unavailable, "share links are not configured on this server")
	}
	return s.deps.PreviewLinks, nil
}

func (s *server) handleListPorts(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	id := chi.URLParam(r, "id")
	ports, err := m.ListPorts(r.Context(), sandboxOwner(r), id)
	if err != nil {
		return err
	}
	out := listPortsResponse{Ports: make([]portView, 0, len(ports))}
	for _, p := range ports {
		if p.URL != "" {
			// The driver publishes the port itself (a Modal tunnel).
			out.Ports = append(out.Ports, portView{Port: p, PreviewURL: p.URL})
			continue
		}
		out.Ports = append(out.Ports, portView{Port: p, PreviewURL: previewPath(id, p.Port), HostURL: s.previewHostURL(r, id, p.Port)})
	}
	return writeJSON(w, http.StatusOK, out)
}

func previewPath(id string, port int) string {
	return "/sandbox/" + id + "/ports/" + strconv.Itoa(port) + "/"
}

// previewHostURL is the host form's URL ("" without a preview domain).
// It is https unless the server itself is reached over plain HTTP
// without TECHBOSS_SECURE_COOKIES.
func (s *server) previewHostURL(r *http.Request, id string, port int) string {
	if s.deps.PreviewDomain == "" {
		return ""
	}
	scheme := "http"
	if r.TLS != nil || s.deps.SecureCookies {
		scheme = "https"
	}
	// Host names take no "_": the ID's "sb_" is spelled "sb-" there.
	return scheme + "://" + strconv.Itoa(port) + "-" + strings.ReplaceAll(id, "_", "-") + ".preview." + s.deps.PreviewDomain + "/"
}

func (s *server) handleCreateLink(w http.ResponseWriter, r *http.Request) error {
	links, err := s.previewLinks()
	if err != nil {
		return err
	}
	port, err := sandbox.CheckPort(chi.URLParam(r, "port"))
	if err != nil {
		return err
	}
	var req createLinkRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > int64(sandbox.MaxPreviewLinkTTL/time.Second) {
		return errs.Field("expires_in_s", fmt.Sprintf("must be between 1 and %d seconds", int64(sandbox.MaxPreviewLinkTTL/time.Second)))
	}
	id := chi.URLParam(r, "id")
	l, tok, err := links.Create(r.Context(), sandboxOwner(r), id, port, time.Duration(req.ExpiresIn)*time.Second)
	if err != nil {
		return err
	}
	q := "?" + previewTokenParam + "=" + url.QueryEscape(tok)
	res := createLinkResponse{LinkID: l.ID, URL: previewPath(id, port) + q, ExpiresAt: l.ExpiresAt}
	if h := s.previewHostURL(r, id, port); h != "" {
		res.HostURL = h + q
	}
	return writeJSON(w, http.StatusCreated, res)
}

func (s *server) handleListLinks(w http.ResponseWriter, r *http.Request) error {
	links, err := s.previewLinks()
	if err != nil {
		return err
	}
	port, err := sandbox.CheckPort(chi.URLParam(r, "port"))
	if err != nil {
		return err
	}
	ls, err := links.List(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), port)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listLinksResponse{Links: ls})
}

func (s *server) handleRevokeLink(w http.ResponseWriter, r *http.Request) error {
	links, err := s.previewLinks()
	if err != nil {
		return err
	}
	port, err := sandbox.CheckPort(chi.URLParam(r, "port"))
	if err != nil {
		return err
	}
	if err := links.Revoke(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), port, chi.URLParam(r, "link_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// previewTarget is one proxied request's destination and the identity it
// is reached as (the owner's, for a share link).
type previewTarget struct {
	ownerID, sandboxID string
	port               int
	prefix             string // the path form's prefix, stripped ("" in the host form)
}

// handlePreviewPath serves the path form.
func (s *server) handlePreviewPath(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	t, err := s.previewAccess(w, r, id, chi.URLParam(r, "port"), false)
	if err != nil || t == nil {
		if err != nil {
			s.writeError(w, r, err)
		}
		return
	}
	// The prefix as the request spelled it ("08000" is port 8000 too).
	t.prefix = "/sandbox/" + id + "/ports/" + chi.URLParam(r, "port")
	s.proxyPreview(w, r, t)
}

// previewHost serves the host form ({port}-{id}.preview.<domain>) before
// the router sees the request; other hosts pass through.
func (s *server) previewHost(next http.Handler) http.Handler {
	if s.deps.PreviewDomain == "" {
		return next
	}
	suffix := ".preview." + strings.ToLower(s.deps.PreviewDomain)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil && !strings.Contains(suffix, ":") {
			host = h // the domain names no port: any port the server is reached on
		}
		label, ok := strings.CutSuffix(host, suffix)
		if !ok || strings.Contains(label, ".") {
			next.ServeHTTP(w, r)
			return
		}
		port, id, _ := strings.Cut(label, "-")
		if !strings.Contains(id, "_") {
			id = strings.Replace(id, "-", "_", 1) // sb-<hex> is sandbox sb_<hex>
		}
		t, err := s.previewAccess(w, r, id, port, true)
		if err != nil || t == nil {
			if err != nil {
				s.writeError(w, r, err)
			}
			return
		}
		s.proxyPreview(w, r, t)
	})
}

// previewAccess authenticates a preview request. A share-link token in the
// query is exchanged for a cookie scoped to this preview and a redirect to
// the URL without it (t and err both nil: the response is written).
func (s *server) previewAccess(w http.ResponseWriter, r *http.Request, id, portStr string, hostForm bool) (*previewTarget, error) {
	tok := r.URL.Query().Get(previewTokenParam)
	var cookieTok string
	if c, err := r.Cookie(previewCookie); err == nil {
		cookieTok = c.Value
	}
	authz := r.Header.Get("Authorization")
	_, sessErr := r.Cookie(sessionCookie)
	if tok == "" && cookieTok == "" && authz == "" && (hostForm || sessErr != nil) {
		return nil, errs.E(errs.Unauthenticated, "authentication required: a share link, or the owner's API token (or, on the server's own host, session)")
	}
	var ownerID string
	if tok == "" && authz != "" {
		// An API token: the caller is known before the port is looked at,
		// as on every authenticated route.
		u, err := s.previewUser(r)
		if err != nil {
			return nil, err
		}
		if ownerID, err = s.previewOwner(r.Context(), u.ID, id); err != nil {
			return nil, err
		}
	}
	port, err := sandbox.CheckPort(portStr)
	if err != nil {
		return nil, err
	}
	links := s.deps.PreviewLinks
	if ownerID == "" && (tok != "" || cookieTok != "") {
		if links == nil {
			return nil, errs.E(errs.Unavailable, "share links are not configured on this server")
		}
		// A stale cookie (revoked link, expired pass) beside a live session
		// on the server's own host: the session decides.
		sessionDecides := tok == "" && !hostForm && sessErr == nil
		switch {
		case tok == "" && sandbox.IsOwnerPass(cookieTok):
			user, err := links.CheckOwnerPass(cookieTok, id, port)
			if err != nil && !sessionDecides {
				return nil, err
			}
			if err == nil { // the pass names a user: are they still let in?
				if ownerID, err = s.previewOwner(r.Context(), user, id); err != nil {
					return nil, err
				}
			}
		default:
			l, err := links.Check(r.Context(), cmp.Or(tok, cookieTok), id, port)
			if err != nil && !sessionDecides {
				return nil, err
			}
			if err != nil {
				break
			}
			ownerID = l.OwnerID
			if tok != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
				s.setPreviewCookie(w, r, tok, id, port, l.ExpiresAt.Sub(s.now()), hostForm)
				u := *r.URL
				q := u.Query()
				q.Del(previewTokenParam)
				u.RawQuery = q.Encode()
				u.Scheme, u.Host = "", ""
				http.Redirect(w, r, u.String(), http.StatusSeeOther)
				return nil, nil
			}
		}
	}
	if ownerID == "" {
		// The session cookie, on the server's own host only (the check at
		// the top refused the host form without a token).
		u, err := s.previewUser(r)
		if err != nil {
			return nil, err
		}
		if ownerID, err = s.previewOwner(r.Context(), u.ID, id); err != nil {
			return nil, err
		}
		if links != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			s.setPreviewCookie(w, r, links.OwnerPass(u.ID, id, port), id, port, sandbox.OwnerPassTTL, false)
		}
	}
	return &previewTarget{ownerID: ownerID, sandboxID: id, port: port}, nil
}

// previewUser authenticates r by API token or session cookie (with the
// cross-origin check for cookie writes).
func (s *server) previewUser(r *http.Request) (*auth.User, error) {
	u, method, err := s.userFromRequest(r)
	if err == nil && method == authCookie {
		err = s.checkOrigin(r)
	}
	if err != nil {
		return nil, err
	}
	if info, ok := r.Context().Value(accessKey).(*accessInfo); ok {
		info.userID = u.ID
	}
	return u, nil
}

// setPreviewCookie sets the preview access cookie (a share link's token or
// an owner pass), scoped to this preview: its path, or in the host form
// its host. Max-Age, not Expires: the browser's clock may be off.
func (s *server) setPreviewCookie(w http.ResponseWriter, r *http.Request, value, id string, port int, ttl time.Duration, hostForm bool) {
	path := "/"
	if !hostForm {
		path = previewPath(id, port)
	}
	http.SetCookie(w, &http.Cookie{
		Name: previewCookie, Value: value, Path: path, MaxAge: max(1, int(ttl.Seconds())), HttpOnly: true,
		Secure: r.TLS != nil || s.deps.SecureCookies, SameSite: previewSameSite(r, s.deps.SecureCookies, hostForm),
	})
}

// previewSameSite: the path form's documents are an opaque origin (CSP
// sandbox), so the requests they make are cross-site and only a
// SameSite=None cookie goes with them; browsers take None only with
// Secure. The host form is its own site: Lax.
func previewSameSite(r *http.Request, secure, hostForm bool) http.SameSite {
	if !hostForm && (r.TLS != nil || secure) {
		return http.SameSiteNoneMode
	}
	return http.SameSiteLaxMode
}

// proxyPreview forwards r to the target port. The connection is made by
// the sandbox driver inside the sandbox's network namespace; the
// transport's pool is keyed by owner, sandbox and port.
func (s *server) proxyPreview(w http.ResponseWriter, r *http.Request, t *previewTarget) {
	if r.ContentLength > previewMaxBody {
		s.writeError(w, r, errs.E(errs.TooLarge, "request body above %d bytes", previewMaxBody))
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, previewMaxBody)
	}
	// Someone using the app is activity: the sandbox is busy while a
	// request (or a WebSocket, a dev server's hot reload) is open.
	if m, err := s.sandboxes(); err == nil {
		defer m.MarkBusy(t.sandboxID)()
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") {
		// A WebSocket outlives the request: http.Server.Shutdown does not
		// wait for it nor end it. The proxy closes both ends when the
		// request's context ends, so end that when the server stops, and
		// count the connection as a stream WaitStreams waits for.
		s.streams.add()
		defer s.streams.done()
		if s.deps.Stopping != nil {
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			defer context.AfterFunc(s.deps.Stopping, cancel)()
			r = r.WithContext(ctx)
		}
	}
	hostForm := t.prefix == ""
	rp := &httputil.ReverseProxy{
		Transport: s.previewTransport(),
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme = "http"
			out.URL.Host = "p" + strconv.Itoa(t.port) + "." + t.sandboxID + "." + t.ownerID + ".sandbox"
			out.Host = pr.In.Host
			if !hostForm {
				out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, t.prefix)
				out.URL.RawPath = ""
				if rp := pr.In.URL.RawPath; rp != "" {
					out.URL.RawPath = strings.TrimPrefix(rp, t.prefix)
				}
			}
			q := out.URL.Query()
			if q.Has(previewTokenParam) {
				q.Del(previewTokenParam)
				out.URL.RawQuery = q.Encode()
			}
			pr.SetXForwarded()
			if !hostForm {
				out.Header.Set("X-Forwarded-Prefix", t.prefix)
			}
			// The sandbox is hostile: it never sees the caller's credentials.
			out.Header.Del("Authorization")
			out.Header.Del("Proxy-Authorization")
			stripServerCookies(out)
		},
		ModifyResponse: func(res *http.Response) error {
			h := res.Header
			h.Del("Clear-Site-Data")
			h.Del("Service-Worker-Allowed")
			if hostForm {
				scopeHostCookies(h)
			} else {
				h.Del("Set-Cookie")
				h.Add("Content-Security-Policy", previewCSP)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var e *errs.Error
			switch {
			case errors.As(err, &e):
				s.writeError(w, r, err)
			case r.Context().Err() != nil:
				// The client went away; nothing to answer.
			default:
				s.writeError(w, r, errs.Wrap(errs.BadGateway, err, fmt.Sprintf("port %d in the sandbox did not answer", t.port)))
			}
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	rp.ServeHTTP(w, r)
}

// stripServerCookies removes the server's own cookies (session, preview
// access) from a request to the sandbox, keeping the app's.
func stripServerCookies(r *http.Request) {
	cs := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range cs {
		if c.Name == sessionCookie || c.Name == previewCookie {
			continue
		}
		r.AddCookie(c)
	}
}

// scopeHostCookies keeps the host form's cookies on the preview host: a
// Domain attribute would reach sibling previews or the server's own domain
// (a planted session cookie), so such cookies become host-only; the
// preview access cookie cannot be overwritten.
func scopeHostCookies(h http.Header) {
	sc := h.Values("Set-Cookie")
	if len(sc) == 0 {
		return
	}
	h.Del("Set-Cookie")
	for _, line := range sc {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Name == previewCookie || c.Name == sessionCookie {
			continue
		}
		if c.Domain != "" {
			c.Domain = ""
			line = c.String()
		}
		h.Add("Set-Cookie", line)
	}
}

// previewTransport is the proxy's shared transport; its dialer parses the
// target out of the pooled "host" the rewrite put there.
func (s *server) previewTransport() *http.Transport {
	s.previewOnce.Do(func() {
		s.previewRT = &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				m, err := s.sandboxes()
				if err != nil {
					return nil, err
				}
				host, _, _ := net.SplitHostPort(addr)
				host = strings.TrimSuffix(host, ".sandbox")
				ps, rest, _ := strings.Cut(host, ".")
				id, owner, _ := strings.Cut(rest, ".")
				port, err := strconv.Atoi(strings.TrimPrefix(ps, "p"))
				if err != nil {
					return nil, fmt.Errorf("preview target %q", addr)
				}
				return m.DialPort(ctx, owner, id, port)
			},
			MaxIdleConnsPerHost:    16,
			IdleConnTimeout:        30 * time.Second,
			MaxResponseHeaderBytes: previewMaxRespHead,
			ForceAttemptHTTP2:      false,
		}
	})
	return s.previewRT
}
