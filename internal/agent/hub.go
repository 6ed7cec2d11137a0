package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// maxTail bounds the in-memory tail of an active run; subscribers further
// behind read older events from the store (they are final once persisted).
const maxTail = 4096

// takeMax bounds the events one Take returns, so a subscriber far behind
// catches up in pages.
const takeMax = 512

// Hub is the durable event log with fan-out. Append persists an event to
// the Store and only then publishes it into the run's in-memory tail;
// subscribers are cursors into that log. A subscriber sees every event
// after its starting seq exactly once and in order, however far it lags: it
// reads the shared tail (no copy per subscriber) and, once the tail has
// moved past it, the store. Publishing never blocks on subscribers and
// costs each one a non-blocking send on a one-slot channel, and a
// subscriber's memory does not grow with its lag.
//
// Runs opened on this Hub (this process) are live here. With a Feed
// (several replicas on PostgreSQL), a subscriber to a run that is not
// follows it: the run's replica sends a notice after each append, and the
// subscriber reads the new events from the store. Without one, runs not
// opened here are served from the Store.
type Hub struct {
	store Store
	now   func() time.Time
	feed  Feed // nil: this process is the only replica

	mu       sync.Mutex
	topics   map[string]*topic // runs live in this process
	remote   map[string]*topic // runs followed through the feed (no tail)
	onDecide func(runID string, payload []byte)

	noticeMu   sync.Mutex
	notices    map[string]Notice // to send, by run
	noticeKick chan struct{}     // capacity 1: "notices has some"

	// Events waiting for the store (see Durability).
	dur Durability
	log *slog.Logger
	roomState
}

type topic struct {
	appendMu sync.Mutex // serialises Append per run: seq order == publish order
	seq      int64      // last assigned seq; guarded by appendMu

	mu        sync.RWMutex
	published int64   // seq of the last published event
	tail      []Event // the newest events, contiguous seqs, at most maxTail; see publish
	closed    bool    // the run ended: nothing is published after published
	subs      []*Subscription
	remote    bool     // followed through the feed: published comes from notices
	writers   *writers // delivery goroutines, once the topic has directMin subscribers

	pmu sync.Mutex // guards bl
	bl  backlog    // published events not in the store yet
}

// NewHub returns a Hub over store. feed (may be nil) connects it to the
// other replicas; RunFeed runs it.
func NewHub(store Store, now func() time.Time, feed Feed) *Hub {
	if now == nil {
		now = time.Now
	}
	h := &Hub{store: store, now: now, feed: feed, topics: map[string]*topic{}, remote: map[string]*topic{},
		notices: map[string]Notice{}, noticeKick: make(chan struct{}, 1)}
	h.dur, h.log = Durability{}.withDefaults(), slog.New(slog.DiscardHandler)
	h.stop = make(chan struct{})
	h.room = sync.NewCond(&h.roomMu)
	return h
}

// Open starts the live topic of a run whose last persisted seq is lastSeq.
// It must be called before the run is visible to subscribers.
func (h *Hub) Open(runID string, lastSeq int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.topics[runID]; !ok {
		h.topics[runID] = &topic{seq: lastSeq, published: lastSeq, bl: backlog{persisted: lastSeq}}
	}
}

// Close ends the run's live topic: its subscribers read what was published
// and then reach the end. Later Subscribes read the store (once the run's
// events waiting for it are in; until then the topic serves them).
func (h *Hub) Close(runID string) {
	h.mu.Lock()
	t, ok := h.topics[runID]
	if ok {
		t.pmu.Lock()
		if t.bl.empty() && !t.bl.draining {
			delete(h.topics, runID)
		}
		t.pmu.Unlock()
	}
	h.mu.Unlock()
	if !ok {
		return
	}
	// Wait for an in-flight Append to finish publishing.
	t.appendMu.Lock()
	defer t.appendMu.Unlock()
	t.mu.Lock()
	t.closed = true
	for _, s := range t.subs {
		s.Wake()
	}
	t.subs = nil
	w := t.writers
	t.writers = nil
	t.mu.Unlock()
	if w != nil {
		w.stop()
	}
	h.drained(runID, t) // the backlog may have emptied meanwhile
}

// Append assigns the next seqs to evs, persists them in order and
// publishes them. The returned events carry Seq, Time and RunID. While the
// store cannot take them, events are published from memory at once and
// persisted behind, in order, with retries (see Durability); Append fails
// only for a run that is not live, or when the backlog is full and ctx
// ends (or the hub stops) before there is room.
func (h *Hub) Append(ctx context.Context, runID string, evs ...Event) ([]Event, error) {
	h.mu.Lock()
	t, ok := h.topics[runID]
	h.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("append to run %s: the run is not live", runID)
	}
	t.appendMu.Lock()
	defer t.appendMu.Unlock()
	out := make([]Event, 0, len(evs))
	var lastStored int64
	for _, ev := range evs {
		ev.RunID = runID
		ev.Seq = t.seq + 1
		if ev.Time.IsZero() {
			ev.Time = h.now().UTC()
		}
		stored, err := h.persistOrQueue(ctx, runID, t, ev)
		if err != nil {
			return out, fmt.Errorf("persist event %d of run %s: %w", ev.Seq, runID, err)
		}
		if stored {
			lastStored = ev.Seq
		}
		t.seq = ev.Seq
		t.publish(ev)
		out = append(out, ev)
	}
	if h.feed != nil && lastStored > 0 {
		h.notify(Notice{RunID: runID, Seq: lastStored})
	}
	return out, nil
}

// publish appends ev to the tail and wakes every subscriber. The tail's
// elements are never written again once appended (a full tail moves its
// newer half to a new array), so Take can hand out sub-slices of it.
func (t *topic) publish(ev Event) {
	t.mu.Lock()
	if len(t.tail) >= maxTail {
		tail := make([]Event, maxTail/2, maxTail)
		copy(tail, t.tail[maxTail/2:])
		t.tail = tail
	}
	t.tail = append(t.tail, ev)
	t.published = ev.Seq
	if t.writers == nil && len(t.subs) >= directMin {
		t.writers = startWriters(t)
	}
	w := t.writers
	t.mu.Unlock()
	if w != nil {
		w.signal()
		return
	}
	// Wake the subscribers under the read lock only: the ones already
	// woken can Take (also a read lock) while the rest are being woken,
	// instead of blocking on the lock and being woken a second time.
	t.wakeAll()
}

// Subscription is one subscriber's cursor into a run's events: Take
// returns the next ones, Ready signals that there may be more.
type Subscription struct {
	hub    *Hub
	runID  string
	t      *topic // nil: the run was not live here; read the store
	cursor int64  // seq of the last event taken
	ready  chan struct{}
	idx    int  // position in t.subs while subscribed; guarded by t.mu
	ended  bool // nothing follows cursor: the store's end (t == nil), or a followed run's done event
	once   sync.Once

	retryWait time.Duration // the next wait before reading an unreachable store again

	// Direct delivery by the topic's writers (see SetDirect).
	deliver func([]Event) bool
	dmu     sync.Mutex // held by whoever takes and writes for this subscription
	parked  bool       // its stream waits on Ready with nothing to take; guarded by dmu
}

// Wake makes Ready fire (if a wake-up is not pending already): the hub
// wakes subscribers so; a caller can too, to interrupt its own wait.
func (s *Subscription) Wake() {
	select {
	case s.ready <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// retryLater wakes the subscription after a backoff (50 ms doubling to
// the hub's RetryMax), to read the store again.
func (s *Subscription) retryLater() {
	s.retryWait = min(max(2*s.retryWait, 50*time.Millisecond), s.hub.dur.RetryMax)
	time.AfterFunc(s.retryWait, s.Wake)
}

// Ready receives a value when Take may have new events (or the end) to
// return. It may also fire when there is nothing new.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the events after those it returned before, in order and at
// most a page of them, without waiting: none when there is nothing new
// yet, io.EOF once the run has ended and everything was returned. The
// events are shared with other subscribers: read them, do not modify them.
func (s *Subscription) Take(ctx context.Context) ([]Event, error) {
	if s.ended {
		return nil, io.EOF
	}
	if s.t == nil {
		evs, err := s.hub.store.RunEvents(ctx, s.runID, s.cursor, takeMax)
		if err != nil {
			return nil, fmt.Errorf("replay run %s: %w", s.runID, err)
		}
		if len(evs) < takeMax {
			s.ended = true
		}
		if len(evs) == 0 {
			return nil, io.EOF
		}
		s.cursor = evs[len(evs)-1].Seq
		return evs, nil
	}
	t := s.t
	t.mu.RLock()
	published, closed, tail := t.published, t.closed, t.tail
	t.mu.RUnlock()
	if s.cursor >= published {
		if closed {
			return nil, io.EOF
		}
		return nil, nil
	}
	first := published + 1
	if len(tail) > 0 {
		first = tail[0].Seq
	}
	if s.cursor+1 < first {
		// The tail moved past this subscriber; the store (or the events
		// waiting for it) has the gap.
		evs, err := s.gap(ctx, t, int(min(first-s.cursor-1, takeMax)))
		if err != nil && ctx.Err() == nil && (t.remote || errs.KindOf(err) == errs.Unavailable) {
			// The store is unreachable (a database outage): the events
			// are in it or wait for it, so this subscriber waits too and
			// tries again shortly (a remote run's next notice or resync
			// wakes it as well). It never skips ahead.
			s.retryLater()
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("replay run %s: %w", s.runID, err)
		}
		if len(evs) == 0 {
			return nil, fmt.Errorf("replay run %s: events %d..%d are missing from the store", s.runID, s.cursor+1, first-1)
		}
		s.retryWait = 0
		s.cursor = evs[len(evs)-1].Seq
		if t.remote && evs[len(evs)-1].Type == TypeDone {
			s.ended = true // a run's done event is its last
		}
		s.Wake() // more to take
		return evs, nil
	}
	i := int(s.cursor + 1 - first)
	j := min(len(tail), i+takeMax)
	evs := tail[i:j:j]
	s.cursor = evs[len(evs)-1].Seq
	if j < len(tail) {
		s.Wake()
	}
	return evs, nil
}

// gap reads up to limit events after the cursor that the tail no longer
// holds: from the store, or, for those not in it yet, from the backlog.
func (s *Subscription) gap(ctx context.Context, t *topic, limit int) ([]Event, error) {
	if !t.remote {
		if evs, inBacklog, err := t.unpersisted(s.cursor, limit); inBacklog || err != nil {
			return evs, err
		}
	}
	return s.hub.store.RunEvents(ctx, s.runID, s.cursor, limit)
}

// Next waits for the next events and returns them (see Take): io.EOF at
// the end of the run, ctx's error when ctx ends first.
func (s *Subscription) Next(ctx context.Context) ([]Event, error) {
	for {
		evs, err := s.Take(ctx)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close unsubscribes. It is safe to call more than once.
func (s *Subscription) Close() {
	s.once.Do(func() {
		t := s.t
		if t == nil {
			return
		}
		if t.remote {
			// The last follower of a remote run takes its topic away.
			s.hub.mu.Lock()
			defer s.hub.mu.Unlock()
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if s.idx < len(t.subs) && t.subs[s.idx] == s {
			last := t.subs[len(t.subs)-1]
			t.subs[s.idx] = last
			last.idx = s.idx
			t.subs[len(t.subs)-1] = nil
			t.subs = t.subs[:len(t.subs)-1]
		}
		if t.remote && len(t.subs) == 0 && s.hub.remote[s.runID] == t {
			delete(s.hub.remote, s.runID)
		}
	})
}

// Subscribe returns a cursor at seq `after`: its Takes return every later
// event of the run, from the store and the live tail (or, for a run live
// in another replica, the store as notices arrive), exactly once and in
// order, until the run's end.
func (h *Hub) Subscribe(ctx context.Context, runID string, after int64) (*Subscription, error) {
	if after < 0 {
		after = 0
	}
	s := &Subscription{hub: h, runID: runID, cursor: after, ready: make(chan struct{}, 1)}
	s.ready <- struct{}{} // take right away
	h.mu.Lock()
	t, ok := h.topics[runID]
	if !ok && h.feed != nil {
		if t, ok = h.remote[runID]; !ok {
			t, ok = &topic{remote: true}, true
			h.remote[runID] = t
		}
	}
	if ok {
		t.mu.Lock()
		s.t = t
		s.idx = len(t.subs)
		t.subs = append(t.subs, s)
		t.mu.Unlock()
	}
	h.mu.Unlock()
	if t != nil && t.remote {
		// Read where the run stands only now that notices reach s: one
		// sent before is covered by this read, one after wakes s.
		r, err := h.resync(ctx, runID, t)
		if err == nil && !r.Status.Active() && after >= r.LastSeq && r.LastSeq > 0 {
			// A client resuming after the run's last event: if that is the
			// done event, nothing can follow.
			var last []Event
			if last, err = h.store.RunEvents(ctx, runID, r.LastSeq-1, 1); err == nil && len(last) == 1 && last[0].Type == TypeDone {
				s.ended = true
			}
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("follow run %s: %w", runID, err)
		}
	}
	return s, nil
}

// Live reports whether the run has a live topic on this Hub.
func (h *Hub) Live(runID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.topics[runID]
	return ok
}
