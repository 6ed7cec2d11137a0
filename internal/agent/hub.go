package agent

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSubscriberBuffer is how many undelivered events a subscriber may
// lag behind before it is cut (it then resumes, losing nothing). The
// buffer is allocated up front (about 104 bytes an event) and is a large
// part of an SSE subscriber's memory: 128 costs 13 KiB. The CLI writes a
// few lines per turn, far below it.
const DefaultSubscriberBuffer = 128

// maxTail bounds the in-memory tail of an active run; older events are
// replayed from the store (they are final once persisted).
const maxTail = 4096

// Hub is the durable event log with fan-out. Append persists an event to
// the Store and only then publishes it; Subscribe returns the replay and
// the live feed atomically, so a subscriber sees every event exactly once
// and in order. Each subscriber has a bounded buffer: one that falls
// behind is cut (its channel closes with Cut() true) and resumes with a
// new Subscribe from its last seen Seq (Last-Event-ID). Publishing never
// blocks on subscribers.
//
// Live events exist only for runs opened on this Hub (this process);
// finished runs are served from the Store.
type Hub struct {
	store   Store
	now     func() time.Time
	bufSize int

	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	appendMu sync.Mutex // serialises Append per run: seq order == publish order
	seq      int64      // last assigned seq; guarded by appendMu

	// guarded by Hub.mu
	published int64   // seq of the last published event
	tail      []Event // the newest events, at most maxTail
	subs      map[*Subscription]struct{}
}

// NewHub returns a Hub over store. bufSize <= 0 means DefaultSubscriberBuffer.
func NewHub(store Store, now func() time.Time, bufSize int) *Hub {
	if now == nil {
		now = time.Now
	}
	if bufSize <= 0 {
		bufSize = DefaultSubscriberBuffer
	}
	return &Hub{store: store, now: now, bufSize: bufSize, topics: map[string]*topic{}}
}

// Open starts the live topic of a run whose last persisted seq is lastSeq.
// It must be called before the run is visible to subscribers.
func (h *Hub) Open(runID string, lastSeq int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.topics[runID]; !ok {
		h.topics[runID] = &topic{seq: lastSeq, published: lastSeq, subs: map[*Subscription]struct{}{}}
	}
}

// Close ends the run's live topic: every subscriber's channel is closed
// after the events already delivered to it. Later Subscribes read the store.
func (h *Hub) Close(runID string) {
	h.mu.Lock()
	t, ok := h.topics[runID]
	delete(h.topics, runID)
	h.mu.Unlock()
	if !ok {
		return
	}
	// Wait for an in-flight Append to finish publishing.
	t.appendMu.Lock()
	defer t.appendMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range t.subs {
		close(s.c)
	}
	t.subs = nil
}

// Append assigns the next seqs to evs, persists them in order and
// publishes them. The returned events carry Seq, Time and RunID. An event
// that fails to persist is not published, and Append stops there.
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
	for _, ev := range evs {
		ev.RunID = runID
		ev.Seq = t.seq + 1
		if ev.Time.IsZero() {
			ev.Time = h.now().UTC()
		}
		if err := h.store.AppendRunEvent(ctx, ev); err != nil {
			return out, fmt.Errorf("persist event %d of run %s: %w", ev.Seq, runID, err)
		}
		t.seq = ev.Seq
		h.publish(t, ev)
		out = append(out, ev)
	}
	return out, nil
}

func (h *Hub) publish(t *topic, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(t.tail) >= maxTail {
		n := copy(t.tail, t.tail[maxTail/2:])
		clear(t.tail[n:])
		t.tail = t.tail[:n]
	}
	t.tail = append(t.tail, ev)
	t.published = ev.Seq
	for s := range t.subs {
		select {
		case s.c <- ev:
		default:
			// Too slow: cut it rather than block the run or buffer without bound.
			s.cut.Store(true)
			close(s.c)
			delete(t.subs, s)
		}
	}
}

// Subscription is one subscriber's view of a run: Replay, then every
// event from C until C is closed (the run ended, or the subscriber was
// cut for falling behind — see Cut).
type Subscription struct {
	// Replay holds the events after the requested seq that existed when
	// the subscription started, in order.
	Replay []Event
	// C delivers later events. It is closed by the Hub (run finished or
	// subscriber cut) or by Close; for a finished run it is closed already.
	C <-chan Event

	c     chan Event
	cut   atomic.Bool
	hub   *Hub
	runID string
	once  sync.Once
}

// Cut reports whether C was closed because the subscriber fell behind
// (it should resume from its last seq) rather than because the run ended.
func (s *Subscription) Cut() bool { return s.cut.Load() }

// Close unsubscribes. It is safe to call more than once and after C closed.
func (s *Subscription) Close() {
	s.once.Do(func() {
		if s.hub == nil {
			return
		}
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		t, ok := s.hub.topics[s.runID]
		if !ok {
			return
		}
		if _, ok := t.subs[s]; ok {
			delete(t.subs, s)
			close(s.c)
		}
	})
}

// Subscribe returns the events of runID after seq `after`, then the live
// ones. For a run that is not live here, C is closed and Replay is
// everything in the store after `after`.
func (h *Hub) Subscribe(ctx context.Context, runID string, after int64) (*Subscription, error) {
	if after < 0 {
		after = 0
	}
	s := &Subscription{c: make(chan Event, h.bufSize), hub: h, runID: runID}
	s.C = s.c
	h.mu.Lock()
	t, live := h.topics[runID]
	var firstTail int64
	if live {
		if len(t.tail) > 0 {
			firstTail = t.tail[0].Seq
		} else {
			firstTail = t.published + 1
		}
		for _, ev := range t.tail {
			if ev.Seq > after {
				s.Replay = append(s.Replay, ev)
			}
		}
		t.subs[s] = struct{}{}
	}
	h.mu.Unlock()

	if !live {
		close(s.c)
		evs, err := h.store.RunEvents(ctx, runID, after, 0)
		if err != nil {
			return nil, fmt.Errorf("replay run %s: %w", runID, err)
		}
		s.Replay = evs
		return s, nil
	}
	if after+1 < firstTail {
		// Older events fell out of the tail; they are final in the store.
		old, err := h.store.RunEvents(ctx, runID, after, int(firstTail-after-1))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("replay run %s: %w", runID, err)
		}
		s.Replay = append(old, s.Replay...)
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
