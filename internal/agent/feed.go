package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Feed carries notices about run events between the replicas that share
// one store (PostgreSQL LISTEN/NOTIFY): "run R has events up to seq N". A
// notice only wakes the followers of R in the other replicas; they read
// the events themselves from the store, so a lost notice delays them (until
// the next notice or resync) but loses nothing.
type Feed interface {
	// Notify sends n to every replica listening (this one included).
	Notify(ctx context.Context, n Notice) error
	// Listen calls fn for each notice until ctx ends or the connection
	// fails, and returns why. It calls connected once it is listening:
	// from then on no notice is missed until Listen returns.
	Listen(ctx context.Context, fn func(Notice), connected func()) error
}

// Notice says that run RunID has events up to Seq in the store, or, with
// Cancel, asks the replica running it to cancel it.
type Notice struct {
	RunID  string
	Seq    int64
	Cancel bool
	// Decide, when set, carries an answer to one of the run's permission
	// requests for the replica running it (a JSON remoteDecision).
	Decide []byte
}

// errNoFeed is SendCancel's error on a hub without a feed.
var errNoFeed = errors.New("no feed to the other replicas")

// SendDecide passes an answer to a permission request of runID to the
// replica that runs it (through the feed).
func (h *Hub) SendDecide(ctx context.Context, runID string, payload []byte) error {
	if h.feed == nil {
		return errNoFeed
	}
	return h.feed.Notify(ctx, Notice{RunID: runID, Decide: payload})
}

// OnDecide sets what the hub calls with the answers other replicas pass
// through the feed (Service.Decide on a run this replica runs).
func (h *Hub) OnDecide(fn func(runID string, payload []byte)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onDecide = fn
}

// SendCancel asks the replica that runs runID (through the feed) to cancel
// it; the replicas that do not run it ignore the notice.
func (h *Hub) SendCancel(ctx context.Context, runID string) error {
	if h.feed == nil {
		return errNoFeed
	}
	return h.feed.Notify(ctx, Notice{RunID: runID, Cancel: true})
}

const (
	// feedResync is how often a hub with a feed re-reads the last seq of
	// the runs it follows (a safety net for lost notices).
	feedResync = 5 * time.Second
	// feedRetryMax bounds the wait between attempts to listen again.
	feedRetryMax = 10 * time.Second
	// followDoneGrace: a followed run that ended this long ago with no done
	// event in its log (one from before done events, or whose done event
	// failed to persist) ends its followers at its last event.
	followDoneGrace = 2 * time.Minute
)

// RunFeed sends this hub's notices to the other replicas, wakes this hub's
// followers of their runs and passes cancel notices to cancel, until ctx
// ends. Without a feed it returns at once.
func (h *Hub) RunFeed(ctx context.Context, log *slog.Logger, cancel func(runID string)) {
	if h.feed == nil {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	wg.Go(func() { h.sendNotices(ctx, log) })
	wg.Go(func() {
		wait := 100 * time.Millisecond
		for {
			start := time.Now()
			err := h.feed.Listen(ctx, func(n Notice) {
				if n.Cancel {
					if cancel != nil {
						cancel(n.RunID)
					}
					return
				}
				if n.Decide != nil {
					h.mu.Lock()
					fn := h.onDecide
					h.mu.Unlock()
					if fn != nil {
						fn(n.RunID, n.Decide)
					}
					return
				}
				h.onNotice(n)
			}, func() { h.resyncAll(ctx) })
			if ctx.Err() != nil {
				return
			}
			log.Warn("run event feed: listen again", "err", err, "after", wait)
			if time.Since(start) > feedRetryMax {
				wait = 100 * time.Millisecond // it had been up a while
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, feedRetryMax)
		}
	})
	wg.Go(func() {
		t := time.NewTicker(feedResync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				h.resyncAll(ctx)
			}
		}
	})
	wg.Wait()
}

// notify queues a notice for the other replicas; notices of one run not
// sent yet collapse into the latest.
func (h *Hub) notify(n Notice) {
	h.noticeMu.Lock()
	if p, ok := h.notices[n.RunID]; !ok || n.Seq > p.Seq {
		h.notices[n.RunID] = n
	}
	h.noticeMu.Unlock()
	select {
	case h.noticeKick <- struct{}{}:
	default: // a kick is pending already
	}
}

func (h *Hub) sendNotices(ctx context.Context, log *slog.Logger) {
	for {
		sendCtx, stop := ctx, false
		select {
		case <-ctx.Done():
			// Send what is queued (the done events of runs that shutdown
			// ended), then stop.
			var cancel context.CancelFunc
			sendCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			stop = true
		case <-h.noticeKick:
		}
		h.noticeMu.Lock()
		batch := h.notices
		h.notices = make(map[string]Notice, len(batch))
		h.noticeMu.Unlock()
		for _, n := range batch {
			if err := h.feed.Notify(sendCtx, n); err != nil {
				log.Warn("run event feed: notify", "run_id", n.RunID, "err", err)
			}
		}
		if stop {
			return
		}
	}
}

// onNotice wakes this hub's followers of the notice's run.
func (h *Hub) onNotice(n Notice) {
	h.mu.Lock()
	t := h.remote[n.RunID]
	h.mu.Unlock()
	if t != nil {
		t.advance(n.Seq)
	}
}

// resyncAll re-reads every followed run (see resync).
func (h *Hub) resyncAll(ctx context.Context) {
	h.mu.Lock()
	followed := make(map[string]*topic, len(h.remote))
	for id, t := range h.remote {
		followed[id] = t
	}
	h.mu.Unlock()
	for id, t := range followed {
		_, _ = h.resync(ctx, id, t)
	}
}

// resync advances a followed run to the last seq in the store, ends it if
// it finished long ago without a done event, and returns the run.
func (h *Hub) resync(ctx context.Context, runID string, t *topic) (Run, error) {
	r, err := h.store.GetRun(ctx, runID)
	if err != nil {
		return r, err
	}
	t.advance(r.LastSeq)
	t.wakeAll() // a follower whose read failed (the store was down) tries again
	if !r.Status.Active() && !r.FinishedAt.IsZero() && h.now().Sub(r.FinishedAt) > followDoneGrace {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		t.wakeAll()
	}
	return r, nil
}

// advance records that a followed run has events up to seq and wakes its
// subscribers.
func (t *topic) advance(seq int64) {
	t.mu.Lock()
	moved := seq > t.published
	if moved {
		t.published = seq
	}
	t.mu.Unlock()
	if moved {
		t.wakeAll()
	}
}

// wakeAll wakes every subscriber, under the read lock only (see publish).
func (t *topic) wakeAll() {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, s := range t.subs {
		s.Wake()
	}
}
