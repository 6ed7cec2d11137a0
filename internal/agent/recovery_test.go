package agent_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
)

// spoolEvents leaves n text events (seqs 1..n) of runID in the spool, as
// a process does that stops while the store cannot take them: its hub's
// store here is closed.
func spoolEvents(t *testing.T, spool, runID string, n int) {
	t.Helper()
	ctx := context.Background()
	dead, err := store.Open(ctx, filepath.Join(t.TempDir(), "dead.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	h := agent.NewHub(dead, nil, nil)
	h.SetDurability(agent.Durability{SpoolDir: spool, MemoryBytes: 1, DrainTimeout: time.Nanosecond}, nil)
	h.Open(runID, 0)
	for i := 1; i <= n; i++ {
		if _, err := h.Append(ctx, runID, textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	h.Stop()
	if ms, _ := filepath.Glob(filepath.Join(spool, runID+"*")); len(ms) != 1 {
		t.Fatalf("spool files of %s: %v, want one", runID, ms)
	}
}

// leftActive stores a run that a previous process (rep_old) was running
// when it stopped.
func leftActive(t *testing.T, db *store.DB, runID string) {
	t.Helper()
	if err := db.CreateRun(context.Background(), agent.Run{ID: runID, SandboxID: "sb_" + runID, OwnerID: "alice", Prompt: "p",
		Status: agent.Running, CreatedAt: time.Now().UTC(), Replica: "rep_old"}); err != nil {
		t.Fatal(err)
	}
}

type seqType struct {
	Seq  int64
	Type string
}

// TestCancelWhileRecovering: a process stopped with the database down,
// two active runs' events in the spool. The next one stores those events
// before it marks the runs interrupted; a cancel of one of them that comes
// in meanwhile must wait for that, and then answer that the run has
// finished: each run's log is its events in order and one done event,
// last. Cancel used to end the run at once, its done event taking the seq
// of the run's first spooled event, which recovery then skipped as
// stored: 1 done, 2 text.
func TestCancelWhileRecovering(t *testing.T) {
	db := openStore(t)
	mgr := newManager(t, db)
	spool := t.TempDir()
	for _, id := range []string{"run_a", "run_b"} {
		leftActive(t, db, id)
		spoolEvents(t, spool, id, 2)
	}
	// The bubble makes "Cancel has returned, or it waits" something to
	// wait for (synctest.Wait) rather than a guess.
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		// Recovery stores the spool files in name order: it is paused
		// after run_a's, before run_b's.
		hit, resume := make(chan struct{}), make(chan struct{})
		svc, err := agent.NewService(agent.Config{Durability: agent.Durability{SpoolDir: spool}},
			agent.Deps{Store: db, CLI: claude.New(claude.Config{}), Sandboxes: mgr, Logger: slog.New(onMessage{
				msg: "stored spooled run events", once: new(sync.Once), fn: func() {
					close(hit)
					<-resume
				}})})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = svc.Run(rctx) })
		defer func() { stop(); wg.Wait() }()
		<-hit

		type answer struct {
			r   agent.Run
			err error
		}
		cancelled := make(chan answer, 1)
		go func() {
			r, err := svc.Cancel(ctx, "alice", "run_b")
			cancelled <- answer{r, err}
		}()
		synctest.Wait() // Cancel has done what it does before recovery ends
		close(resume)
		got := <-cancelled
		if pe, ok := errs.Public(got.err); !ok || pe.Kind != errs.Conflict {
			t.Errorf("cancel during recovery = run %s, %v; want conflict: the run was interrupted", got.r.Status, got.err)
		}
		// The service is ready: a start reaches the sandbox layer.
		if _, err := svc.Start(ctx, "alice", "sb_missing", "hi", agent.Options{}); errs.KindOf(err) != errs.NotFound {
			t.Fatalf("start on a missing sandbox = %v, want not found", err)
		}

		for _, id := range []string{"run_a", "run_b"} {
			evs, err := db.RunEvents(ctx, id, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			var log []seqType
			for _, ev := range evs {
				log = append(log, seqType{ev.Seq, ev.Type})
			}
			want := []seqType{{1, agent.TypeText}, {2, agent.TypeText}, {3, agent.TypeDone}}
			if d := cmp.Diff(want, log); d != "" {
				t.Errorf("%s's event log (-want +got):\n%s", id, d)
				continue
			}
			if d := decode[agent.DoneData](t, evs[2]); d.Status != agent.Interrupted {
				t.Errorf("%s's done event: %+v, want interrupted", id, d)
			}
			if r, err := db.GetRun(ctx, id); err != nil || r.Status != agent.Interrupted {
				t.Errorf("%s = %s, %v; want interrupted", id, r.Status, err)
			}
		}
	})
}

// TestCancelWhenRecoveryFailed: a service whose Run returned before it
// recovered what the previous process left (here its context ended at
// once) answers a cancel with unavailable (503) and leaves the previous
// process's run to the next start. It used to end that run itself.
func TestCancelWhenRecoveryFailed(t *testing.T) {
	db := openStore(t)
	mgr := newManager(t, db)
	spool := t.TempDir()
	leftActive(t, db, "run_c")
	spoolEvents(t, spool, "run_c", 1)
	svc, err := agent.NewService(agent.Config{Durability: agent.Durability{SpoolDir: spool}},
		agent.Deps{Store: db, CLI: claude.New(claude.Config{}), Sandboxes: mgr})
	if err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := svc.Run(ended); err == nil {
		t.Fatal("Run with an ended context returned nil, want its error")
	}
	ctx := context.Background()
	if r, err := svc.Cancel(ctx, "alice", "run_c"); errs.KindOf(err) != errs.Unavailable {
		t.Errorf("cancel after Run failed = run %s, %v; want unavailable", r.Status, err)
	}
	if r, err := db.GetRun(ctx, "run_c"); err != nil || r.Status != agent.Running || r.LastSeq != 0 {
		t.Errorf("run_c = %s with last seq %d, %v; want running with no events stored (left to the next start)", r.Status, r.LastSeq, err)
	}
}
