package presence

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener lives as long as a pool (board_test.go).
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// clock is a manual clock for Viewer.Since.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { c.t = c.t.Add(time.Second); return c.t }

func TestViewers(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}
	var busy, released int
	tr := New(Options{Clock: c.now, Busy: func(string) func() {
		busy++
		return func() { released++ }
	}})
	a1 := tr.Join("sb1", Stream{UserID: "u_a", Email: "a@x", Kind: KindRun, RunID: "run_2"})
	b1 := tr.Join("sb1", Stream{UserID: "u_b", Email: "b@x", Kind: KindPTY})
	a2 := tr.Join("sb1", Stream{UserID: "u_a", Email: "a@x", Kind: KindLogs})
	other := tr.Join("sb2", Stream{UserID: "u_c", Email: "c@x", Kind: KindWatch})
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	want := []Viewer{
		{UserID: "u_a", Email: "a@x", Since: t0.Add(time.Second), Streams: 2, Kinds: []string{"logs", "run"}, Runs: []string{"run_2"}},
		{UserID: "u_b", Email: "b@x", Since: t0.Add(2 * time.Second), Streams: 1, Kinds: []string{"pty"}},
	}
	if d := cmp.Diff(want, tr.Viewers("sb1")); d != "" {
		t.Fatalf("viewers (-want +got):\n%s", d)
	}
	// Built once while nothing changes (every follower of a run reads it
	// after a notice), again after a change.
	if a, b := tr.Viewers("sb1"), tr.Viewers("sb1"); &a[0] != &b[0] {
		t.Error("the viewers list was built twice without a change")
	}
	before := tr.Viewers("sb1")
	tr.Join("sb1", Stream{UserID: "u_b", Email: "b@x", Kind: KindPTY})()
	if after := tr.Viewers("sb1"); &after[0] == &before[0] {
		t.Error("the viewers list was not rebuilt after a join and a leave")
	}
	if busy != 2 {
		t.Fatalf("got %d busy marks, want 2 (one per watched sandbox)", busy)
	}
	a1()
	a1() // twice is once
	b1()
	if d := cmp.Diff([]Viewer{{UserID: "u_a", Email: "a@x", Since: t0.Add(3 * time.Second), Streams: 1, Kinds: []string{"logs"}}}, tr.Viewers("sb1")); d != "" {
		t.Fatalf("after leaves (-want +got):\n%s", d)
	}
	if released != 0 {
		t.Fatalf("released %d, want 0 while watched", released)
	}
	a2()
	other()
	if got := tr.Viewers("sb1"); len(got) != 0 {
		t.Fatalf("got %v, want no viewers", got)
	}
	if released != 2 {
		t.Fatalf("released %d, want 2", released)
	}
	if len(tr.rooms) != 0 {
		t.Fatalf("got %d rooms left, want 0", len(tr.rooms))
	}
}

// TestNotices: subscribers hear of a change once per debounce, and not at
// all of a leave and rejoin inside it (a client reconnecting).
func TestNotices(t *testing.T) {
	tr := New(Options{Debounce: time.Hour}) // notices are fired by hand below
	got := make(chan string, 10)
	cancel := tr.Subscribe("sb1", func() { got <- "notice" })
	defer cancel()
	fire := func() {
		tr.mu.Lock()
		r := tr.rooms["sb1"]
		pending := r.timer != nil
		if pending {
			r.timer.Stop()
		}
		tr.mu.Unlock()
		if pending {
			tr.notify("sb1", r)
		}
	}
	rel := tr.Join("sb1", Stream{UserID: "u_a", Kind: KindRun})
	tr.Join("sb1", Stream{UserID: "u_b", Kind: KindPTY})()
	fire()
	if n := len(got); n != 1 {
		t.Fatalf("got %d notices for two joins and a leave, want 1", n)
	}
	<-got
	rel()
	rel = tr.Join("sb1", Stream{UserID: "u_a", Kind: KindRun})
	fire()
	if n := len(got); n != 0 {
		t.Fatalf("got %d notices for a rejoin, want 0", n)
	}
	rel()
	fire()
	if n := len(got); n != 1 {
		t.Fatalf("got %d notices for a leave, want 1", n)
	}
	cancel()
	if len(tr.rooms) != 0 {
		t.Fatalf("got %d rooms left, want 0", len(tr.rooms))
	}
}

// TestDebounceFires: with a real (short) debounce the notice comes.
func TestDebounceFires(t *testing.T) {
	tr := New(Options{Debounce: time.Millisecond})
	got := make(chan struct{}, 1)
	cancel := tr.Subscribe("sb1", func() { got <- struct{}{} })
	defer cancel()
	defer tr.Join("sb1", Stream{UserID: "u_a", Kind: KindWatch})()
	<-got
}

// BenchmarkNotice: what one notice costs a room of 5,000 followers of a
// run (every stream reads the viewers list), against one read.
func BenchmarkNotice(b *testing.B) {
	tr := New(Options{Debounce: time.Hour})
	for i := range 5000 {
		defer tr.Join("sb1", Stream{UserID: "u" + strconv.Itoa(i%10), Kind: KindRun, RunID: "run_1"})()
	}
	for b.Loop() {
		tr.Join("sb1", Stream{UserID: "u0", Kind: KindRun, RunID: "run_1"})()
		for range 5000 {
			_ = tr.Viewers("sb1")
		}
	}
}
