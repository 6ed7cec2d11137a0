// Package webhooks sends users' webhooks: events of a user's resources
// (a run finished, a tool call waits for approval, a sandbox failed) are
// written to an outbox table in the same step they are emitted, and a
// worker delivers them, signed with the hook's secret, retrying with
// backoff until the receiver answers 2xx or the attempts run out. A
// delivery is at-least-once; its id (X-Techboss-Delivery) is the
// receiver's idempotency key and stays the same across retries.
package webhooks

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
)

// Event types a hook may subscribe to.
const (
	RunFinished         = "run.finished"
	RunFailed           = "run.failed"
	RunCancelled        = "run.cancelled"
	RunInterrupted      = "run.interrupted"
	PermissionRequested = "permission.requested"
	SandboxFailed       = "sandbox.failed"
	SnapshotFailed      = "snapshot.failed"
	// Ping is what POST /webhooks/{id}/test sends; no hook subscribes to it.
	Ping = "ping"
)

// Events are the event types a hook may subscribe to.
var Events = []string{RunFinished, RunFailed, RunCancelled, RunInterrupted, PermissionRequested, SandboxFailed, SnapshotFailed}

// Store is what the service needs from the database (internal/store).
type Store interface {
	CreateWebhook(ctx context.Context, h *store.Webhook) error
	GetWebhook(ctx context.Context, userID, id string) (*store.Webhook, error)
	ListWebhooks(ctx context.Context, userID string) ([]*store.Webhook, error)
	DeleteWebhook(ctx context.Context, userID, id string) error
	EnqueueWebhookEvent(ctx context.Context, userID, onlyHook, event, data string, at time.Time, newID func() string) (int, error)
	ClaimWebhookDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]*store.WebhookDelivery, error)
	RecordWebhookAttempt(ctx context.Context, x *store.WebhookDelivery) error
	ListWebhookDeliveries(ctx context.Context, webhookID string, limit int) ([]*store.WebhookDelivery, error)
}

// Options tune the service; zero values take the defaults.
type Options struct {
	// Allow are local or private ranges deliveries may reach
	// (TECHBOSS_WEBHOOK_ALLOW); all other such addresses are refused.
	Allow []netip.Prefix
	// MaxAttempts bounds the attempts of one delivery (default 8).
	MaxAttempts int
	// RetryBase is the wait after the first failed attempt (default 30s);
	// it doubles with each attempt, with jitter: 8 attempts span ~1 hour.
	RetryBase time.Duration
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	// Poll is how often the worker looks for due deliveries when nothing
	// woke it (default 1s).
	Poll time.Duration
	// Lease is how long a claimed delivery is this replica's (default 1m;
	// more than Timeout).
	Lease time.Duration
	// Concurrency bounds the requests in flight (default 8).
	Concurrency int
}

// Service manages hooks and delivers their events.
type Service struct {
	db   Store
	aead cipher.AEAD
	opt  Options
	log  *slog.Logger
	now  func() time.Time
	http *http.Client
	wake chan struct{}
	// held are events Emit could not write to the outbox (the database
	// was down); Run writes them when it answers again, in order.
	heldMu sync.Mutex
	held   []heldEvent
}

// heldEvent is an event waiting for the database.
type heldEvent struct {
	userID, typ, data string
	at                time.Time
}

// maxHeld bounds the events held while the database is down; past it the
// oldest go, with an error in the log.
const maxHeld = 10000

// New returns a service sealing hooks' secrets with key (32 bytes, the
// server's secret key).
func New(db Store, key []byte, opt Options, log *slog.Logger) (*Service, error) {
	if len(key) != 32 {
		return nil, errors.New("webhooks: the key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 8
	}
	if opt.RetryBase <= 0 {
		opt.RetryBase = 30 * time.Second
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	if opt.Poll <= 0 {
		opt.Poll = time.Second
	}
	if opt.Lease <= opt.Timeout {
		opt.Lease = max(time.Minute, 2*opt.Timeout)
	}
	if opt.Concurrency <= 0 {
		opt.Concurrency = 8
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{db: db, aead: aead, opt: opt, log: log, now: time.Now, wake: make(chan struct{}, 1)}
	s.http = &http.Client{
		Transport: s.transport(),
		Timeout:   opt.Timeout,
		// A redirect is the receiver's answer, not a new address to call:
		// following it would let a public URL point the server at a
		// private one.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s, nil
}

// Hook is a webhook as the API shows it (never its secret).
type Hook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	CreatedAt time.Time `json:"created_at"`
}

// Created is the answer to a create: the hook and, this once, its secret.
type Created struct {
	Hook
	// Secret signs the deliveries; it is shown only here.
	Secret string `json:"secret"`
}

// Delivery is one entry of a hook's delivery log.
type Delivery struct {
	ID             string    `json:"id"`
	Event          string    `json:"event"`
	State          string    `json:"state"`
	Attempts       int       `json:"attempts"`
	ResponseStatus int       `json:"response_status,omitempty"`
	Error          string    `json:"error,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitzero"`
}

func hookOf(h *store.Webhook) Hook {
	return Hook{ID: h.ID, URL: h.URL, Events: h.Events, CreatedAt: h.CreatedAt}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// MaxHooks bounds a user's hooks.
const MaxHooks = 20

// Create validates and stores a hook of userID; the answer holds its secret.
func (s *Service) Create(ctx context.Context, userID, rawURL string, events []string) (*Created, error) {
	var fs []errs.FieldError
	if reason := s.checkURL(rawURL); reason != "" {
		fs = append(fs, errs.FieldError{Field: "url", Reason: reason})
	}
	if len(events) == 0 {
		fs = append(fs, errs.FieldError{Field: "events", Reason: "name at least one of " + strings.Join(Events, ", ")})
	}
	var seen []string
	for _, e := range events {
		if !slices.Contains(Events, e) {
			fs = append(fs, errs.FieldError{Field: "events", Reason: fmt.Sprintf("unknown event %q; known: %s", e, strings.Join(Events, ", "))})
			break
		}
		if !slices.Contains(seen, e) {
			seen = append(seen, e)
		}
	}
	if err := errs.Fields(fs); err != nil {
		return nil, err
	}
	hooks, err := s.db.ListWebhooks(ctx, userID)
	if err != nil {
		return nil, err
	}
	if len(hooks) >= MaxHooks {
		return nil, errs.E(errs.Conflict, "a user may have at most %d webhooks", MaxHooks)
	}
	id := "wh_" + randHex(8)
	secret := "whsec_" + randHex(24)
	sealed, err := s.seal(id, secret)
	if err != nil {
		return nil, err
	}
	h := &store.Webhook{ID: id, UserID: userID, URL: rawURL, Events: seen, SecretSealed: sealed, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if err := s.db.CreateWebhook(ctx, h); err != nil {
		return nil, err
	}
	return &Created{Hook: hookOf(h), Secret: secret}, nil
}

// List returns userID's hooks.
func (s *Service) List(ctx context.Context, userID string) ([]Hook, error) {
	hs, err := s.db.ListWebhooks(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Hook, len(hs))
	for i, h := range hs {
		out[i] = hookOf(h)
	}
	return out, nil
}

// Delete removes userID's hook id and its delivery log.
func (s *Service) Delete(ctx context.Context, userID, id string) error {
	return s.db.DeleteWebhook(ctx, userID, id)
}

// Deliveries returns the newest 100 deliveries of userID's hook id.
func (s *Service) Deliveries(ctx context.Context, userID, id string) ([]Delivery, error) {
	if _, err := s.db.GetWebhook(ctx, userID, id); err != nil {
		return nil, err
	}
	xs, err := s.db.ListWebhookDeliveries(ctx, id, 100)
	if err != nil {
		return nil, err
	}
	out := make([]Delivery, len(xs))
	for i, x := range xs {
		d := Delivery{ID: x.ID, Event: x.Event, State: x.State, Attempts: x.Attempts, ResponseStatus: x.ResponseStatus,
			Error: x.LastError, CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt}
		if x.State == store.DeliveryPending {
			d.NextAttemptAt = x.NextAttemptAt
		}
		out[i] = d
	}
	return out, nil
}

// Test queues a ping to userID's hook id.
func (s *Service) Test(ctx context.Context, userID, id string) error {
	if _, err := s.db.GetWebhook(ctx, userID, id); err != nil {
		return err
	}
	return s.enqueue(ctx, userID, id, Ping, map[string]string{"webhook_id": id})
}

// Emit writes a delivery of the event to each of userID's hooks that
// subscribe to it, and wakes the worker. It is how the run service, the
// sandbox manager and the snapshot path report events; a failure is
// logged, never returned (the event's own work goes on).
func (s *Service) Emit(ctx context.Context, userID, typ string, data any) {
	if userID == "" {
		return
	}
	b, err := json.Marshal(data)
	if err != nil {
		s.log.Error("encode webhook event", "event", typ, "err", err)
		return
	}
	ev := heldEvent{userID: userID, typ: typ, data: string(b), at: s.now().UTC()}
	// Behind events already held, so they stay in order.
	if s.flushHeld(context.WithoutCancel(ctx)) {
		err := s.write(context.WithoutCancel(ctx), ev, "")
		if err == nil {
			return
		}
		s.log.Warn("webhook event held until the database answers", "event", typ, "user_id", userID, "err", err)
	}
	s.hold(ev)
}

// hold keeps ev for Run to write once the database answers.
func (s *Service) hold(ev heldEvent) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if len(s.held) >= maxHeld {
		s.log.Error("webhook events held past the bound while the database is down: the oldest is dropped", "event", s.held[0].typ, "user_id", s.held[0].userID)
		s.held = s.held[1:]
	}
	s.held = append(s.held, ev)
}

// flushHeld writes the held events in order; false when one could not be
// written (it and the rest stay held).
func (s *Service) flushHeld(ctx context.Context) bool {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	for len(s.held) > 0 {
		if err := s.write(ctx, s.held[0], ""); err != nil {
			return false
		}
		s.held = s.held[1:]
	}
	return true
}

// Held is how many events wait for the database.
func (s *Service) Held() int {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return len(s.held)
}

func (s *Service) enqueue(ctx context.Context, userID, onlyHook, typ string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s data: %w", typ, err)
	}
	return s.write(ctx, heldEvent{userID: userID, typ: typ, data: string(b), at: s.now().UTC()}, onlyHook)
}

// write puts one event in the outbox, a delivery per subscribed hook.
func (s *Service) write(ctx context.Context, ev heldEvent, onlyHook string) error {
	n, err := s.db.EnqueueWebhookEvent(ctx, ev.userID, onlyHook, ev.typ, ev.data, ev.at, func() string { return "whd_" + randHex(12) })
	if err != nil {
		return err
	}
	if n > 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// aad binds a sealed secret to its hook: moved to another row, it does not open.
func aad(hookID string) []byte {
	h := sha256.Sum256([]byte("webhook\x00" + hookID))
	return h[:]
}

func (s *Service) seal(hookID, secret string) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return "v1:" + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(secret), aad(hookID))), nil
}

func (s *Service) open(hookID, sealed string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, "v1:"))
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errors.New("malformed sealed secret")
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], aad(hookID))
	if err != nil {
		return "", errors.New("the hook's secret cannot be opened with this server's key (TECHBOSS_SECRET_KEY changed?)")
	}
	return string(plain), nil
}

// checkURL returns why rawURL may not be a hook's URL ("" if it may).
func (s *Service) checkURL(rawURL string) string {
	if len(rawURL) > 2048 {
		return "at most 2048 characters"
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return "must be an absolute http:// or https:// URL"
	}
	if u.User != nil {
		return "must not hold credentials"
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !s.addrAllowed(ip) {
		return fmt.Sprintf("%s is a local, link-local or private address (the operator may open a range with TECHBOSS_WEBHOOK_ALLOW)", ip)
	}
	return ""
}

// addrAllowed reports whether a delivery may connect to ip: not a
// blocked or private address unless the operator allowed its range.
func (s *Service) addrAllowed(ip netip.Addr) bool { return sandbox.ServerMayDial(ip, s.opt.Allow) }

// transport checks the address actually dialed, so a name that resolves
// (or rebinds) to a refused address is refused too.
func (s *Service) transport() http.RoundTripper {
	d := sandbox.GuardedDialer(s.opt.Timeout, s.opt.Allow, "TECHBOSS_WEBHOOK_ALLOW")
	return &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true, MaxIdleConns: 16,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: s.opt.Timeout, Proxy: nil}
}

// Run delivers due deliveries until ctx is done, then waits for the
// requests in flight.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, s.opt.Concurrency)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
		s.flushHeld(ctx)
		for {
			free := s.opt.Concurrency - len(sem)
			if free == 0 {
				break
			}
			xs, err := s.db.ClaimWebhookDeliveries(ctx, s.now().UTC(), s.opt.Lease, free)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("claim webhook deliveries", "err", err)
				}
				break
			}
			for _, x := range xs {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					s.attempt(ctx, x)
				})
			}
			if len(xs) < free {
				break
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(s.opt.Poll)
	}
}

// Body is a delivery's JSON body.
type Body struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// Sign returns the X-Techboss-Signature value of a body sent at timestamp
// (unix seconds): "sha256=" and the hex HMAC-SHA256 of "<timestamp>.<body>".
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// attempt sends x once and records the outcome.
func (s *Service) attempt(ctx context.Context, x *store.WebhookDelivery) {
	log := s.log.With("webhook_id", x.WebhookID, "delivery_id", x.ID, "event", x.Event)
	x.Attempts++
	status, final, err := s.send(ctx, x)
	if ctx.Err() != nil && err != nil {
		// Shutting down: leave the row to the lease (the next start or
		// another replica sends it again).
		return
	}
	now := s.now().UTC()
	x.ResponseStatus, x.UpdatedAt, x.LastError = status, now, ""
	switch {
	case err == nil:
		x.State = store.DeliveryDelivered
	case final || x.Attempts >= s.opt.MaxAttempts:
		x.State, x.LastError = store.DeliveryFailed, err.Error()
		log.Warn("webhook delivery failed", "attempts", x.Attempts, "status", status, "err", err)
	default:
		x.State, x.LastError = store.DeliveryPending, err.Error()
		x.NextAttemptAt = now.Add(s.backoff(x.Attempts))
	}
	// The outcome must be stored even when ctx ends now.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.db.RecordWebhookAttempt(rctx, x); err != nil {
		log.Error("record webhook attempt", "err", err)
	}
}

// backoff is the wait after the n-th failed attempt: RetryBase·2^(n-1),
// between half and all of it (jitter, so hooks failing together do not
// retry together).
func (s *Service) backoff(n int) time.Duration {
	d := s.opt.RetryBase << min(n-1, 20)
	return d/2 + mrand.N(d/2+1)
}

// send makes one request. final reports an answer that retrying will not
// change (a 4xx other than 408 and 429, a redirect, a hook gone).
func (s *Service) send(ctx context.Context, x *store.WebhookDelivery) (status int, final bool, err error) {
	h, err := s.db.GetWebhook(ctx, "", x.WebhookID)
	if errs.KindOf(err) == errs.NotFound {
		return 0, true, errors.New("the webhook was deleted")
	}
	if err != nil {
		return 0, false, err
	}
	secret, err := s.open(h.ID, h.SecretSealed)
	if err != nil {
		return 0, true, err
	}
	body, err := json.Marshal(Body{ID: x.ID, Type: x.Event, CreatedAt: x.CreatedAt, Data: json.RawMessage(x.Data)})
	if err != nil {
		return 0, true, err
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, true, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "techboss-webhooks")
	req.Header.Set("X-Techboss-Event", x.Event)
	req.Header.Set("X-Techboss-Delivery", x.ID)
	req.Header.Set("X-Techboss-Timestamp", ts)
	req.Header.Set("X-Techboss-Signature", Sign(secret, ts, body))
	resp, err := s.http.Do(req)
	if err != nil {
		// The URL itself (its host, not the secret) may show in the error.
		return 0, false, fmt.Errorf("request: %w", unwrapURLError(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return c, false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return c, false, fmt.Errorf("HTTP %d", c)
	default:
		return c, true, fmt.Errorf("HTTP %d", c)
	}
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
