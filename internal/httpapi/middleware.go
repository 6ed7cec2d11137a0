package httpapi

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	userKey
	accessKey
)

// accessInfo is filled in by inner middleware for the access log line,
// which is written by the outer one after the request.
type accessInfo struct {
	userID string
}

// requestIDHeader carries the request ID in and out.
const requestIDHeader = "X-Request-ID"

// requestID gives every request an ID: the caller's X-Request-ID when it
// is short and plain, otherwise a fresh random one. It is echoed back.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// requestIDFrom returns the request ID in ctx ("" outside a request).
func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// statusWriter records the status and size of a response. It forwards
// Flush and Hijack, and Unwrap lets http.ResponseController reach the
// underlying writer (deadlines, full duplex).
type statusWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher.
func (w *statusWriter) Flush() {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker (WebSocket upgrades).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusSwitchingProtocols, true
	}
	return c, rw, err
}

// Unwrap returns the underlying writer for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// routePattern is the chi pattern that served r, never the raw path (IDs
// must not become label values or log keys).
func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}

// observe recovers panics, writes one access log line and records metrics
// per request. It never logs bodies, Authorization or cookies.
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		info := &accessInfo{}
		r = r.WithContext(context.WithValue(r.Context(), accessKey, info))
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.logger(r).ErrorContext(r.Context(), "panic", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !sw.wroteHeader {
					s.writeError(sw, r, fmt.Errorf("panic: %v", p))
				}
			}
			d := time.Since(start)
			route := routePattern(r)
			status := sw.status
			if !sw.wroteHeader {
				status = http.StatusOK
			}
			s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())
			attrs := []any{"request_id", requestIDFrom(r.Context()), "method", r.Method, "route", route,
				"status", status, "duration_ms", float64(d.Microseconds()) / 1000, "bytes", sw.bytes}
			if info.userID != "" {
				attrs = append(attrs, "user_id", info.userID)
			}
			s.log.InfoContext(r.Context(), "request", attrs...)
		}()
		next.ServeHTTP(sw, r)
	})
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	logins   *prometheus.CounterVec
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_http_requests_total",
			Help: "HTTP requests by chi route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "techboss_http_request_duration_seconds",
			Help:    "HTTP request duration by chi route pattern (streams count until they end).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route"}),
	}
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "techboss_auth_logins_total",
		Help: "Password logins by result: ok, rejected (bad credentials), throttled, invalid, error.",
	}, []string{"result"})
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	m.logins = register(reg, m.logins)
	return m
}

// register adds c to reg, reusing an identical collector already there
// (several servers built on one registry, as in tests).
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("register metric: %v", err))
	}
	return c
}

// sessionCookie is the name of the login session cookie.
const sessionCookie = "techboss_session"

type authMethod int

const (
	authNone authMethod = iota
	authCookie
	authBearer
)

// authenticate requires a user: a Bearer API token or the session cookie.
// Cookie-authenticated unsafe requests must pass the cross-origin check
// (Sec-Fetch-Site / Origin vs Host); Bearer requests are exempt because a
// browser never attaches them on its own.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, method, err := s.userFromRequest(r)
		if err == nil && method == authCookie {
			err = s.checkOrigin(r)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if info, ok := r.Context().Value(accessKey).(*accessInfo); ok {
			info.userID = u.ID
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey, u)))
	})
}

// userFromRequest authenticates r by Bearer token, else by session cookie.
func (s *server) userFromRequest(r *http.Request) (*auth.User, authMethod, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return nil, authNone, errs.E(errs.Unauthenticated, "Authorization must be \"Bearer <token>\"")
		}
		u, err := s.deps.Auth.Authenticate(r.Context(), strings.TrimSpace(tok))
		return u, authBearer, err
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, authNone, errs.E(errs.Unauthenticated, "authentication required: log in or send Authorization: Bearer <token>")
	}
	u, err := s.deps.Auth.SessionUser(r.Context(), c.Value)
	return u, authCookie, err
}

// checkOrigin rejects cross-origin unsafe requests (CSRF).
func (s *server) checkOrigin(r *http.Request) error {
	if err := s.csrf.Check(r); err != nil {
		return errs.Wrap(errs.Forbidden, err, "cross-origin request refused")
	}
	return nil
}

// currentUser returns the authenticated user; non-nil inside the
// authenticated route group, nil elsewhere.
func currentUser(r *http.Request) *auth.User {
	u, _ := r.Context().Value(userKey).(*auth.User)
	return u
}

// requireAdmin lets only admins through (use inside the authenticated group).
func (s *server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !currentUser(r).IsAdmin() {
			s.writeError(w, r, errs.E(errs.Forbidden, "admin role required"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientIP is the address r came from, for the login throttle. It is the
// peer (RemoteAddr) unless the peer is a trusted proxy
// (Deps.TrustedProxies); then it is the right-most X-Forwarded-For address
// that is not a trusted proxy. Everything left of that address was written
// by the client and is ignored, so a spoofer can neither pick the address
// it is counted under nor blame someone else's. An entry that does not
// parse stops the walk at the last trusted hop: everyone behind it shares
// one count, which slows the liar too.
func (s *server) clientIP(r *http.Request) string {
	return clientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), s.deps.TrustedProxies)
}

func clientIP(remoteAddr string, xff []string, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	if !isTrusted(peer, trusted) {
		return peer.String()
	}
	last := peer
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, ok := parseHop(hops[j])
			if !ok {
				return last.String()
			}
			if !isTrusted(a, trusted) {
				return a.String()
			}
			last = a
		}
	}
	return last.String() // every hop is a trusted proxy
}

// parseHop parses one X-Forwarded-For entry: an address, or an address
// with a port as some proxies write it ("192.0.2.1:5000", "[2001:db8::1]:5000").
func parseHop(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
