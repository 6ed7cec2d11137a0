// Package outring keeps the recent output of a running process: a bounded
// ring of chunks addressed by their offset in the process's whole output,
// read by followers that resume from any offset and learn how much the
// ring overwrote before they read it. The local driver's in-sandbox agent
// and the Modal driver keep their managed processes' logs in it; it
// imports nothing but the standard library, so the agent stays small.
package outring

import "sync"

// ChunkOverhead is what one chunk costs beyond its bytes, counted against
// the ring's size so that a process writing a byte at a time cannot make
// the ring hold a million chunks.
const ChunkOverhead = 64

// Chunk is one read of a process's output; Off is the offset of its first
// byte in the process's whole output.
type Chunk struct {
	Off    int64
	Stream string // "stdout" | "stderr"
	Data   []byte
}

// Ring is the kept output of one process, and whether it exited.
type Ring struct {
	max int

	mu      sync.Mutex
	chunks  []Chunk // oldest first
	size    int     // bytes held plus ChunkOverhead each: at most max (but for the newest chunk)
	next    int64   // offset of the next byte written
	exited  bool
	code    int
	changed chan struct{} // closed (and replaced) on every append and at exit
}

// New returns an empty ring keeping about max bytes.
func New(max int) *Ring {
	return &Ring{max: max, changed: make(chan struct{})}
}

// Append adds b, read from stream, overwriting the oldest chunks past the
// ring's size. The ring keeps b: the caller must not modify it afterwards.
func (r *Ring) Append(stream string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chunks = append(r.chunks, Chunk{Off: r.next, Stream: stream, Data: b})
	r.size += len(b) + ChunkOverhead
	r.next += int64(len(b))
	for r.size > r.max && len(r.chunks) > 1 {
		r.size -= len(r.chunks[0].Data) + ChunkOverhead
		r.chunks[0] = Chunk{}
		r.chunks = r.chunks[1:]
	}
	r.notify()
}

// Exit records the process's exit code and wakes the followers.
func (r *Ring) Exit(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exited, r.code = true, code
	r.notify()
}

func (r *Ring) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Exited reports whether the process exited, and its code if so.
func (r *Ring) Exited() (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exited, r.code
}

// Clamp returns off within [0, the offset of the next byte].
func (r *Ring) Clamp(off int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return min(max(off, 0), r.next)
}

// Since returns the chunks from offset off on (copies of the slice
// headers; chunk data are never modified), the bytes missed before them
// (overwritten before they were read), whether the process has exited
// (with its code) as of this view, and a channel closed at the next change.
func (r *Ring) Since(off int64) (out []Chunk, gap int64, exited bool, code int, changed <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.chunks {
		end := c.Off + int64(len(c.Data))
		if end <= off {
			continue
		}
		if c.Off > off {
			gap += c.Off - off
			off = c.Off
		}
		c.Data = c.Data[off-c.Off:]
		c.Off = off
		out = append(out, c)
		off = end
	}
	if len(out) == 0 && r.next > off {
		gap = r.next - off // everything after off was overwritten
	}
	return out, gap, r.exited, r.code, r.changed
}
