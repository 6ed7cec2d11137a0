package agent_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store/pgserver"
)

// onMessage is a slog handler that calls fn, once, on the first record
// whose message is msg: on the logging goroutine, before the log call
// returns. It drops every record.
type onMessage struct {
	msg  string
	once *sync.Once
	fn   func()
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h onMessage) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h onMessage) WithGroup(string) slog.Handler            { return h }
func (h onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(h.fn)
	}
	return nil
}

// TestUsageSpooledWhileRecovering: a process stops with the database
// down, its usage record spooled. The next process starts with the
// database up and recovers that record; just after it read the spool
// (before it removed what it stored) the database goes down again and a
// call through the gateway records usage, which this process queues and
// spools; then it dies. A third process, with the database back, must
// store that record too: every record once, the run's totals counting
// each once (also the one in a file a process died before removing), no
// spool file left. Both processes used to spool to one file, which
// recovery removed with the new record in it.
func TestUsageSpooledWhileRecovering(t *testing.T) {
	pg := pgserver.Start(t)
	db := openPG(t, pg.URL)
	mgr := newManager(t, db)
	spool := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	newService := func(h slog.Handler) *agent.Service {
		svc, err := agent.NewService(agent.Config{Durability: agent.Durability{SpoolDir: spool, RetryMax: 50 * time.Millisecond, DrainTimeout: 50 * time.Millisecond}},
			agent.Deps{Store: db, CLI: claude.New(claude.Config{}), Sandboxes: mgr, Logger: slog.New(h)})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	// run runs svc until stop is called, which waits for Run to return.
	run := func(svc *agent.Service) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = svc.Run(rctx) })
		return func() { cancel(); wg.Wait() }
	}
	ready := func(svc *agent.Service) {
		t.Helper()
		if _, err := svc.Start(ctx, "alice", "sb_x", "hi", agent.Options{}); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("start on a missing sandbox = %v, want not found (the service ready)", err)
		}
	}
	record := func(svc *agent.Service, id string, in int64) {
		t.Helper()
		if err := svc.RecordUsage(ctx, agent.UsageRecord{ID: id, UserID: "alice", RunID: "run_u", Provider: "anthropic",
			Model: "claude-test", Usage: agent.Usage{InputTokens: in}, Status: 200}); err != nil {
			t.Fatalf("record usage %s with the database down: %v", id, err)
		}
	}
	if err := db.CreateRun(ctx, agent.Run{ID: "run_u", SandboxID: "sb_u", OwnerID: "alice", Prompt: "p", Status: agent.Succeeded,
		CreatedAt: time.Now().UTC(), Replica: "rep_old"}); err != nil {
		t.Fatal(err)
	}
	spooled := func() []string {
		ms, _ := filepath.Glob(filepath.Join(spool, "usage*"))
		return ms
	}

	// A stops with the database down: its record waits in the spool.
	a := newService(slog.DiscardHandler)
	stopA := run(a)
	ready(a)
	pg.Stop()
	record(a, "use_before", 3)
	stopA()
	aFiles := spooled()
	if len(aFiles) != 1 {
		t.Fatalf("usage spool files after a stop with the database down: %v, want one", aFiles)
	}
	aSpool, err := os.ReadFile(aFiles[0])
	if err != nil {
		t.Fatal(err)
	}

	// B recovers it; between reading the spool and removing what it
	// stored, the database goes down and B spools a record of its own.
	pg.Start()
	hit, resume := make(chan struct{}), make(chan struct{})
	b := newService(onMessage{msg: "stored spooled usage records", once: new(sync.Once), fn: func() {
		close(hit)
		<-resume
	}})
	stopB := run(b)
	select {
	case <-hit:
	case <-ctx.Done():
		t.Fatal("B never stored the spooled usage records")
	}
	pg.Stop()
	record(b, "use_during", 5)
	close(resume)
	stopB() // B dies before the database is back (it never gets ready: Run fails)

	// C, with the database back, stores what B spooled. A's file is back
	// too, as if B had died before it removed it: its record, stored by B,
	// must not count twice.
	if err := os.WriteFile(aFiles[0], aSpool, 0o600); err != nil {
		t.Fatal(err)
	}
	pg.Start()
	c := newService(slog.DiscardHandler)
	stopC := run(c)
	defer stopC()
	ready(c)
	rows, err := db.SQL().QueryContext(ctx, `SELECT id FROM usage_records`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	if d := cmp.Diff([]string{"use_before", "use_during"}, ids); d != "" {
		t.Errorf("usage records stored (-want +got):\n%s", d)
	}
	if r, err := db.GetRun(ctx, "run_u"); err != nil || r.Usage.InputTokens != 8 {
		t.Errorf("run totals %+v, %v; want input tokens 8 (3 + 5, each record once)", r.Usage, err)
	}
	if left := spooled(); len(left) != 0 {
		t.Errorf("usage spool files left after every record was stored: %v", left)
	}
}
