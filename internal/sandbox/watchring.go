package sandbox

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// File watching through a ring: every watch stream of one (sandbox, path,
// recursive) shares one driver watch, whose recent events a ring keeps
// with ids, so a client that reconnects with Last-Event-ID gets what it
// missed. The driver watch goes on for watchLinger after its last stream
// ends, so a dropped connection loses nothing if it comes back in time.

const (
	// watchRingSize bounds the events a watch keeps for resuming readers.
	watchRingSize = 1024
	// watchLinger is how long a watch with no stream left keeps watching.
	watchLinger = time.Minute
)

// watchRings holds the Manager's shared watches.
type watchRings struct {
	mu   sync.Mutex
	hubs map[string]*watchHub
	wg   sync.WaitGroup // the hubs' goroutines
}

// watchHub is one driver watch and its recent events.
type watchHub struct {
	key   string
	epoch string // names this watch in event ids: an id of another one is not resumable
	stop  context.CancelFunc

	mu      sync.Mutex
	refs    int
	linger  *time.Timer
	ring    []WatchEvent // oldest first; ring[i] has seq first+i
	first   int64        // seq of ring[0]
	next    int64        // seq of the next event
	isReady bool
	ready   chan struct{} // closed once the watch is in place
	done    bool
	err     error
	changed chan struct{} // closed (and replaced) on every event and at the end
}

func (h *watchHub) id(seq int64) string { return h.epoch + "." + strconv.FormatInt(seq, 10) }

func (h *watchHub) add(ev WatchEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ev.ID = h.id(h.next)
	h.next++
	h.ring = append(h.ring, ev)
	if len(h.ring) > watchRingSize {
		h.ring[0] = WatchEvent{}
		h.ring = h.ring[1:]
		h.first++
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *watchHub) finish(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done, h.err = true, err
	close(h.changed)
	h.changed = make(chan struct{})
}

// since returns the events after seq (exclusive: from seq+1), whether
// some were lost before them, and the state of the watch.
func (h *watchHub) since(seq int64) (evs []WatchEvent, lost bool, next int64, changed <-chan struct{}, done bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	from := seq + 1
	if from < h.first {
		lost, from = true, h.first
	}
	if from < h.next {
		evs = append(evs, h.ring[from-h.first:]...)
	}
	return evs, lost, h.next - 1, h.changed, h.done, h.err
}

// watch returns the shared watch of key, started if there is none, with a
// reference the caller releases.
func (m *Manager) watchHub(key string, start func(ctx context.Context, h *watchHub)) *watchHub {
	r := &m.watches
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hubs == nil {
		r.hubs = map[string]*watchHub{}
	}
	h := r.hubs[key]
	if h != nil {
		h.mu.Lock()
		if !h.done {
			h.refs++
			if h.linger != nil {
				h.linger.Stop()
				h.linger = nil
			}
			h.mu.Unlock()
			return h
		}
		h.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h = &watchHub{key: key, epoch: strconv.FormatUint(rand.Uint64(), 36), stop: cancel, refs: 1, next: 1, first: 1,
		ready: make(chan struct{}), changed: make(chan struct{})}
	r.hubs[key] = h
	r.wg.Go(func() {
		defer cancel()
		start(ctx, h)
		r.mu.Lock()
		if r.hubs[key] == h {
			delete(r.hubs, key)
		}
		r.mu.Unlock()
	})
	return h
}

// release drops a reference; the last one leaves the watch running for
// watchLinger, then stops it.
func (m *Manager) releaseWatch(h *watchHub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs--; h.refs > 0 || h.done {
		return
	}
	h.linger = time.AfterFunc(watchLinger, func() {
		h.mu.Lock()
		idle := h.refs == 0
		h.mu.Unlock()
		if idle {
			h.stop()
		}
	})
}

// stopWatches ends the shared watches of a sandbox that is going away.
func (m *Manager) stopWatches(id string) {
	m.watches.mu.Lock()
	defer m.watches.mu.Unlock()
	for k, h := range m.watches.hubs {
		if strings.HasPrefix(k, id+"\x00") {
			h.stop()
		}
	}
}

// closeWatches ends every shared watch and waits for them (the server
// stops; their streams end with it).
func (m *Manager) closeWatches() {
	m.watches.mu.Lock()
	for _, h := range m.watches.hubs {
		h.stop()
	}
	m.watches.mu.Unlock()
	m.watches.wg.Wait()
}

// parseWatchID reads a watch event id "<epoch>.<seq>".
func parseWatchID(after string) (epoch string, seq int64, err error) {
	e, s, ok := strings.Cut(after, ".")
	n, perr := strconv.ParseInt(s, 10, 64)
	if !ok || e == "" || len(e) > 16 || perr != nil || n < 0 {
		return "", 0, errs.Field("Last-Event-ID", "must be the id of a watch event (<watch>.<n>)")
	}
	return e, n, nil
}

// Watch streams file changes under path in the owner's sandbox (see
// Watcher), through the shared watch of (sandbox, path, recursive): ready
// is called once it is in place, then fn with each event (its ID set).
// after is the id of the last event the client had ("" for none): the
// events since then come first, after an "overflow" event when some of
// them are no longer kept (or after belongs to an earlier watch).
func (m *Manager) Watch(ctx context.Context, ownerID, id, path string, recursive bool, after string, ready func(), fn func(WatchEvent) error) error {
	var (
		epoch string
		seq   int64
		err   error
	)
	if after != "" {
		if epoch, seq, err = parseWatchID(after); err != nil {
			return err
		}
	}
	sb, w, p, err := capability[Watcher](ctx, m, ownerID, id, path, "file watching")
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%s\x00%s\x00%t", sb.ID, p, recursive)
	h := m.watchHub(key, func(ctx context.Context, h *watchHub) {
		err := w.Watch(ctx, sb.Ref, p, recursive, func() {
			h.mu.Lock()
			h.isReady = true
			h.mu.Unlock()
			close(h.ready)
		}, func(ev WatchEvent) error { h.add(ev); return nil })
		h.finish(err)
	})
	defer m.releaseWatch(h)
	h.mu.Lock()
	ended := h.changed // closed by finish before the watch was ready (events come only after)
	h.mu.Unlock()
	select {
	case <-h.ready:
	case <-ended:
	case <-ctx.Done():
		return nil
	}
	h.mu.Lock()
	isReady, herr := h.isReady, h.err
	h.mu.Unlock()
	if !isReady {
		return herr // e.g. no such path, too many watches
	}
	last := int64(0)
	lost := false
	if after != "" {
		if epoch == h.epoch {
			last = seq
		} else {
			lost = true // another watch's id: what happened in between is unknown
		}
	} else {
		// A new reader starts with what happens from now on: "now" is
		// taken before it is told the watch is ready, or a change it
		// makes on hearing so can land in between and be skipped.
		h.mu.Lock()
		last = h.next - 1
		h.mu.Unlock()
	}
	if ready != nil {
		ready()
	}
	for {
		evs, gap, next, changed, done, err := h.since(last)
		if gap || lost {
			lost = false
			if err := fn(WatchEvent{Type: "overflow", ID: h.id(max(last, 0))}); err != nil {
				return err
			}
		}
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
		}
		last = next
		if done {
			if ctx.Err() != nil || !isReady {
				return nil
			}
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}
