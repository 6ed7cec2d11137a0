package presence_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/presence"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/pgserver"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// openPG opens (and migrates) the database at url, closed at cleanup.
func openPG(t *testing.T, url string) *store.DB {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return db
}

// replica is one server's tracker on its own connection pool, its Run going.
type replica struct {
	db   *store.DB
	tr   *presence.Tracker
	stop func() // ends Run and waits for it
}

func startReplica(t *testing.T, url string, beat time.Duration) *replica {
	t.Helper()
	db := openPG(t, url)
	tr := presence.New(presence.Options{Board: db.PresenceBoard(), Debounce: 10 * time.Millisecond, Heartbeat: beat, Poll: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = tr.Run(ctx) })
	var once sync.Once
	r := &replica{db: db, tr: tr, stop: func() { once.Do(func() { cancel(); wg.Wait() }) }}
	t.Cleanup(r.stop)
	return r
}

// lines renders viewers as "user streams kinds runs".
func lines(vs []presence.Viewer) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.UserID+" "+strconv.Itoa(v.Streams)+" "+strings.Join(v.Kinds, ",")+" "+strings.Join(v.Runs, ","))
	}
	return out
}

// waitViewers polls get until it lists want.
func waitViewers(t *testing.T, what string, get func() []presence.Viewer, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		got := lines(get())
		if cmp.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (-want +got):\n%s", what, cmp.Diff(want, got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBoardAcrossReplicas: two replicas on one PostgreSQL database each
// see the other's viewers, merged per user, both in ViewersNow and in the
// polled Viewers its subscribers read (with a notice); a leave reaches
// the other; a replica killed without cleaning up stops counting once its
// rows expire, and they are deleted.
func TestBoardAcrossReplicas(t *testing.T) {
	url := storetest.PostgresURL(t)
	a := startReplica(t, url, 200*time.Millisecond)
	b := startReplica(t, url, 200*time.Millisecond)
	notices := make(chan struct{}, 100)
	defer b.tr.Subscribe("sb1", func() { notices <- struct{}{} })()

	leaveA1 := a.tr.Join("sb1", presence.Stream{UserID: "u_a", Kind: presence.KindRun, RunID: "run_1"})
	a.tr.Join("sb2", presence.Stream{UserID: "u_x", Kind: presence.KindPTY}) // another sandbox: not in sb1's lists
	defer b.tr.Join("sb1", presence.Stream{UserID: "u_a", Kind: presence.KindPTY})()
	leaveB := b.tr.Join("sb1", presence.Stream{UserID: "u_b", Kind: presence.KindWatch})
	now := func() []presence.Viewer { return b.tr.ViewersNow(t.Context(), "sb1") }
	polled := func() []presence.Viewer { return b.tr.Viewers("sb1") }
	waitViewers(t, "B's viewers now", now, "u_a 2 pty,run run_1", "u_b 1 watch ")
	waitViewers(t, "B's polled viewers", polled, "u_a 2 pty,run run_1", "u_b 1 watch ")
	waitViewers(t, "A's viewers now", func() []presence.Viewer { return a.tr.ViewersNow(t.Context(), "sb1") }, "u_a 2 pty,run run_1", "u_b 1 watch ")
	if len(notices) == 0 {
		t.Error("B's subscriber heard of no change")
	}
	// A replica's own Viewers of a room it does not poll is its own.
	if got := lines(a.tr.Viewers("sb1")); !cmp.Equal(got, []string{"u_a 1 run run_1"}) {
		t.Errorf("A's unpolled viewers %v, want only its own", got)
	}

	leaveA1()
	leaveB()
	waitViewers(t, "B's polled viewers after A's leave", polled, "u_a 1 pty ")
	waitViewers(t, "B's viewers now after A's leave", now, "u_a 1 pty ")

	// A watches again, then dies: no Clear reaches the database.
	a.tr.Join("sb1", presence.Stream{UserID: "u_c", Kind: presence.KindLogs})
	waitViewers(t, "B's polled viewers", polled, "u_a 1 pty ", "u_c 1 logs ")
	a.db.Close()
	a.stop()
	waitViewers(t, "B's viewers now after A died", now, "u_a 1 pty ")
	waitViewers(t, "B's polled viewers after A died", polled, "u_a 1 pty ")
	// B's heartbeat deletes the dead replica's rows.
	waitViewers(t, "every row of sb1 and sb2", func() []presence.Viewer {
		all, err := b.db.PresenceBoard().Others(t.Context(), "nobody", []string{"sb1", "sb2"}, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var vs []presence.Viewer
		for _, l := range append(all["sb1"], all["sb2"]...) {
			vs = append(vs, l...)
		}
		return vs
	}, "u_a 1 pty ")

	// A clean stop takes B's rows off the board.
	b.stop()
	c := startReplica(t, url, 200*time.Millisecond)
	waitViewers(t, "C's viewers after B stopped", func() []presence.Viewer { return c.tr.ViewersNow(t.Context(), "sb1") })
	all, err := c.db.PresenceBoard().Others(t.Context(), "nobody", []string{"sb1"}, 24*time.Hour)
	if err != nil || len(all) != 0 {
		t.Fatalf("rows after a clean stop: %v, %v; want none", all, err)
	}
}

// TestBoardOutage: with the database down, presence through a replica
// goes on (joins, leaves, its own list); once the database is back, what
// changed meanwhile reaches the other replica.
func TestBoardOutage(t *testing.T) {
	pg := pgserver.Start(t)
	a := startReplica(t, pg.URL, 200*time.Millisecond)
	b := startReplica(t, pg.URL, 200*time.Millisecond)
	defer b.tr.Subscribe("sb1", func() {})()
	leave := a.tr.Join("sb1", presence.Stream{UserID: "u_a", Kind: presence.KindRun, RunID: "run_1"})
	polled := func() []presence.Viewer { return b.tr.Viewers("sb1") }
	waitViewers(t, "B's viewers", polled, "u_a 1 run run_1")

	pg.Stop()
	leave()
	defer a.tr.Join("sb1", presence.Stream{UserID: "u_c", Kind: presence.KindPTY})()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if got := lines(a.tr.ViewersNow(ctx, "sb1")); !cmp.Equal(got, []string{"u_c 1 pty "}) {
		t.Errorf("A's viewers with the database down: %v, want its own u_c", got)
	}
	pg.Start()
	waitViewers(t, "B's viewers after the outage", polled, "u_c 1 pty ")
}

// logLine is one captured log record: its level, message and attributes.
type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func (l logLine) String() string {
	s := l.level.String() + " " + l.msg
	for k, v := range l.attrs {
		s += " " + k + "=" + v.String()
	}
	return s
}

// capture is a slog handler that keeps every record.
type capture struct {
	mu    sync.Mutex
	lines []logLine
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *capture) WithGroup(string) slog.Handler            { return c }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	l := logLine{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	r.Attrs(func(a slog.Attr) bool { l.attrs[a.Key] = a.Value; return true })
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, l)
	return nil
}

// at returns the captured records of level.
func (c *capture) at(level slog.Level) []logLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []logLine
	for _, l := range c.lines {
		if l.level == level {
			out = append(out, l)
		}
	}
	return out
}

// TestViewersNowOutageLogsOnce: while the database is down every read of
// GET /sandbox/{id}/presence (ViewersNow) fails to reach the board, and a
// UI polls it. The log gets one warning when the reads start failing (with
// the error) and one info line when they work again (with how many
// failed), not a line per read; the answers meanwhile are this replica's
// viewers.
func TestViewersNowOutageLogsOnce(t *testing.T) {
	pg := pgserver.Start(t)
	db := openPG(t, pg.URL)
	logs := &capture{}
	// No Run: only ViewersNow reads the board (and logs) here.
	tr := presence.New(presence.Options{Board: db.PresenceBoard(), Logger: slog.New(logs)})
	defer tr.Join("sb1", presence.Stream{UserID: "u_a", Kind: presence.KindPTY})()
	now := func() []string { return lines(tr.ViewersNow(t.Context(), "sb1")) }
	want := []string{"u_a 1 pty "}
	if got := now(); !cmp.Equal(got, want) {
		t.Fatalf("viewers %v, want %v", got, want)
	}

	pg.Stop()
	const reads = 50
	for range reads {
		if got := now(); !cmp.Equal(got, want) {
			t.Fatalf("viewers with the database down %v, want this replica's %v", got, want)
		}
	}
	warns := logs.at(slog.LevelWarn)
	if len(warns) != 1 {
		t.Fatalf("%d warnings after %d failed reads, want 1: %v", len(warns), reads, warns)
	}
	if err := warns[0].attrs["err"]; err.String() == "" {
		t.Errorf("the warning %v names no error", warns[0])
	}

	pg.Start()
	// The pool's first tries after the restart may still fail: read until
	// one works (the info line).
	deadline := time.Now().Add(time.Minute)
	for len(logs.at(slog.LevelInfo)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no info line after the database came back")
		}
		now()
	}
	now()
	infos := logs.at(slog.LevelInfo)
	if len(infos) != 1 {
		t.Fatalf("%d info lines after the reads work again, want 1: %v", len(infos), infos)
	}
	if n := infos[0].attrs["failed_reads"]; n.Kind() != slog.KindInt64 || n.Int64() < reads {
		t.Errorf("the info line says %v reads failed, want at least %d", n, reads)
	}
	if warns := logs.at(slog.LevelWarn); len(warns) != 1 {
		t.Errorf("%d warnings in all, want 1: %v", len(warns), warns)
	}
}
