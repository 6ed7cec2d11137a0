package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
)

// TestSSEBatcher: events from two writers arrive whole and in each
// writer's order, however they were batched; the queue limit holds the
// writers back instead of growing; nothing is accepted after close.
func TestSSEBatcher(t *testing.T) {
	rec := httptest.NewRecorder()
	st, err := newSSE(rec, httptest.NewRequest("POST", "/sandbox/x/exec", nil))
	if err != nil {
		t.Fatal(err)
	}
	b := newSSEBatcher(st, 1024, appendChunkEvent)
	done := make(chan error, 2)
	for _, name := range []string{"stdout", "stderr"} {
		go func() {
			for i := range 500 {
				if err := b.event(name, fmt.Appendf(nil, "%s %d\n", name, i)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := b.close(); err != nil {
		t.Fatal(err)
	}
	if err := b.event("stdout", []byte("late")); !errors.Is(err, errBatchClosed) {
		t.Fatalf("event after close = %v, want errBatchClosed", err)
	}
	evs := readSSE(t, bytes.NewReader(rec.Body.Bytes()))
	for _, name := range []string{"stdout", "stderr"} {
		out, b64 := outputOf(t, evs, name)
		var want bytes.Buffer
		for i := range 500 {
			fmt.Fprintf(&want, "%s %d\n", name, i)
		}
		if b64 || out == nil || !bytes.Equal(out, want.Bytes()) {
			t.Fatalf("%s: got %q (base64 %v)", name, out, b64)
		}
	}
}
