package local

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
)

// countingWriter records each Write: its size and when it came.
type countingWriter struct {
	mu     sync.Mutex
	writes []int
	bytes  int
	text   strings.Builder
	at     []time.Time
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, len(p))
	w.bytes += len(p)
	w.at = append(w.at, time.Now())
	if w.text.Len() < 1<<10 {
		w.text.Write(p[:min(len(p), 1<<10)])
	}
	return len(p), nil
}

// A producer writing 4 KiB at a time reaches the caller in large pieces
// (output coalescing), while output after a quiet spell is not held back.
func TestExecCoalescesSmallWrites(t *testing.T) {
	requireHost(t)
	d := newTestDriver(t, t.TempDir())
	ref := create(t, d, sandbox.Spec{CPU: 2})
	const total = 64 << 20
	var out countingWriter
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"dd", "if=/dev/zero", "bs=4096", "count=16384", "status=none"}, Stdout: &out})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %+v %v", st, err)
	}
	if out.bytes != total {
		t.Fatalf("got %d bytes, want %d", out.bytes, total)
	}
	// One write per 4 KiB without coalescing; well under a tenth of that
	// with it (the pieces grow to the pipe's size).
	t.Logf("%d writes for %d bytes", len(out.writes), total)
	if avg := total / len(out.writes); avg < 64<<10 {
		t.Errorf("%d writes for %d bytes (%d bytes each on average): small writes are not coalesced", len(out.writes), total, avg)
	}

	// Interactive output: each line arrives when it is printed, not
	// coalescing's wait later, and not with the next one.
	var lines countingWriter
	st, err = d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo one; sleep 0.5; echo two; sleep 0.5; echo three"}, Stdout: &lines})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %+v %v", st, err)
	}
	if len(lines.writes) != 3 || lines.text.String() != "one\ntwo\nthree\n" {
		t.Fatalf("lines came as %d writes %v: %q", len(lines.writes), lines.writes, lines.text.String())
	}
	for i := 1; i < 3; i++ {
		if gap := lines.at[i].Sub(lines.at[i-1]); gap < 300*time.Millisecond {
			t.Errorf("line %d came %v after the one before, want about 500ms (held back?)", i+1, gap)
		}
	}
}
