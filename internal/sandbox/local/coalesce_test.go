package local

import (
	"strconv"
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

	// Lines a millisecond apart (a CLI's JSON events) are not bulk output
	// either: each goes out alone, not held for the next. Coalescing by
	// gaps alone held each for 2 ms and sent them in twos and threes.
	// Lenient for a loaded machine: a reader woken late finds two lines.
	const n = 200
	var events countingWriter
	script := "import sys,time\nfor i in range(" + strconv.Itoa(n) + "):\n  sys.stdout.write('x'*150+'\\n'); sys.stdout.flush(); time.sleep(0.001)\n"
	st, err = d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"python3", "-c", script}, Stdout: &events})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %+v %v", st, err)
	}
	if events.bytes != n*151 {
		t.Fatalf("got %d bytes, want %d", events.bytes, n*151)
	}
	t.Logf("%d lines 1 ms apart came as %d writes", n, len(events.writes))
	if len(events.writes) < n*3/4 {
		t.Errorf("%d lines 1 ms apart came as %d writes: lines were held back to be coalesced", n, len(events.writes))
	}
}

// What waits for more output: bulk output does, lines do not, even a
// millisecond or two apart, and a line after bulk output stops is not
// held either. (Waiting on any read within a few milliseconds of the last
// added coalesceWait to every line of a CLI's JSON events.)
func TestCoalescePolicy(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var r outRate
	at := t0
	// 200-byte lines every 1 ms for a second: never bulk.
	for i := range 1000 {
		if r.bulk(at) {
			t.Fatalf("line %d (1 ms after the last) would wait for more", i)
		}
		r.delivered(at, 200)
		at = at.Add(time.Millisecond)
	}
	// 4 KiB writes 20 µs apart: bulk within the first 64 KiB.
	var after int
	for after = 0; after < 64 && !r.bulk(at); after++ {
		r.delivered(at, 4096)
		at = at.Add(20 * time.Microsecond)
	}
	if !r.bulk(at) {
		t.Fatalf("after %d 4 KiB writes 20µs apart output is not bulk", after)
	}
	t.Logf("bulk after %d writes of 4 KiB", after)
	// The stream stops; the next line, 25 ms later, goes out at once.
	if at = at.Add(25 * time.Millisecond); r.bulk(at) {
		t.Fatal("a line 25 ms after bulk output stopped would wait for more")
	}
}
