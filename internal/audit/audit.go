// Package audit is the append-only record of state-changing actions: who
// did what to which resource, from where, when, and with what result. The
// HTTP adapter records one Entry per state-changing request; Log queues
// entries off the request path and writes them with retries, so a
// database blip delays entries instead of losing them or the request.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Entry is one recorded action. It never holds a request body, a secret
// value, a token or a password: only names and IDs.
type Entry struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
	// UserID and Email are who acted (empty for a failed login of an
	// unknown user: Email is then the address that was tried).
	UserID string `json:"user_id,omitempty"`
	Email  string `json:"email,omitempty"`
	// Auth is how the user authenticated: "session", "token" (TokenID is
	// the API token's ID) or "password" (a login).
	Auth    string `json:"auth,omitempty"`
	TokenID string `json:"token_id,omitempty"`
	// IP is the client address as the server decides it (trusted proxies).
	IP string `json:"ip"`
	// Action names what was done, e.g. "sandbox.create", "exec", "login".
	Action string `json:"action"`
	Method string `json:"method"`
	// Route is the route pattern that served the request.
	Route string `json:"route"`
	// Resource is what was acted on, most general first:
	// "sandbox:sb_1/run:run_2" (empty when unknown).
	Resource string `json:"resource,omitempty"`
	// Status is the HTTP status answered; ErrorCode the error body's code.
	Status    int    `json:"status"`
	ErrorCode string `json:"error_code,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// Cursor is a position in the newest-first order (At, then ID).
type Cursor struct {
	At time.Time
	ID string
}

// String encodes c for ?cursor=.
func (c Cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.At.UnixMilli(), 10) + ":" + c.ID))
}

// ParseCursor decodes Cursor.String; bad input is errs.Invalid on "cursor".
func ParseCursor(s string) (Cursor, error) {
	bad := errs.Field("cursor", "not a cursor returned by this API")
	if len(s) > 256 {
		return Cursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	msS, id, ok := strings.Cut(string(b), ":")
	if !ok || id == "" || len(id) > 64 {
		return Cursor{}, bad
	}
	v, err := strconv.ParseInt(msS, 10, 64)
	if err != nil || v < 0 {
		return Cursor{}, bad
	}
	return Cursor{At: time.UnixMilli(v).UTC(), ID: id}, nil
}

// MaxPageSize bounds Filter.Limit.
const MaxPageSize = 500

// Filter selects entries, newest first. Zero fields match everything.
type Filter struct {
	// User matches the user ID or the email.
	User   string
	Action string
	// Resource matches that resource and everything under it:
	// "sandbox:sb_1" matches "sandbox:sb_1/run:run_2".
	Resource string
	From, To time.Time // From inclusive, To exclusive
	After    *Cursor
	Limit    int // 1..MaxPageSize; 0 = MaxPageSize
}

// Repo stores entries. AppendAudit is idempotent by Entry.ID, so a retry
// after an ambiguous failure never doubles an entry.
type Repo interface {
	AppendAudit(ctx context.Context, es []Entry) error
	ListAudit(ctx context.Context, f Filter) ([]Entry, error)
	DeleteAuditBefore(ctx context.Context, before time.Time) (int64, error)
}

// NewID returns a fresh entry ID.
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "au_" + hex.EncodeToString(b[:])
}

// MaxQueued bounds the entries waiting for the database; past it the
// oldest waiting entry is dropped (and counted) rather than holding
// requests up or growing without bound during a long outage.
const MaxQueued = 100_000

const batchSize = 200

// Options configure a Log.
type Options struct {
	Repo   Repo
	Logger *slog.Logger
	Clock  func() time.Time
	// Keep is how long entries are kept (0: forever); Sweep deletes older.
	Keep time.Duration
	// SweepEvery is how often Run sweeps (default 1 h).
	SweepEvery time.Duration
	// Drain is how long Run goes on writing queued entries after its
	// context ends (default 10 s).
	Drain time.Duration
}

// Log queues entries and writes them in the background (Run).
type Log struct {
	o Options

	mu      sync.Mutex
	q       []Entry
	busy    bool          // a batch taken from q is being written
	idle    chan struct{} // closed when q is empty and nothing is in flight; nil when idle
	kick    chan struct{} // capacity 1
	dropped int64
}

// New returns a Log; call Run to write what Record queues.
func New(o Options) *Log {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Hour
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	return &Log{o: o, kick: make(chan struct{}, 1)}
}

// Record queues e (giving it an ID and time when unset) and returns at
// once; it never touches the database.
func (l *Log) Record(e Entry) {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.At.IsZero() {
		e.At = l.o.Clock()
	}
	e.At = e.At.UTC().Truncate(time.Millisecond)
	l.mu.Lock()
	if len(l.q) >= MaxQueued {
		l.q = l.q[1:]
		l.dropped++
	}
	l.q = append(l.q, e)
	if l.idle == nil {
		l.idle = make(chan struct{})
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Backlog is the number of entries waiting for the database.
func (l *Log) Backlog() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.q)
}

// Flush waits until every entry recorded so far is written (Run must be
// running), or ctx is done.
func (l *Log) Flush(ctx context.Context) error {
	l.mu.Lock()
	idle := l.idle
	l.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes queued entries with retries and sweeps old ones until ctx is
// done; then it goes on writing for up to Options.Drain and logs what it
// could not write.
func (l *Log) Run(ctx context.Context) error {
	sweep := time.NewTicker(l.o.SweepEvery)
	defer sweep.Stop()
	l.Sweep(ctx)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	wait := 50 * time.Millisecond
	stop := ctx.Done()
	var drained <-chan time.Time
	for {
		ok := l.writeAll()
		if drained != nil && l.Backlog() == 0 {
			return nil
		}
		if ok {
			wait = 50 * time.Millisecond
		} else {
			retry.Reset(wait)
			wait = min(wait*2, 5*time.Second)
		}
		select {
		case <-l.kick:
		case <-retry.C:
		case <-sweep.C:
			l.Sweep(ctx)
		case <-stop:
			stop = nil
			t := time.NewTimer(l.o.Drain)
			defer t.Stop()
			drained = t.C
		case <-drained:
			l.o.Logger.Error("audit entries not written before shutdown (database unreachable)", "entries", l.Backlog())
			return nil
		}
	}
}

// writeAll writes batches until the queue is empty (true) or the store
// refuses one (false).
func (l *Log) writeAll() bool {
	for {
		ok, more := l.writeBatch()
		if !ok || !more {
			return ok
		}
	}
}

// writeBatch writes the oldest queued entries. ok is false when the
// store refused them (they stay queued); more is true when entries remain.
func (l *Log) writeBatch() (ok, more bool) {
	l.mu.Lock()
	n := min(len(l.q), batchSize)
	if n == 0 {
		l.markIdle()
		l.mu.Unlock()
		return true, false
	}
	batch := append([]Entry(nil), l.q[:n]...)
	l.busy = true
	dropped := l.dropped
	l.dropped = 0
	l.mu.Unlock()
	if dropped > 0 {
		l.o.Logger.Error("audit queue full: oldest entries dropped", "entries", dropped)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := l.o.Repo.AppendAudit(ctx, batch)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy = false
	if err != nil {
		l.o.Logger.Warn("audit entries not written yet; will retry", "entries", len(batch), "err", err)
		return false, true
	}
	// Entries may have been dropped from the front meanwhile: remove the
	// written ones by ID.
	written := make(map[string]bool, len(batch))
	for _, e := range batch {
		written[e.ID] = true
	}
	i := 0
	for i < len(l.q) && written[l.q[i].ID] {
		i++
	}
	l.q = l.q[i:]
	if len(l.q) == 0 {
		l.q = nil
		l.markIdle()
		return true, false
	}
	return true, true
}

// markIdle closes idle when nothing waits (l.mu held).
func (l *Log) markIdle() {
	if len(l.q) == 0 && !l.busy && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
}

// Sweep deletes entries older than Options.Keep (nothing when Keep is 0).
func (l *Log) Sweep(ctx context.Context) {
	if l.o.Keep <= 0 {
		return
	}
	n, err := l.o.Repo.DeleteAuditBefore(ctx, l.o.Clock().Add(-l.o.Keep))
	if err != nil {
		if ctx.Err() == nil {
			l.o.Logger.Warn("sweep audit log", "err", err)
		}
		return
	}
	if n > 0 {
		l.o.Logger.Info("swept old audit entries", "entries", n, "keep", l.o.Keep.String())
	}
}
