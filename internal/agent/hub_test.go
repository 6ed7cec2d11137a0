package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func openStore(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// newManager is a real sandbox Manager on the local driver (no sandbox started).
func newManager(t testing.TB, db *store.DB) *sandbox.Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		need(t, "the local sandbox driver needs root")
	}
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: initBin})
	if err != nil {
		need(t, err.Error())
	}
	t.Cleanup(func() { _ = drv.Close() })
	m, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local", Limits: sandbox.DefaultLimits()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func textEvent(i int) agent.Event {
	return agent.NewEvent(agent.TypeText, agent.TextData{Text: fmt.Sprint(i)}, "")
}

// collect reads a subscription to its end and returns the seqs it saw.
func collect(t testing.TB, sub *agent.Subscription) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var seqs []int64
	for {
		evs, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			return seqs
		}
		if err != nil {
			t.Errorf("subscription: %v after %d events", err, len(seqs))
			return seqs
		}
		for _, ev := range evs {
			seqs = append(seqs, ev.Seq)
		}
	}
}

func wantRange(t *testing.T, got []int64, from, to int64) {
	t.Helper()
	if int64(len(got)) != to-from+1 {
		t.Fatalf("got %d events, want %d..%d", len(got), from, to)
	}
	for i, s := range got {
		if s != from+int64(i) {
			t.Fatalf("event %d has seq %d, want %d", i, s, from+int64(i))
		}
	}
}

// TestHubReplayAndLiveAreAtomic: subscribers joining at any moment, from
// any position, see every later event exactly once and in order, while
// events are being appended concurrently.
func TestHubReplayAndLiveAreAtomic(t *testing.T) {
	db := openStore(t)
	ctx := context.Background()
	if err := db.CreateRun(ctx, agent.Run{ID: "run_h", SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	hub := agent.NewHub(db, nil, nil)
	hub.Open("run_h", 0)
	const total = 2000
	var wg sync.WaitGroup
	type result struct {
		after int64
		seqs  []int64
	}
	results := make(chan result, 64)
	// Subscriber i joins once i*40 events were appended (while appends go
	// on), resuming from position i*20: some replay, some live, some both.
	milestones := make([]chan struct{}, 40)
	for i := range milestones {
		milestones[i] = make(chan struct{})
	}
	for i := range 40 {
		wg.Go(func() {
			<-milestones[i]
			after := int64(i * 20)
			sub, err := hub.Subscribe(ctx, "run_h", after)
			if err != nil {
				t.Error(err)
				return
			}
			results <- result{after, collect(t, sub)}
		})
	}
	for i := 0; i <= total; i++ {
		if i%40 == 0 && i/40 < len(milestones) {
			close(milestones[i/40])
		}
		if i == 0 {
			continue
		}
		if _, err := hub.Append(ctx, "run_h", textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	hub.Close("run_h")
	wg.Wait()
	close(results)
	n := 0
	for r := range results {
		n++
		wantRange(t, r.seqs, r.after+1, total)
	}
	if n != 40 {
		t.Fatalf("%d subscribers finished, want 40", n)
	}
	// A finished run is served from the store.
	sub, err := hub.Subscribe(ctx, "run_h", total-5)
	if err != nil {
		t.Fatal(err)
	}
	wantRange(t, collect(t, sub), total-4, total)
}

// TestHubSlowSubscriberCatchesUp: a subscriber that reads nothing while
// thousands of events are appended (more than the in-memory tail holds)
// costs the publisher nothing and later reads every event, the old ones
// from the store, exactly once and in order; a fast one beside it is not
// held back.
func TestHubSlowSubscriberCatchesUp(t *testing.T) {
	ctx := context.Background()
	hub := liveHub(t, "run_s")
	slow, _ := hub.Subscribe(ctx, "run_s", 0)
	fast, _ := hub.Subscribe(ctx, "run_s", 0)
	var fastSeqs []int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		fastSeqs = collect(t, fast)
	}()
	const total = 10_000 // > the tail (4096)
	for i := 1; i <= total; i++ {
		if _, err := hub.Append(ctx, "run_s", textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Half-way through catching up, the run ends; the rest still comes.
	first, err := slow.Take(ctx)
	if err != nil || len(first) == 0 || first[0].Seq != 1 {
		t.Fatalf("first take: %d events, %v", len(first), err)
	}
	hub.Close("run_s")
	got := []int64{}
	for _, ev := range first {
		got = append(got, ev.Seq)
	}
	wantRange(t, append(got, collect(t, slow)...), 1, total)
	<-done
	wantRange(t, fastSeqs, 1, total)
}

// TestHubManySubscribers: thousands of subscribers on one run cost one
// channel send each per event.
func TestHubManySubscribers(t *testing.T) {
	ctx := context.Background()
	hub := liveHub(t, "run_m")
	const subs, events = 5000, 20
	all := make([]*agent.Subscription, subs)
	for i := range all {
		all[i], _ = hub.Subscribe(ctx, "run_m", 0)
	}
	for i := 1; i <= events; i++ {
		if _, err := hub.Append(ctx, "run_m", textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	hub.Close("run_m")
	for _, s := range all {
		wantRange(t, collect(t, s), 1, events)
	}
}

// TestRestartInterruptsRuns: a run left running by a previous process is
// marked interrupted at start, its events kept and a done event added.
func TestRestartInterruptsRuns(t *testing.T) {
	db := openStore(t)
	ctx := context.Background()
	stale := agent.Run{ID: "run_stale", SandboxID: "sb_gone", OwnerID: "alice", Prompt: "p", Status: agent.Running, CreatedAt: time.Now().UTC()}
	if err := db.CreateRun(ctx, stale); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		ev := textEvent(i)
		ev.RunID, ev.Seq, ev.Time = stale.ID, int64(i), time.Now()
		if err := db.AppendRunEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := agent.NewService(agent.Config{}, agent.Deps{Store: db, CLI: claude.New(claude.Config{}), Sandboxes: newManager(t, db)})
	if err != nil {
		t.Fatal(err)
	}
	runReady(t, svc)
	r, err := svc.Get(ctx, "alice", stale.ID)
	if err != nil || r.Status != agent.Interrupted || r.FinishedAt.IsZero() {
		t.Fatalf("stale run = %+v, %v", r, err)
	}
	sub, err := svc.Subscribe(ctx, "alice", stale.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := sub.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Take(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after the stale run's events: %v, want EOF", err)
	}
	if len(evs) != 3 || evs[2].Type != agent.TypeDone {
		t.Fatalf("events %v", types(evs))
	}
	var d agent.DoneData
	_ = json.Unmarshal(evs[2].Data, &d)
	if d.Status != agent.Interrupted {
		t.Errorf("done = %+v", d)
	}
}

// TestReplicaSweep: with several replicas (ReplicaTimeout set), a running
// service interrupts the runs of a replica that stopped renewing itself,
// closing their logs with a done event, and leaves a live replica's runs
// and the runs of the replica it replaced alone until they time out too.
func TestReplicaSweep(t *testing.T) {
	db := openStore(t)
	ctx := context.Background()
	const timeout = 400 * time.Millisecond
	svc, err := agent.NewService(agent.Config{ReplicaTimeout: timeout}, agent.Deps{Store: db, CLI: claude.New(claude.Config{}), Sandboxes: newManager(t, db)})
	if err != nil {
		t.Fatal(err)
	}
	// A peer that is alive at the service's start, and keeps renewing.
	if _, err := db.ReplicaAlive(ctx, "rep_peer", "host_peer", time.Now()); err != nil {
		t.Fatal(err)
	}
	peerRun := agent.Run{ID: "run_peer", SandboxID: "sb_peer", OwnerID: "alice", Prompt: "p", Status: agent.Running, CreatedAt: time.Now().UTC(), Replica: "rep_peer"}
	if err := db.CreateRun(ctx, peerRun); err != nil {
		t.Fatal(err)
	}
	runReady(t, svc)
	if r, _ := db.GetRun(ctx, peerRun.ID); r.Status != agent.Running {
		t.Fatalf("a live peer's run was %s at start, want running", r.Status)
	}
	// The peer renews for a while, then stops (as if it crashed).
	renewUntil := time.Now().Add(2 * timeout)
	for time.Now().Before(renewUntil) {
		if _, err := db.ReplicaAlive(ctx, "rep_peer", "host_peer", time.Now()); err != nil {
			t.Fatal(err)
		}
		if r, _ := db.GetRun(ctx, peerRun.ID); r.Status != agent.Running {
			t.Fatalf("the peer's run was %s while the peer was alive", r.Status)
		}
		time.Sleep(timeout / 8)
	}
	stopped := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := db.GetRun(ctx, peerRun.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == agent.Interrupted {
			if since := time.Since(stopped); since < timeout/2 {
				t.Errorf("interrupted %v after the peer's last renewal, before its timeout", since)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead peer's run is still %s", r.Status)
		}
		time.Sleep(timeout / 8)
	}
	// The done event follows the status change.
	for {
		got, err := db.RunEvents(ctx, peerRun.ID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			if len(got) != 1 || got[0].Type != agent.TypeDone {
				t.Fatalf("the interrupted run's log = %v; want one done event", types(got))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no done event in the interrupted run's log")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHubFollowsAnotherReplica: two hubs on one PostgreSQL database, as
// two replicas. A subscriber on B to a run live on A gets each event while
// the run goes on (before A appends the next), in order, then the done
// event and the end; a subscriber that comes after the end replays it all.
func TestHubFollowsAnotherReplica(t *testing.T) {
	ctx := context.Background()
	dbA, hubA, hubB := twoReplicas(t)

	run := agent.Run{ID: "run_f", SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now().UTC(), Replica: "rep_a"}
	if err := dbA.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	hubA.Open(run.ID, 0)
	sub, err := hubB.Subscribe(ctx, run.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	const events = 30
	for i := 1; i <= events; i++ {
		if _, err := hubA.Append(ctx, run.ID, textEvent(i)); err != nil {
			t.Fatal(err)
		}
		evs, err := sub.Next(wait)
		if err != nil || len(evs) != 1 || evs[0].Seq != int64(i) {
			t.Fatalf("event %d on the other replica: %v, %v", i, evs, err)
		}
	}
	if _, err := hubA.Append(ctx, run.ID, agent.NewEvent(agent.TypeDone, agent.DoneData{Status: agent.Succeeded}, "")); err != nil {
		t.Fatal(err)
	}
	hubA.Close(run.ID)
	if evs, err := sub.Next(wait); err != nil || len(evs) != 1 || evs[0].Type != agent.TypeDone {
		t.Fatalf("done on the other replica: %v, %v", types(evs), err)
	}
	if evs, err := sub.Next(wait); !errors.Is(err, io.EOF) {
		t.Fatalf("after done: %v, %v; want the end", types(evs), err)
	}
	late, err := hubB.Subscribe(ctx, run.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	wantRange(t, collect(t, late), 1, events+1)
	// A client resuming after the done event reaches the end at once.
	run.Status, run.FinishedAt = agent.Succeeded, time.Now().UTC()
	if err := dbA.UpdateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	resumed, err := hubB.Subscribe(ctx, run.ID, events+1)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if evs, err := resumed.Take(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("resuming after done: %v, %v; want the end", types(evs), err)
	}
}

// replica is one replica's store and hub, with its feed running.
type replica struct {
	db  *store.DB
	hub *agent.Hub
}

// twoReplicas opens two database handles on one new PostgreSQL database
// (skipping without a server) and runs a hub with its feed on each, as two
// replicas; it returns A's store and both hubs.
func twoReplicas(t testing.TB) (*store.DB, *agent.Hub, *agent.Hub) {
	t.Helper()
	url := storetest.PostgresURL(t)
	ctx := context.Background()
	var rs [2]replica
	feedCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range rs {
		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		rs[i] = replica{db: db, hub: agent.NewHub(db, nil, db.RunFeed())}
		wg.Go(func() { rs[i].hub.RunFeed(feedCtx, nil, nil) })
	}
	t.Cleanup(func() { stop(); wg.Wait() }) // before the databases close
	return rs[0].db, rs[0].hub, rs[1].hub
}

// runReady runs svc until the test ends and returns once it is ready (its
// start-up sweep of orphaned runs has run): Start answers only then, here
// with not found for a sandbox that does not exist.
func runReady(t *testing.T, svc *agent.Service) {
	t.Helper()
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(runCtx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	if _, err := svc.Start(context.Background(), "alice", "sb_x", "hi", agent.Options{}); errs.KindOf(err) != errs.NotFound {
		t.Fatalf("start on a missing sandbox = %v, want not found", err)
	}
}

// TestDirectDelivery: with directMin or more subscribers the topic's
// writers deliver to idle streams themselves. Each subscriber here follows
// the stream protocol of SetDirect (Lock, Take, Park, Ready); a fifth of
// the deliveries are "not taken by the socket" and kept for the stream's
// goroutine, and some streams are slow. Every subscriber must see every
// event once, in order.
func TestDirectDelivery(t *testing.T) {
	ctx := context.Background()
	hub := liveHub(t, "run_d")
	const subs, events = 300, 600
	got := make([][]int64, subs)
	var wg sync.WaitGroup
	var direct atomic.Int64
	for i := range subs {
		sub, err := hub.Subscribe(ctx, "run_d", 0)
		if err != nil {
			t.Fatal(err)
		}
		var kept []agent.Event // "pending": delivered but not yet on the wire
		n := 0
		sub.SetDirect(func(evs []agent.Event) bool {
			n++
			if n%5 == 0 {
				kept = append(kept, evs...)
				return false
			}
			direct.Add(int64(len(evs)))
			for _, ev := range evs {
				got[i] = append(got[i], ev.Seq)
			}
			return true
		})
		wg.Go(func() {
			defer sub.Close()
			for {
				sub.Lock()
				for _, ev := range kept {
					got[i] = append(got[i], ev.Seq)
				}
				kept = kept[:0]
				evs, err := sub.Take(ctx)
				if errors.Is(err, io.EOF) {
					sub.Unlock()
					return
				}
				if err != nil {
					sub.Unlock()
					t.Errorf("subscriber %d: %v", i, err)
					return
				}
				for _, ev := range evs {
					got[i] = append(got[i], ev.Seq)
				}
				if len(evs) > 0 {
					sub.Unlock()
					continue
				}
				sub.Park()
				sub.Unlock()
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // a slow stream
				}
				<-sub.Ready()
			}
		})
	}
	for i := 1; i <= events; i++ {
		if _, err := hub.Append(ctx, "run_d", textEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	hub.Close("run_d")
	wg.Wait()
	for i, seqs := range got {
		if len(seqs) != events {
			t.Fatalf("subscriber %d got %d events, want %d", i, len(seqs), events)
		}
		for j, seq := range seqs {
			if seq != int64(j+1) {
				t.Fatalf("subscriber %d: event %d has seq %d", i, j, seq)
			}
		}
	}
	if direct.Load() == 0 {
		t.Fatal("no event was delivered by the hub's writers")
	}
	t.Logf("%d of %d deliveries by the hub's writers", direct.Load(), subs*events)
}

// liveHub returns a hub over a new SQLite store with runID created and
// open (live).
func liveHub(t testing.TB, runID string) *agent.Hub {
	t.Helper()
	db := openStore(t)
	if err := db.CreateRun(context.Background(), agent.Run{ID: runID, SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	hub := agent.NewHub(db, nil, nil)
	hub.Open(runID, 0)
	return hub
}
