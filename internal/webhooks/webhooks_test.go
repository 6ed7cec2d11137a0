package webhooks_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/pgserver"
	"github.com/techbossai/techboss/internal/store/storetest"
	"github.com/techbossai/techboss/internal/webhooks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var key = bytes.Repeat([]byte{7}, 32)

// loopback is what tests allow: the receiver listens on 127.0.0.1.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// hit is one request the receiver got, its signature checked.
type hit struct {
	event, delivery string
	body            webhooks.Body
	sigOK           bool
}

// receiver is a webhook endpoint that verifies signatures and answers
// with the statuses in plan (then 200).
type receiver struct {
	*httptest.Server
	secret string
	mu     sync.Mutex
	plan   []int
	hits   []hit
	got    chan hit
}

func newReceiver(t *testing.T, plan ...int) *receiver {
	rc := &receiver{plan: plan, got: make(chan hit, 64)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Techboss-Timestamp")
		rc.mu.Lock()
		secret := rc.secret
		status := 200
		if len(rc.plan) > 0 {
			status, rc.plan = rc.plan[0], rc.plan[1:]
		}
		rc.mu.Unlock()
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts + "."))
		m.Write(body)
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		sec, err := strconv.ParseInt(ts, 10, 64)
		fresh := err == nil && time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute
		h := hit{event: r.Header.Get("X-Techboss-Event"), delivery: r.Header.Get("X-Techboss-Delivery"),
			sigOK: fresh && hmac.Equal([]byte(want), []byte(r.Header.Get("X-Techboss-Signature")))}
		_ = json.Unmarshal(body, &h.body)
		rc.mu.Lock()
		rc.hits = append(rc.hits, h)
		rc.mu.Unlock()
		w.WriteHeader(status)
		rc.got <- h
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) setSecret(s string) { rc.mu.Lock(); rc.secret = s; rc.mu.Unlock() }

func (rc *receiver) next(t *testing.T) hit {
	t.Helper()
	select {
	case h := <-rc.got:
		return h
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery within 30s")
		return hit{}
	}
}

// logBuf collects the service's log.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newService(t *testing.T, db *store.DB, logs io.Writer, opt webhooks.Options) *webhooks.Service {
	t.Helper()
	if opt.Allow == nil {
		opt.Allow = loopback
	}
	if opt.RetryBase == 0 {
		opt.RetryBase = 5 * time.Millisecond
	}
	opt.Poll = 10 * time.Millisecond
	if logs == nil {
		logs = io.Discard
	}
	s, err := webhooks.New(db, key, opt, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs s until the test ends (or the returned stop is called).
func start(t *testing.T, s *webhooks.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func waitState(t *testing.T, s *webhooks.Service, user, hook, state string) []webhooks.Delivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ds, err := s.Deliveries(context.Background(), user, hook)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) > 0 && ds[0].State == state {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries = %+v, want the newest %s", ds, state)
		}
		time.Sleep(10 * time.Millisecond) // polling the log; nothing else to wait on
	}
}

func TestWebhooks(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Run("SignedRetriedSameID", func(t *testing.T) { testRetry(t, storetest.Open(t, d)) })
			t.Run("PermanentFailure", func(t *testing.T) { testPermanent(t, storetest.Open(t, d)) })
			t.Run("PrivateAddress", func(t *testing.T) { testPrivate(t, storetest.Open(t, d)) })
			t.Run("SurvivesRestart", func(t *testing.T) { testRestart(t, storetest.Open(t, d)) })
			t.Run("Validation", func(t *testing.T) { testValidation(t, storetest.Open(t, d)) })
		})
	}
}

func testRetry(t *testing.T, db *store.DB) {
	ctx := context.Background()
	rc := newReceiver(t, 500, 503)
	var logs logBuf
	s := newService(t, db, &logs, webhooks.Options{})
	h, err := s.Create(ctx, "alice", rc.URL+"/hook", []string{webhooks.RunFinished})
	if err != nil {
		t.Fatal(err)
	}
	rc.setSecret(h.Secret)
	other := newReceiver(t)
	if _, err := s.Create(ctx, "bob", other.URL, []string{webhooks.RunFinished}); err != nil {
		t.Fatal(err)
	}
	start(t, s)
	s.Emit(ctx, "alice", webhooks.RunFinished, map[string]string{"run_id": "run_1"})
	first, second, third := rc.next(t), rc.next(t), rc.next(t)
	for i, x := range []hit{first, second, third} {
		if !x.sigOK {
			t.Errorf("attempt %d: signature does not verify", i+1)
		}
		if x.delivery != first.delivery || x.body.ID != first.delivery {
			t.Errorf("attempt %d: delivery id %q (body %q), want %q on every attempt", i+1, x.delivery, x.body.ID, first.delivery)
		}
		if x.event != webhooks.RunFinished || x.body.Type != webhooks.RunFinished || string(x.body.Data) != `{"run_id":"run_1"}` {
			t.Errorf("attempt %d: event %q body %+v", i+1, x.event, x.body)
		}
	}
	ds := waitState(t, s, "alice", h.ID, store.DeliveryDelivered)
	if len(ds) != 1 || ds[0].Attempts != 3 || ds[0].ResponseStatus != 200 || ds[0].ID != first.delivery {
		t.Errorf("delivery log = %+v, want one delivered after 3 attempts", ds)
	}
	// Another user's hook got nothing.
	select {
	case x := <-other.got:
		t.Errorf("bob's hook got %+v; want nothing", x)
	default:
	}
	// The secret is in the create's answer only.
	hooks, _ := s.List(ctx, "alice")
	b, _ := json.Marshal(hooks)
	b2, _ := json.Marshal(ds)
	if strings.Contains(string(b)+string(b2)+logs.String(), h.Secret) {
		t.Error("the hook's secret shows in a list, the delivery log or the log")
	}
	var sealed string
	if err := db.SQL().QueryRow(`SELECT secret_sealed FROM webhooks`).Scan(&sealed); err != nil || strings.Contains(sealed, h.Secret) || sealed == "" {
		t.Errorf("stored secret %q (%v): want it sealed", sealed, err)
	}
}

func testPermanent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	rc := newReceiver(t, 410, 200)
	s := newService(t, db, nil, webhooks.Options{})
	h, err := s.Create(ctx, "alice", rc.URL, []string{webhooks.SandboxFailed})
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	s.Emit(ctx, "alice", webhooks.SandboxFailed, map[string]string{"sandbox_id": "sb_1"})
	rc.next(t)
	ds := waitState(t, s, "alice", h.ID, store.DeliveryFailed)
	if ds[0].Attempts != 1 || ds[0].ResponseStatus != 410 || ds[0].Error != "HTTP 410" {
		t.Errorf("delivery = %+v, want failed after 1 attempt with 410", ds[0])
	}
	// A test ping is a new delivery (and this one succeeds).
	if err := s.Test(ctx, "alice", h.ID); err != nil {
		t.Fatal(err)
	}
	if x := rc.next(t); x.event != webhooks.Ping || x.delivery == ds[0].ID {
		t.Errorf("ping = %+v, want a new ping delivery", x)
	}
	ds = waitState(t, s, "alice", h.ID, store.DeliveryDelivered)
	if len(ds) != 2 || ds[1].Attempts != 1 {
		t.Errorf("deliveries = %+v, want the failed one not retried", ds)
	}
}

func testPrivate(t *testing.T, db *store.DB) {
	ctx := context.Background()
	rc := newReceiver(t)
	s := newService(t, db, nil, webhooks.Options{Allow: []netip.Prefix{}, MaxAttempts: 2})
	for _, u := range []string{rc.URL, "http://169.254.169.254/latest", "http://10.0.0.1/x", "http://[::1]:80/"} {
		_, err := s.Create(ctx, "alice", u, []string{webhooks.RunFailed})
		if f := fieldOf(err); f != "url" {
			t.Errorf("Create(%s) = %v, want invalid naming url", u, err)
		}
	}
	// A name that resolves to loopback is refused when dialed.
	h, err := s.Create(ctx, "alice", strings.Replace(rc.URL, "127.0.0.1", "localhost", 1), []string{webhooks.RunFailed})
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	s.Emit(ctx, "alice", webhooks.RunFailed, map[string]string{"run_id": "run_1"})
	ds := waitState(t, s, "alice", h.ID, store.DeliveryFailed)
	if ds[0].Attempts != 2 || !strings.Contains(ds[0].Error, "private address") {
		t.Errorf("delivery = %+v, want refused at dial time", ds[0])
	}
	select {
	case x := <-rc.got:
		t.Errorf("the receiver on loopback got %+v", x)
	default:
	}
}

func testRestart(t *testing.T, db *store.DB) {
	ctx := context.Background()
	rc := newReceiver(t)
	s1 := newService(t, db, nil, webhooks.Options{})
	h, err := s1.Create(ctx, "alice", rc.URL, []string{webhooks.RunFinished, webhooks.PermissionRequested})
	if err != nil {
		t.Fatal(err)
	}
	rc.setSecret(h.Secret)
	// The first server emits and stops before its worker sends anything.
	stop := start(t, s1)
	stop()
	s1.Emit(ctx, "alice", webhooks.PermissionRequested, map[string]int{"n": 1})
	s1.Emit(ctx, "alice", webhooks.RunFinished, map[string]int{"n": 2})
	// A new server on the same database delivers both.
	s2 := newService(t, db, nil, webhooks.Options{})
	start(t, s2)
	got := map[string]bool{}
	for range 2 {
		x := rc.next(t)
		if !x.sigOK {
			t.Error("signature does not verify after the restart")
		}
		got[x.event] = true
	}
	if !got[webhooks.PermissionRequested] || !got[webhooks.RunFinished] {
		t.Errorf("after restart got %v, want both events", got)
	}
}

func testValidation(t *testing.T, db *store.DB) {
	ctx := context.Background()
	s := newService(t, db, nil, webhooks.Options{})
	for _, c := range []struct {
		url    string
		events []string
		field  string
	}{
		{"ftp://example.com/x", []string{webhooks.RunFinished}, "url"},
		{"example.com/x", []string{webhooks.RunFinished}, "url"},
		{"https://u:p@example.com/x", []string{webhooks.RunFinished}, "url"},
		{"https://example.com/x", []string{"run.exploded"}, "events"},
		{"https://example.com/x", nil, "events"},
	} {
		if _, err := s.Create(ctx, "alice", c.url, c.events); fieldOf(err) != c.field {
			t.Errorf("Create(%q, %v) = %v, want invalid naming %s", c.url, c.events, err, c.field)
		}
	}
	if _, err := s.Deliveries(ctx, "alice", "wh_nope"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("Deliveries(missing) = %v, want not found", err)
	}
}

func fieldOf(err error) string {
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) == 0 {
		return ""
	}
	return e.Fields[0].Field
}

// An event emitted while the database is down is held and delivered once
// it answers again, not lost.
func TestEventHeldThroughDatabaseOutage(t *testing.T) {
	pg := pgserver.Start(t)
	db, err := store.Open(context.Background(), pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc := newReceiver(t)
	s := newService(t, db, nil, webhooks.Options{})
	h, err := s.Create(ctx, "alice", rc.URL, []string{webhooks.RunFinished})
	if err != nil {
		t.Fatal(err)
	}
	rc.setSecret(h.Secret)
	start(t, s)
	pg.Stop()
	s.Emit(ctx, "alice", webhooks.RunFinished, map[string]string{"run_id": "during-outage"})
	if s.Held() != 1 {
		t.Fatalf("%d events held while the database is down, want 1", s.Held())
	}
	pg.Start()
	x := rc.next(t)
	if !x.sigOK || string(x.body.Data) != `{"run_id":"during-outage"}` {
		t.Fatalf("after the outage got %+v (signature ok %v)", x.body, x.sigOK)
	}
	if s.Held() != 0 {
		t.Errorf("%d events still held", s.Held())
	}
}
