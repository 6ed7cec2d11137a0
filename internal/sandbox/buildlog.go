package sandbox

import "sync"

// buildLogCap bounds the bytes a BuildLog keeps; older output is dropped.
const buildLogCap = 256 << 10

// BuildLog collects a sandbox's build and start progress while it is
// creating, for the logs endpoint. It keeps the last buildLogCap bytes;
// offsets are absolute so a follower can resume where it stopped.
type BuildLog struct {
	mu   sync.Mutex
	buf  []byte
	base int64 // absolute offset of buf[0]
	done bool
	wake chan struct{} // closed and replaced on every Write and on Close
}

func newBuildLog() *BuildLog { return &BuildLog{wake: make(chan struct{})} }

// Write appends progress output. It never fails.
func (l *BuildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return len(p), nil
	}
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - buildLogCap; over > 0 {
		l.buf = append(l.buf[:0:0], l.buf[over:]...)
		l.base += int64(over)
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return len(p), nil
}

// close marks the log finished and wakes followers. Idempotent.
func (l *BuildLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.done = true
		close(l.wake)
	}
}

// Read returns the output from absolute offset from (or the oldest kept
// byte, if from was dropped), the offset to read from next, whether the log
// is finished, and a channel closed when more output or the end arrives.
func (l *BuildLog) Read(from int64) (data []byte, next int64, done bool, wait <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if from < l.base {
		from = l.base
	}
	end := l.base + int64(len(l.buf))
	if from > end {
		from = end
	}
	data = append([]byte(nil), l.buf[from-l.base:]...)
	return data, end, l.done, l.wake
}

// closedLog is returned for sandboxes whose log is no longer in memory.
func closedLog() *BuildLog {
	l := newBuildLog()
	l.close()
	return l
}
