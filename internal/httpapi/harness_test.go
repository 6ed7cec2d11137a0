package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener lives as long as the pool; pools
		// are closed in t.Cleanup but its goroutine may still be winding down.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// fakeClock is a settable clock shared by the server and the auth service.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer collects log output written from handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newLogs returns a server log buffer that is printed, warnings and errors
// only, if the test fails: a 500's cause is in the log, not the answer.
func newLogs(t testing.TB) *syncBuffer {
	s := &syncBuffer{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var keep []string
		for line := range strings.SplitSeq(s.String(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
				keep = append(keep, line)
			}
		}
		if len(keep) > 0 {
			t.Logf("server log (warnings and errors):\n%s", strings.Join(keep, "\n"))
		}
	})
	return s
}

type harness struct {
	t     *testing.T
	srv   *httptest.Server
	db    *store.DB
	auth  *auth.Service
	clock *fakeClock
	logs  *syncBuffer
	reg   *prometheus.Registry
}

const testPassword = "correct horse battery staple"

func newHarness(t *testing.T, opts ...func(*auth.Options)) *harness {
	t.Helper()
	h := &harness{
		t:     t,
		db:    storetest.OpenSQLite(t),
		clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		logs:  newLogs(t),
		reg:   prometheus.NewRegistry(),
	}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := auth.Options{
		Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute,
	}
	for _, f := range opts {
		f(&o)
	}
	h.auth = auth.New(o)
	sec, err := secrets.New(h.db, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(validateResponses(t, NewServer(Deps{
		Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test", Secrets: sec,
	})))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) createUser(email string, role auth.Role) *auth.User {
	h.t.Helper()
	u, err := h.auth.CreateUser(context.Background(), email, testPassword, role)
	if err != nil {
		h.t.Fatalf("create user: %v", err)
	}
	return u
}

// client returns an HTTP client with its own cookie jar.
func (h *harness) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) errBody(t *testing.T) errorBody {
	t.Helper()
	var e struct {
		Error errorBody `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Error
}

func (r resp) data(t *testing.T, v any) {
	t.Helper()
	var d struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if err := json.Unmarshal(d.Data, v); err != nil {
		t.Fatalf("data %q: %v", d.Data, err)
	}
}

// do sends a request; body may be a string (sent raw) or a value (JSON).
func (h *harness) do(c *http.Client, method, path string, body any, hdr ...string) resp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	url := h.srv.URL + path
	if strings.HasPrefix(path, "http://") { // another server of the test
		url = path
	}
	// A request that never ends fails the test with the goroutines that
	// have waited long, rather than the whole package's run timing out.
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			h.t.Fatalf("%s %s: no answer in %s; goroutines waiting a minute or more:\n%s", method, path, requestTimeout, longWaits())
		}
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		if ctx.Err() != nil {
			h.t.Fatalf("%s %s: body not read in %s; goroutines waiting a minute or more:\n%s", method, path, requestTimeout, longWaits())
		}
		h.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// requestTimeout bounds one request of the harness (seconds when all is
// well, on a loaded machine too).
const requestTimeout = 3 * time.Minute

// longWaits returns the stacks of this process's goroutines that have been
// blocked for a minute or more in the project's code: what a hung request
// waits on.
func longWaits() string {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	var out []string
	for _, g := range strings.Split(buf.String(), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(head, " minutes]") && strings.Contains(g, "techboss/internal/") && !strings.Contains(g, "longWaits") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func (h *harness) login(c *http.Client, email, password string) resp {
	h.t.Helper()
	return h.do(c, "POST", "/auth/login", map[string]string{"email": email, "password": password})
}

func (h *harness) mustLogin(email string) *http.Client {
	h.t.Helper()
	c := h.client()
	if r := h.login(c, email, testPassword); r.status != http.StatusOK {
		h.t.Fatalf("login: status %d body %s", r.status, r.body)
	}
	return c
}

func (h *harness) newToken(c *http.Client, name string) createTokenResponse {
	h.t.Helper()
	r := h.do(c, "POST", "/auth/tokens", map[string]string{"name": name})
	if r.status != http.StatusCreated {
		h.t.Fatalf("create token: status %d body %s", r.status, r.body)
	}
	var tr createTokenResponse
	r.data(h.t, &tr)
	return tr
}

func wantStatus(t *testing.T, r resp, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status = %d, want %d; body %s", r.status, want, r.body)
	}
}

func (h *harness) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
