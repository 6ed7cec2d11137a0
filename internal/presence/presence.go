// Package presence tracks who is watching a sandbox right now: every open
// stream of it (a run's events, a terminal, a process's logs, file
// watching) joins on open and leaves on close. Subscribers (the run
// streams) hear about joins and leaves after a debounce, so a client that
// reconnects, or a page that opens three streams at once, makes one
// notice or none.
//
// Presence lives in the memory of the replica serving the streams: with
// several replicas each knows its own viewers (see docs/collaboration.md).
package presence

import (
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
}

// Tracker holds the viewers of every sandbox this replica serves streams of.
type Tracker struct {
	opt   Options
	mu    sync.Mutex
	rooms map[string]*room
}

// room is one sandbox's viewers and subscribers.
type room struct {
	streams map[*joined]struct{}
	subs    map[*func()]struct{}
	timer   *time.Timer // pending notice; nil when none
	last    string      // signature of the viewers last announced
	release func()      // from Options.Busy
	// cache is the viewers list while no stream joined or left since: a
	// notice makes every subscribed stream read it at once (thousands of
	// followers of one run), so it is built once, not once per stream.
	cache []Viewer
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
	return &Tracker{opt: opt, rooms: map[string]*room{}}
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
	r.cache = nil
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
		r.cache = nil
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

// changed schedules a notice to the room's subscribers, unless one is
// pending already. Called with t.mu held.
func (t *Tracker) changed(sandboxID string, r *room) {
	if r.timer != nil || len(r.subs) == 0 {
		return
	}
	r.timer = time.AfterFunc(t.opt.Debounce, func() { t.notify(sandboxID, r) })
}

// notify tells the room's subscribers when its viewers differ from what
// they were last told (a leave and rejoin inside the debounce is no change).
func (t *Tracker) notify(sandboxID string, r *room) {
	t.mu.Lock()
	r.timer = nil
	sig := signature(r.viewers())
	var fns []func()
	if sig != r.last {
		r.last = sig
		for f := range r.subs {
			fns = append(fns, *f)
		}
	}
	t.gc(sandboxID, r)
	t.mu.Unlock()
	for _, f := range fns {
		f()
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
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(r.subs, p)
			if len(r.subs) == 0 && r.timer != nil && r.timer.Stop() {
				r.timer = nil
			}
			if t.rooms[sandboxID] == r {
				t.gc(sandboxID, r)
			}
			t.mu.Unlock()
		})
	}
}

// Viewers lists who watches sandboxID, by the time they joined. The list
// is shared with other callers: read it, do not modify it.
func (t *Tracker) Viewers(sandboxID string) []Viewer {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rooms[sandboxID]
	if r == nil {
		return []Viewer{}
	}
	return r.viewers()
}

// viewers returns the room's viewers, built when streams changed since.
// Called with t.mu held.
func (r *room) viewers() []Viewer {
	if r.cache == nil {
		r.cache = buildViewers(r)
	}
	return r.cache
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
