package httpapi

import (
	"errors"
	"sync"
)

// errBatchClosed is returned for output that arrives after the exec ended.
var errBatchClosed = errors.New("exec output after the stream ended")

// execBatchMax bounds the output waiting for the socket per exec stream;
// past it the pipe reader waits (and with it, the command).
const execBatchMax = 512 << 10

// sseBatcher writes an exec's output events through one goroutine: output
// that arrives while a write is in flight goes out together in the next
// write, so a fast producer costs one write and flush per burst instead of
// one per pipe read, and a quiet one still gets each chunk out at once
// (nothing waits for a timer). Events keep their order.
type sseBatcher struct {
	st     *sseStream
	max    int
	encode func(dst []byte, name string, p []byte) []byte
	kick   chan struct{} // capacity 1: "pending has data"
	done   chan struct{} // closed when the writer goroutine returns
	once   sync.Once

	mu      sync.Mutex
	cond    *sync.Cond // pending shrank, or err was set
	pending []byte
	spare   []byte
	err     error
	closed  bool
}

// newSSEBatcher starts the writer goroutine; close stops it. encode
// appends one output chunk (appendChunkEvent for SSE).
func newSSEBatcher(st *sseStream, max int, encode func(dst []byte, name string, p []byte) []byte) *sseBatcher {
	b := &sseBatcher{st: st, max: max, encode: encode, kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.run()
	return b
}

// event queues an output chunk event. It waits while max bytes are queued
// and returns the first write error, after which nothing more is sent;
// after close it returns errBatchClosed.
func (b *sseBatcher) event(name string, p []byte) error {
	b.mu.Lock()
	for b.err == nil && len(b.pending) >= b.max {
		b.cond.Wait()
	}
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if b.closed {
		return errBatchClosed
	}
	b.pending = b.encode(b.pending, name, p)
	select {
	case b.kick <- struct{}{}:
	default: // a kick is queued already
	}
	return nil
}

func (b *sseBatcher) run() {
	defer close(b.done)
	for range b.kick {
		for {
			b.mu.Lock()
			buf := b.pending
			if len(buf) == 0 || b.err != nil {
				b.pending = b.pending[:0]
				b.mu.Unlock()
				break
			}
			b.pending = b.spare[:0]
			b.mu.Unlock()
			err := b.st.write(buf)
			b.mu.Lock()
			b.spare = buf[:0]
			if err != nil {
				b.err = err
			}
			b.cond.Broadcast()
			b.mu.Unlock()
		}
	}
}

// close writes what is queued, stops the goroutine and returns the first
// write error. It is safe to call more than once.
func (b *sseBatcher) close() error {
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.kick)
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
