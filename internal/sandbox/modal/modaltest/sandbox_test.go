package modaltest

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPumpAfterDeadline: an exec's output pump the scheduler kept waiting
// until after the read deadline (set once the main process exited) still
// copies what the pipe holds. Under load TestExercise's ConcurrentExecs
// lost an exec's whole output this way.
func TestPumpAfterDeadline(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := strings.Repeat("6\n", 2000)
	if _, err := w.WriteString(want); err != nil {
		t.Fatal(err)
	}
	// A background child still holds the write end: only the deadline ends the pump.
	defer w.Close()
	if err := r.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pump(&out, r)
	if out.String() != want {
		t.Errorf("pumped %d bytes of %d", out.Len(), len(want))
	}
}
