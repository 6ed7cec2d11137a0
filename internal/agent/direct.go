package agent

import (
	"runtime"
	"sync"
)

// directMin is the number of subscribers from which a live run's events
// are delivered by the topic's writer goroutines (see SetDirect) rather
// than by waking every subscriber's own goroutine. Below it, waking is as
// cheap and keeps the appender's path shortest.
const directMin = 256

// SetDirect lets the hub's writer goroutines deliver this subscription's
// live events themselves while its stream is idle, instead of waking the
// stream's goroutine for each event: with thousands of subscribers the
// wake-ups are a large part of a fan-out's cost. deliver must take every
// event it is given: write what the connection accepts without blocking
// and keep the rest; it returns false to have the stream woken (it kept
// bytes, or the stream must end). It runs with the subscription locked.
//
// A stream that sets it must hold Lock while it takes and writes, and call
// Park (still holding it) before it waits on Ready.
func (s *Subscription) SetDirect(deliver func(evs []Event) bool) {
	s.dmu.Lock()
	s.deliver = deliver
	s.dmu.Unlock()
}

// Lock marks the stream active and keeps the hub's writers away from it
// until Unlock.
func (s *Subscription) Lock() {
	s.dmu.Lock()
	s.parked = false
}

// Unlock lets the hub's writers at the subscription again.
func (s *Subscription) Unlock() { s.dmu.Unlock() }

// Park marks the stream idle (it is about to wait on Ready with nothing to
// take), so the hub's writers may deliver to it. Call it holding Lock.
func (s *Subscription) Park() { s.parked = true }

// deliverDirect gives s its new events from the tail if its stream is idle
// and caught up with the tail; otherwise, or if deliver asks for it, the
// stream is woken.
func (s *Subscription) deliverDirect() {
	if !s.dmu.TryLock() {
		s.Wake()
		return
	}
	wake := s.deliver == nil || !s.parked
	for !wake {
		evs, ok := s.takeTail()
		if !ok {
			wake = true
		} else if len(evs) == 0 {
			break
		} else if !s.deliver(evs) {
			wake = true
		}
	}
	if wake {
		s.parked = false
	}
	s.dmu.Unlock()
	if wake {
		s.Wake()
	}
}

// takeTail is Take restricted to the live tail: ok is false when the
// subscription must read the store or reach its end (its stream does that).
func (s *Subscription) takeTail() ([]Event, bool) {
	t := s.t
	t.mu.RLock()
	published, closed, tail := t.published, t.closed, t.tail
	t.mu.RUnlock()
	if s.cursor >= published {
		return nil, !closed
	}
	if len(tail) == 0 || s.cursor+1 < tail[0].Seq {
		return nil, false
	}
	i := int(s.cursor + 1 - tail[0].Seq)
	j := min(len(tail), i+takeMax)
	evs := tail[i:j:j]
	s.cursor = evs[len(evs)-1].Seq
	return evs, true
}

// writers are a topic's delivery goroutines, one per CPU, each walking its
// share of the subscribers after every publish (see SetDirect).
type writers struct {
	kick []chan struct{} // capacity 1 each
	wg   sync.WaitGroup
}

func startWriters(t *topic) *writers {
	n := runtime.GOMAXPROCS(0)
	w := &writers{kick: make([]chan struct{}, n)}
	for i := range n {
		k := make(chan struct{}, 1)
		w.kick[i] = k
		w.wg.Go(func() {
			var mine []*Subscription
			for range k {
				// Its share, copied under the lock: subscriptions come and
				// go (and move in t.subs) meanwhile.
				mine = mine[:0]
				t.mu.RLock()
				for j := i; j < len(t.subs); j += n {
					mine = append(mine, t.subs[j])
				}
				t.mu.RUnlock()
				for _, s := range mine {
					s.deliverDirect()
				}
				clear(mine)
			}
		})
	}
	return w
}

// signal has every writer walk the subscribers (once more, if it is busy).
func (w *writers) signal() {
	for _, k := range w.kick {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

// stop ends the writers after their current walk.
func (w *writers) stop() {
	for _, k := range w.kick {
		close(k)
	}
	w.wg.Wait()
}
