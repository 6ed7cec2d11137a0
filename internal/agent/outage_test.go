package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/pgserver"
)

func openPG(t testing.TB, url string) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestRunOutlivesDatabaseOutage stops PostgreSQL while a real Claude CLI
// run is in progress (right after its Bash tool starts) and starts it
// again only after the run's later events — the tool's result, the
// model's answer, the CLI's result — reached a live follower from memory.
// The run must succeed with every event in the store, in order, once, and
// the sandbox must take a new run right after. "spool" holds the waiting
// events in the spool file rather than in memory (a memory bound of one
// byte).
func TestRunOutlivesDatabaseOutage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		memory  int64
		replica bool // the follower is on another replica (a hub on its own connection, through the feed)
	}{{"memory", 0, false}, {"spool", 1, false}, {"other replica", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			pg := pgserver.Start(t)
			spool := t.TempDir()
			e := newEnv(t, envOpts{pgURL: pg.URL, feed: tc.replica, durability: agent.Durability{SpoolDir: spool, MemoryBytes: tc.memory, RetryMax: 200 * time.Millisecond}},
				modeltest.Bash("sleep 2; echo slept"), modeltest.Text("Finished after the outage."))
			sb := e.sandbox("alice")
			r := e.start("alice", sb.ID, "sleep a little", agent.Options{NewSession: true})

			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if tc.replica {
				// The other replica: its own connection and hub, following
				// the run through the store and the feed.
				db2 := openPG(t, pg.URL)
				hub2 := agent.NewHub(db2, nil, db2.RunFeed())
				feedCtx, stopFeed := context.WithCancel(ctx)
				var wg sync.WaitGroup
				wg.Go(func() { hub2.RunFeed(feedCtx, nil, nil) })
				t.Cleanup(func() { stopFeed(); wg.Wait() })
				if sub, err = hub2.Subscribe(ctx, r.ID, 0); err != nil {
					t.Fatal(err)
				}
				defer sub.Close()
			}
			var live []agent.Event
			until := func(typ string) {
				t.Helper()
				for len(find(live, typ)) == 0 {
					evs, err := sub.Next(ctx)
					if errors.Is(err, io.EOF) {
						t.Fatalf("the stream ended before a %s event: %v", typ, types(live))
					}
					if err != nil {
						t.Fatalf("waiting for %s: %v (got %v)", typ, err, types(live))
					}
					live = append(live, evs...)
				}
			}
			until(agent.TypeToolUse)
			pg.Stop()
			down := time.Now()
			if tc.replica {
				// This replica's follower sees nothing until the database
				// returns; wait until the run is past its result line here.
				local, err := e.svc.Hub().Subscribe(ctx, r.ID, 0)
				if err != nil {
					t.Fatal(err)
				}
				for n := []agent.Event{}; len(find(n, agent.TypeResult)) == 0; {
					evs, err := local.Next(ctx)
					if err != nil {
						t.Fatalf("local follower: %v", err)
					}
					n = append(n, evs...)
				}
				local.Close()
			} else {
				until(agent.TypeResult) // served from memory while the database is down
			}
			if len(find(live, agent.TypeDone)) > 0 {
				t.Fatalf("done before the database returned: %v", types(live))
			}
			if tc.memory == 1 {
				if ms, _ := filepath.Glob(filepath.Join(spool, "*")); len(ms) == 0 {
					t.Errorf("no spool file while the database is down")
				}
			}
			pg.Start()
			t.Logf("database down for %v", time.Since(down).Round(time.Millisecond))
			for {
				evs, err := sub.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("follow after the outage: %v (got %v)", err, types(live))
				}
				live = append(live, evs...)
			}
			checkSeqs(t, live)
			if live[len(live)-1].Type != agent.TypeDone {
				t.Fatalf("last event %s, want done", live[len(live)-1].Type)
			}
			got, err := e.svc.Get(ctx, "alice", r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != agent.Succeeded || got.LastSeq != int64(len(live)) {
				t.Errorf("run = %s (%s), last_seq %d; want succeeded with last_seq %d", got.Status, got.Error, got.LastSeq, len(live))
			}
			// The gateway's usage records of the calls made while the
			// database was down were queued and stored: one per model
			// call, and the run's totals are the model's figures.
			recs, err := e.db.ListUsage(ctx, agent.UsageQuery{UserID: "alice"}, 1000)
			if err != nil {
				t.Fatal(err)
			}
			rep := e.model.Reported()
			if calls := len(e.model.MessageRequests()); len(recs) != calls || got.Usage.InputTokens != rep.InputTokens || got.Usage.OutputTokens != rep.OutputTokens {
				t.Errorf("%d usage records for %d model calls; run usage %+v, the model reported %+v", len(recs), calls, got.Usage, rep)
			}
			stored, err := e.db.RunEvents(ctx, r.ID, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(seqTypes(live), seqTypes(stored)); d != "" {
				t.Errorf("stored events differ from the live ones (-live +stored):\n%s", d)
			}
			if ms, _ := filepath.Glob(filepath.Join(spool, "*")); len(ms) != 0 {
				t.Errorf("spool files left after the database returned: %v", ms)
			}
			// The sandbox takes a new run right away.
			e.model.Reset(modeltest.Text("Again."))
			r2, _ := e.do("alice", sb.ID, "again", agent.Options{NewSession: true})
			if r2.Status != agent.Succeeded {
				t.Errorf("next run = %s (%s)", r2.Status, r2.Error)
			}
		})
	}
}

func seqTypes(evs []agent.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%d %s %s", ev.Seq, ev.Type, ev.Data)
	}
	return out
}

// TestSlowFollowerThroughOutage: a follower far behind the live tail (it
// has read nothing of 6000 events) when the database goes away must not
// get an error nor skip anything: it waits while the store is unreachable
// (the events newer than the store wait in the spool meanwhile), then
// reads every event, in order, once, reading slowly throughout.
func TestSlowFollowerThroughOutage(t *testing.T) {
	pg := pgserver.Start(t)
	db := openPG(t, pg.URL)
	ctx := context.Background()
	const runID = "run_slow"
	if err := db.CreateRun(ctx, agent.Run{ID: runID, SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	hub := agent.NewHub(db, nil, nil)
	hub.SetDurability(agent.Durability{SpoolDir: t.TempDir(), MemoryBytes: 1, RetryMax: 100 * time.Millisecond}, nil)
	hub.Open(runID, 0)
	t.Cleanup(hub.Stop)
	slow, err := hub.Subscribe(ctx, runID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	const before, during = 6000, 3000 // more than the live tail (4096) before the outage
	for i := 1; i <= before; i++ {
		if _, err := hub.Append(ctx, runID, textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	pg.Stop()
	for i := before + 1; i <= before+during; i++ {
		if _, err := hub.Append(ctx, runID, textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, spooled := hub.Backlog(); n != during || spooled == 0 {
		t.Fatalf("backlog = %d events (%d spool bytes), want %d spooled", n, spooled, during)
	}
	// The follower reads slowly while the database is down: nothing of the
	// old events can be had, and nothing is an error.
	var got []int64
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for range 5 {
		evs, err := slow.Take(rctx)
		if err != nil {
			t.Fatalf("follower during the outage: %v", err)
		}
		for _, ev := range evs {
			got = append(got, ev.Seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pg.Start()
	if err := hub.Flush(rctx, runID, nil); err != nil {
		t.Fatal(err)
	}
	hub.Close(runID)
	for {
		evs, err := slow.Next(rctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("follower after the outage: %v after %d events", err, len(got))
		}
		for _, ev := range evs {
			got = append(got, ev.Seq)
		}
		time.Sleep(time.Millisecond) // a slow reader
	}
	wantRange(t, got, 1, before+during)
}

// TestUsageThroughDatabaseCuts records gateway usage from eight writers
// while PostgreSQL is stopped the hard way (every connection cut) and
// started again, four times. RecordUsage must answer nil throughout (a
// record the store cannot take now is queued and spooled, and a run's
// usage event follows a nil answer), and every record must be stored
// once the database is back, with nothing left in the spool. A write cut
// mid-transaction used to fail with a kind other than Unavailable: the
// direct write then answered that error (the call's usage was lost), and
// the background writer dropped a queued record whose event was out,
// removing the spool with it when the queue emptied.
func TestUsageThroughDatabaseCuts(t *testing.T) {
	pg := pgserver.Start(t)
	spool := t.TempDir()
	e := newEnv(t, envOpts{pgURL: pg.URL, durability: agent.Durability{SpoolDir: spool, RetryMax: 100 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		answered []string
	)
	pg.CutUnderLoad(4, 8, func(round, w, i int) {
		id := fmt.Sprintf("use_cut_%d_%d_%d", round, w, i)
		err := e.svc.RecordUsage(ctx, agent.UsageRecord{ID: id, UserID: "alice", Provider: "anthropic", Model: "claude-test",
			Usage: agent.Usage{InputTokens: 3, OutputTokens: 5}, Status: 200})
		if err != nil {
			t.Errorf("record usage %s while the database is cut: %v", id, err)
		} else {
			mu.Lock()
			answered = append(answered, id)
			mu.Unlock()
		}
		time.Sleep(2 * time.Millisecond)
	}, func() {
		for e.svc.UsageBacklog() > 0 {
			if ctx.Err() != nil {
				t.Fatalf("%d usage records still queued after the database returned", e.svc.UsageBacklog())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	rows, err := e.db.SQL().QueryContext(ctx, `SELECT id FROM usage_records`)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, id := range answered {
		if !have[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d usage records RecordUsage took are not stored", missing, len(answered))
	}
	if ms, _ := filepath.Glob(filepath.Join(spool, "*")); len(ms) != 0 {
		t.Errorf("spool files left after every record was stored: %v", ms)
	}
	t.Logf("%d usage records taken, %d stored", len(answered), len(have))
}
