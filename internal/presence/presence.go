// Package presence tracks who is watching a sandbox right now: every open
// stream of it (a run's events, a terminal, a process's logs, file
// watching) joins on open and leaves on close. Subscribers (the run
// streams) hear about joins and leaves after a debounce, so a client that
// reconnects, or a page that opens three streams at once, makes one
// notice or none.
//
// Each replica holds the streams it serves. With several replicas on one
// database (Options.Board), each publishes its viewers per sandbox there
// and reads the others': Viewers merges them (Run keeps the board up to
// date). Without a board, presence is this replica's only.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stream kinds.
const (
	KindRun   = "run"   // a run's event stream
	KindPTY   = "pty"   // a terminal WebSocket
	KindLogs  = "logs"  // a managed process's log stream
	KindWatch = "watch" // a file watching stream
)

// DefaultDebounce is how long changes gather before subscribers hear of them.
const DefaultDebounce = 500 * time.Millisecond

// Defaults of the board's rhythm (Options.Heartbeat, Options.Poll).
const (
	DefaultHeartbeat = 10 * time.Second
	DefaultPoll      = time.Second
)

// expireBeats is how many heartbeats a replica may miss before its rows
// stop counting (and anyone may delete them).
const expireBeats = 3

// Board is where the replicas sharing a database publish their viewers:
// one row per replica and sandbox, stamped by the database's clock (so the
// replicas' clocks need not agree). store.DB.PresenceBoard implements it.
type Board interface {
	// Publish replaces replica's viewers of sandboxID with vs and stamps
	// them fresh; an empty vs removes the row.
	Publish(ctx context.Context, replica, sandboxID string, vs []Viewer) error
	// Renew stamps every row of replica fresh and reports how many it has;
	// it also deletes anyone's rows not stamped within expire.
	Renew(ctx context.Context, replica string, expire time.Duration) (int, error)
	// Others returns the viewers that replicas other than replica
	// published of sandboxIDs and stamped within expire: per sandbox, one
	// list per replica.
	Others(ctx context.Context, replica string, sandboxIDs []string, expire time.Duration) (map[string][][]Viewer, error)
	// Clear deletes every row of replica.
	Clear(ctx context.Context, replica string) error
}

// Viewer is one user watching a sandbox: since when (their oldest open
// stream), how many streams, of which kinds, following which runs.
type Viewer struct {
	UserID  string    `json:"user_id"`
	Email   string    `json:"email"`
	Since   time.Time `json:"since"`
	Streams int       `json:"streams"`
	Kinds   []string  `json:"kinds"`
	Runs    []string  `json:"runs,omitempty"`
}

// Stream is one open stream of a sandbox.
type Stream struct {
	UserID string
	Email  string
	Kind   string
	RunID  string // for KindRun
}

// Options tune a Tracker; zero values take the defaults.
type Options struct {
	// Debounce is how long changes gather before subscribers are told
	// (DefaultDebounce).
	Debounce time.Duration
	// Clock stamps Viewer.Since (time.Now).
	Clock func() time.Time
	// Busy is called when a sandbox gets its first viewer; the function it
	// returns when the last one leaves (the sandbox manager's MarkBusy: a
	// watched sandbox is not idle).
	Busy func(sandboxID string) (release func())
	// Board shares viewers with the other replicas of the deployment; nil
	// (one replica, e.g. on SQLite): this replica's viewers only.
	Board Board
	// Heartbeat is how often Run renews this replica's rows on the board
	// (DefaultHeartbeat); rows not renewed for three heartbeats (a replica
	// that was killed) no longer count.
	Heartbeat time.Duration
	// Poll is how often Run reads the other replicas' viewers of the
	// sandboxes that have subscribers here (DefaultPoll), and retries
	// what failed to publish.
	Poll time.Duration
	// Logger reports the board's failures (discarded when nil).
	Logger *slog.Logger
}

// Tracker holds the viewers of every sandbox this replica serves streams of.
type Tracker struct {
	opt  Options
	id   string        // this replica on the board
	wake chan struct{} // Run has work: a change to publish, a room to poll

	mu    sync.Mutex
	rooms map[string]*room
	// dirty are the sandboxes whose viewers here may differ from what Run
	// published of them.
	dirty map[string]struct{}

	// reads is how ViewersNow's reads of the board fare: while they fail
	// (the database is down and a UI polls), one warning, not one a read.
	reads readHealth
}

// readHealth collapses the failures of ViewersNow's board reads into one
// warning when they start and one notice when they work again.
type readHealth struct {
	mu     sync.Mutex
	failed int // reads failed since the last that worked; 0: they work
}

// fail counts a failed read; the first of a run of them is logged.
func (h *readHealth) fail(log *slog.Logger, sandboxID string, err error) {
	h.mu.Lock()
	h.failed++
	first := h.failed == 1
	h.mu.Unlock()
	if first {
		log.Warn("presence: reading the other replicas' viewers failed; answering with this replica's until it works", "sandbox", sandboxID, "err", err)
	}
}

// worked ends a run of failed reads, logging how many there were.
func (h *readHealth) worked(log *slog.Logger) {
	h.mu.Lock()
	n := h.failed
	h.failed = 0
	h.mu.Unlock()
	if n > 0 {
		log.Info("presence: reading the other replicas' viewers works again", "failed_reads", n)
	}
}

// room is one sandbox's viewers and subscribers.
type room struct {
	streams map[*joined]struct{}
	subs    map[*func()]struct{}
	timer   *time.Timer // pending notice; nil when none
	last    string      // signature of the viewers last announced
	release func()      // from Options.Busy
	// local is this replica's viewers, cache those merged with remote,
	// each while no stream joined or left since: a notice makes every
	// subscribed stream read them at once (thousands of followers of one
	// run), so they are built once, not once per stream.
	local, cache []Viewer
	// remote is the other replicas' viewers (merged), as last polled
	// while the room has subscribers; remoteKey identifies it.
	remote    []Viewer
	remoteKey string
	// moved: a stream joined or left here since the last notice (Run
	// publishes the room then).
	moved bool
}

type joined struct {
	Stream
	at time.Time
}

// New returns a tracker.
func New(opt Options) *Tracker {
	if opt.Debounce <= 0 {
		opt.Debounce = DefaultDebounce
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = DefaultHeartbeat
	}
	if opt.Poll <= 0 {
		opt.Poll = DefaultPoll
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Tracker{
		opt: opt, id: hex.EncodeToString(b[:]), wake: make(chan struct{}, 1),
		rooms: map[string]*room{}, dirty: map[string]struct{}{},
	}
}

func (t *Tracker) room(sandboxID string) *room {
	r := t.rooms[sandboxID]
	if r == nil {
		r = &room{streams: map[*joined]struct{}{}, subs: map[*func()]struct{}{}}
		t.rooms[sandboxID] = r
	}
	return r
}

// Join records an open stream of sandboxID until the returned release is
// called (safe to call more than once).
func (t *Tracker) Join(sandboxID string, s Stream) (release func()) {
	j := &joined{Stream: s, at: t.opt.Clock().UTC()}
	t.mu.Lock()
	r := t.room(sandboxID)
	first := len(r.streams) == 0
	r.streams[j] = struct{}{}
	r.local, r.cache, r.moved = nil, nil, true
	t.changed(sandboxID, r)
	t.mu.Unlock()
	if first && t.opt.Busy != nil {
		rel := t.opt.Busy(sandboxID)
		t.mu.Lock()
		if cur := t.rooms[sandboxID]; cur == r && len(r.streams) > 0 && r.release == nil {
			r.release, rel = rel, nil
		}
		t.mu.Unlock()
		if rel != nil {
			rel() // everyone left already
		}
	}
	var once sync.Once
	return func() { once.Do(func() { t.leave(sandboxID, j) }) }
}

func (t *Tracker) leave(sandboxID string, j *joined) {
	t.mu.Lock()
	r := t.rooms[sandboxID]
	var rel func()
	if r != nil {
		delete(r.streams, j)
		r.local, r.cache, r.moved = nil, nil, true
		if len(r.streams) == 0 {
			rel, r.release = r.release, nil
		}
		t.changed(sandboxID, r)
		t.gc(sandboxID, r)
	}
	t.mu.Unlock()
	if rel != nil {
		rel()
	}
}

// gc drops an empty room with nothing pending.
func (t *Tracker) gc(sandboxID string, r *room) {
	if len(r.streams) == 0 && len(r.subs) == 0 && r.timer == nil {
		delete(t.rooms, sandboxID)
	}
}

// changed schedules a notice to the room's subscribers (and, with a
// board, the publishing of its viewers), unless one is pending already.
// Called with t.mu held.
func (t *Tracker) changed(sandboxID string, r *room) {
	if r.timer != nil || (len(r.subs) == 0 && t.opt.Board == nil) {
		return
	}
	r.timer = time.AfterFunc(t.opt.Debounce, func() { t.notify(sandboxID, r) })
}

// notify tells the room's subscribers when its viewers differ from what
// they were last told (a leave and rejoin inside the debounce is no change).
func (t *Tracker) notify(sandboxID string, r *room) {
	t.mu.Lock()
	r.timer = nil
	var fns []func()
	if len(r.subs) > 0 {
		if sig := signature(r.viewers()); sig != r.last {
			r.last = sig
			for f := range r.subs {
				fns = append(fns, *f)
			}
		}
	}
	publish := t.opt.Board != nil && r.moved
	if publish {
		r.moved = false
		t.dirty[sandboxID] = struct{}{} // Run skips it when the viewers are as published
	}
	t.gc(sandboxID, r)
	t.mu.Unlock()
	if publish {
		t.kick()
	}
	for _, f := range fns {
		f()
	}
}

// kick wakes Run.
func (t *Tracker) kick() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Subscribe calls fn (on another goroutine, after the debounce) whenever
// the viewers of sandboxID change, until cancel is called. fn must not
// block: it should note the change and wake its stream, which then reads
// Viewers.
func (t *Tracker) Subscribe(sandboxID string, fn func()) (cancel func()) {
	p := &fn
	t.mu.Lock()
	r := t.room(sandboxID)
	r.subs[p] = struct{}{}
	first := len(r.subs) == 1
	t.mu.Unlock()
	if first && t.opt.Board != nil {
		t.kick() // read the other replicas' viewers of it now
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(r.subs, p)
			if len(r.subs) == 0 {
				// Not polled any more: forget the other replicas' viewers.
				r.remote, r.remoteKey, r.cache = nil, "", nil
				if r.timer != nil && t.opt.Board == nil && r.timer.Stop() {
					r.timer = nil
				}
			}
			if t.rooms[sandboxID] == r {
				t.gc(sandboxID, r)
			}
			t.mu.Unlock()
		})
	}
}

// Viewers lists who watches sandboxID, by the time they joined: here,
// and, while the sandbox has subscribers here, through the other
// replicas as last polled (no I/O: every subscribed stream reads it after
// a notice). The list is shared with other callers: read it, do not
// modify it.
func (t *Tracker) Viewers(sandboxID string) []Viewer {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rooms[sandboxID]
	if r == nil {
		return []Viewer{}
	}
	return r.viewers()
}

// ViewersNow is Viewers with the other replicas' viewers read from the
// board now (one query). When the board cannot be read it answers what it
// knows; the first failure is logged, and the first read that works after
// failures (with how many failed).
func (t *Tracker) ViewersNow(ctx context.Context, sandboxID string) []Viewer {
	if t.opt.Board == nil {
		return t.Viewers(sandboxID)
	}
	others, err := t.opt.Board.Others(ctx, t.id, []string{sandboxID}, t.expire())
	if err != nil {
		if ctx.Err() == nil { // not the caller going away
			t.reads.fail(t.opt.Logger, sandboxID, err)
		}
		return t.Viewers(sandboxID)
	}
	t.reads.worked(t.opt.Logger)
	t.mu.Lock()
	var local []Viewer
	if r := t.rooms[sandboxID]; r != nil {
		local = r.localViewers()
	}
	t.mu.Unlock()
	return merge(append([][]Viewer{local}, others[sandboxID]...)...)
}

// viewers returns the room's viewers, built when they changed since.
// Called with t.mu held.
func (r *room) viewers() []Viewer {
	if r.cache == nil {
		if len(r.remote) == 0 {
			r.cache = r.localViewers()
		} else {
			r.cache = merge(r.localViewers(), r.remote)
		}
	}
	return r.cache
}

// localViewers returns the room's viewers through this replica. Called
// with t.mu held.
func (r *room) localViewers() []Viewer {
	if r.local == nil {
		r.local = buildViewers(r)
	}
	return r.local
}

func buildViewers(r *room) []Viewer {
	by := map[string]*Viewer{}
	for j := range r.streams {
		v := by[j.UserID]
		if v == nil {
			v = &Viewer{UserID: j.UserID, Email: j.Email, Since: j.at, Kinds: []string{}}
			by[j.UserID] = v
		}
		v.Streams++
		if j.at.Before(v.Since) {
			v.Since = j.at
		}
		if !slices.Contains(v.Kinds, j.Kind) {
			v.Kinds = append(v.Kinds, j.Kind)
		}
		if j.RunID != "" && !slices.Contains(v.Runs, j.RunID) {
			v.Runs = append(v.Runs, j.RunID)
		}
	}
	return sorted(by)
}

// merge joins lists of viewers (each replica's) into one: a user on
// several is one viewer, since their earliest stream, with the streams
// summed and the kinds and runs joined.
func merge(lists ...[]Viewer) []Viewer {
	by := map[string]*Viewer{}
	for _, l := range lists {
		for _, v := range l {
			m := by[v.UserID]
			if m == nil {
				c := v
				c.Kinds = append([]string{}, v.Kinds...)
				c.Runs = slices.Clone(v.Runs)
				by[v.UserID] = &c
				continue
			}
			m.Streams += v.Streams
			if v.Since.Before(m.Since) {
				m.Since = v.Since
			}
			for _, k := range v.Kinds {
				if !slices.Contains(m.Kinds, k) {
					m.Kinds = append(m.Kinds, k)
				}
			}
			for _, id := range v.Runs {
				if !slices.Contains(m.Runs, id) {
					m.Runs = append(m.Runs, id)
				}
			}
		}
	}
	return sorted(by)
}

// sorted lists the viewers by when they joined, their kinds and runs sorted.
func sorted(by map[string]*Viewer) []Viewer {
	out := make([]Viewer, 0, len(by))
	for _, v := range by {
		slices.Sort(v.Kinds)
		slices.Sort(v.Runs)
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b Viewer) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.UserID, b.UserID)
	})
	return out
}

// signature identifies a list of viewers for "did it change" (who, and
// what they watch; not since when).
func signature(vs []Viewer) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString(v.UserID)
		b.WriteByte('|')
		b.WriteString(strings.Join(v.Kinds, ","))
		b.WriteByte('|')
		b.WriteString(strings.Join(v.Runs, ","))
		b.WriteByte('|')
		b.WriteString(strconv.Itoa(v.Streams))
		b.WriteByte(';')
	}
	return b.String()
}

// expire is how long a row stays counted without being renewed.
func (t *Tracker) expire() time.Duration { return expireBeats * t.opt.Heartbeat }

// Run keeps the board up to date until ctx is done: it publishes this
// replica's viewers of each sandbox after a change (once the debounce has
// passed), renews its rows every heartbeat, and polls the other replicas'
// viewers of the sandboxes with subscribers here, telling them of a
// change. A board that fails only delays this (Run logs and retries);
// presence through this replica goes on. On return this replica's rows are
// deleted. Without a board Run only waits for ctx.
func (t *Tracker) Run(ctx context.Context) error {
	if t.opt.Board == nil {
		<-ctx.Done()
		return nil
	}
	s := &syncer{t: t, published: map[string]string{}}
	poll := time.NewTicker(t.opt.Poll)
	defer poll.Stop()
	beat := time.NewTicker(t.opt.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := t.opt.Board.Clear(cctx, t.id); err != nil {
				t.opt.Logger.Warn("presence: clear this replica's viewers", "err", err)
			}
			return nil
		case <-t.wake:
		case <-poll.C:
		case <-beat.C:
			s.renew(ctx)
		}
		s.publish(ctx)
		s.poll(ctx)
	}
}

// syncer is Run's state.
type syncer struct {
	t *Tracker
	// published is what the board holds of this replica: the viewers
	// (JSON) by sandbox.
	published map[string]string
	// failing names the step that failed last (logged once until it works).
	failing map[string]bool
	// polled is when the other replicas' viewers were last read.
	polled time.Time
}

// failed logs a failure of step once until it works again.
func (s *syncer) failed(step string, err error) {
	if s.failing == nil {
		s.failing = map[string]bool{}
	}
	if !s.failing[step] {
		s.failing[step] = true
		s.t.opt.Logger.Warn("presence: the board failed; retrying", "step", step, "err", err)
	}
}

func (s *syncer) worked(step string) {
	if s.failing[step] {
		delete(s.failing, step)
		s.t.opt.Logger.Info("presence: the board works again", "step", step)
	}
}

// publish writes the viewers of the sandboxes that changed here; what
// fails stays dirty for the next round.
func (s *syncer) publish(ctx context.Context) {
	t := s.t
	t.mu.Lock()
	if len(t.dirty) == 0 {
		t.mu.Unlock()
		return
	}
	type change struct {
		sandboxID, key string
		vs             []Viewer
	}
	var todo []change
	for id := range t.dirty {
		var vs []Viewer
		if r := t.rooms[id]; r != nil {
			vs = r.localViewers()
		}
		key := ""
		if len(vs) > 0 {
			b, _ := json.Marshal(vs)
			key = string(b)
		}
		if key != s.published[id] {
			todo = append(todo, change{id, key, vs})
		}
	}
	clear(t.dirty)
	t.mu.Unlock()
	var failed []string
	for i, c := range todo {
		if err := t.opt.Board.Publish(ctx, t.id, c.sandboxID, c.vs); err != nil {
			if ctx.Err() == nil {
				s.failed("publish", err)
			}
			for _, c := range todo[i:] {
				failed = append(failed, c.sandboxID)
			}
			break
		}
		s.worked("publish")
		if c.key == "" {
			delete(s.published, c.sandboxID)
		} else {
			s.published[c.sandboxID] = c.key
		}
	}
	if len(failed) > 0 {
		t.mu.Lock()
		for _, id := range failed {
			t.dirty[id] = struct{}{}
		}
		t.mu.Unlock()
	}
}

// renew stamps this replica's rows fresh. Fewer rows than published means
// some expired (the board was out of reach for a while, and another
// replica deleted them): they are published again.
func (s *syncer) renew(ctx context.Context) {
	t := s.t
	n, err := t.opt.Board.Renew(ctx, t.id, t.expire())
	if err != nil {
		if ctx.Err() == nil {
			s.failed("renew", err)
		}
		return
	}
	s.worked("renew")
	if n < len(s.published) {
		t.mu.Lock()
		for id := range s.published {
			t.dirty[id] = struct{}{}
		}
		t.mu.Unlock()
		clear(s.published)
	}
}

// poll reads the other replicas' viewers of the sandboxes with
// subscribers here (one query) and tells the subscribers of a change.
func (s *syncer) poll(ctx context.Context) {
	t := s.t
	t.mu.Lock()
	var ids []string
	for id, r := range t.rooms {
		if len(r.subs) > 0 {
			ids = append(ids, id)
		}
	}
	t.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	others, err := t.opt.Board.Others(ctx, t.id, ids, t.expire())
	if err != nil {
		if ctx.Err() == nil {
			s.failed("poll", err)
		}
		if time.Since(s.polled) < t.expire() {
			return // what was read last is still good
		}
		others = nil // too old: only this replica's viewers are known
	} else {
		s.worked("poll")
		s.polled = time.Now()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		r := t.rooms[id]
		if r == nil || len(r.subs) == 0 {
			continue
		}
		var remote []Viewer
		key := ""
		if lists := others[id]; len(lists) > 0 {
			remote = merge(lists...)
			b, _ := json.Marshal(remote)
			key = string(b)
		}
		if key != r.remoteKey {
			r.remote, r.remoteKey, r.cache = remote, key, nil
			t.changed(id, r)
		}
	}
}
