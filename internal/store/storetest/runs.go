package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
)

// Runs exercises agent runs, their event logs and run tokens on a migrated, empty DB.
func Runs(t *testing.T, db *store.DB) {
	ctx := context.Background()
	base := time.UnixMilli(1_800_000_000_000).UTC()
	r1 := agent.Run{ID: "run_1", SandboxID: "sb_1", OwnerID: "alice", Prompt: "hi", Status: agent.Queued,
		Options: agent.Options{Model: "m", MaxTurns: 2, AllowedTools: []string{"Bash"}}, CreatedAt: base}
	if err := db.CreateRun(ctx, r1); err != nil {
		t.Fatalf("CreateRun: %v", err)
	}
	got, err := db.GetRun(ctx, "run_1")
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	if d := cmp.Diff(r1, got); d != "" {
		t.Errorf("GetRun round trip (-want +got):\n%s", d)
	}
	if _, err := db.GetRun(ctx, "nope"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("GetRun(missing) = %v, want not found", err)
	}

	// One active run per sandbox; the conflict names the active run.
	r2 := agent.Run{ID: "run_2", SandboxID: "sb_1", OwnerID: "alice", Prompt: "again", Status: agent.Queued, CreatedAt: base.Add(time.Second)}
	err = db.CreateRun(ctx, r2)
	if e, ok := errs.Public(err); !ok || e.Kind != errs.Conflict || !contains(e.Message, "run_1") {
		t.Fatalf("CreateRun(second active) = %v, want conflict naming run_1", err)
	}
	if a, err := db.ActiveRun(ctx, "sb_1"); err != nil || a.ID != "run_1" {
		t.Errorf("ActiveRun = %v, %v; want run_1", a.ID, err)
	}

	// Events: ordered, unique per (run, seq), last_seq advances.
	for i := int64(1); i <= 3; i++ {
		ev := agent.Event{RunID: "run_1", Seq: i, Type: agent.TypeText, Time: base.Add(time.Duration(i) * time.Millisecond),
			Data: json.RawMessage(`{"text":"x"}`), Raw: `{"type":"assistant"}`}
		if err := db.AppendRunEvent(ctx, ev); err != nil {
			t.Fatalf("AppendRunEvent(%d): %v", i, err)
		}
	}
	if err := db.AppendRunEvent(ctx, agent.Event{RunID: "run_1", Seq: 2, Type: "text", Time: base, Data: json.RawMessage(`{}`)}); errs.KindOf(err) != errs.Conflict {
		t.Errorf("AppendRunEvent(duplicate seq) = %v, want conflict", err)
	}
	// A retry of a stored event (its commit's answer was lost) is a no-op.
	again := agent.Event{RunID: "run_1", Seq: 3, Type: agent.TypeText, Time: base.Add(3 * time.Millisecond),
		Data: json.RawMessage(`{"text":"x"}`), Raw: `{"type":"assistant"}`}
	if err := db.AppendRunEvent(ctx, again); err != nil {
		t.Errorf("AppendRunEvent(the same event again) = %v, want nil", err)
	}
	evs, err := db.RunEvents(ctx, "run_1", 1, 0)
	if err != nil || len(evs) != 2 || evs[0].Seq != 2 || evs[1].Seq != 3 || evs[1].Raw != `{"type":"assistant"}` || string(evs[0].Data) != `{"text":"x"}` {
		t.Fatalf("RunEvents(after 1) = %+v, %v", evs, err)
	}
	if evs, _ := db.RunEvents(ctx, "run_1", 0, 1); len(evs) != 1 || evs[0].Seq != 1 {
		t.Errorf("RunEvents(limit 1) = %+v", evs)
	}

	// Update, usage increments, session lookup.
	code := 0
	r1.Status, r1.SessionID, r1.Model, r1.StartedAt, r1.FinishedAt = agent.Succeeded, "sess-1", "claude-x", base, base.Add(2*time.Second)
	r1.NumTurns, r1.ExitCode, r1.Usage, r1.CostNanoUSD = 2, &code, agent.Usage{InputTokens: 10}, 5
	if err := db.UpdateRun(ctx, r1); err != nil {
		t.Fatalf("UpdateRun: %v", err)
	}
	if err := db.AddRunUsage(ctx, "run_1", agent.Usage{InputTokens: 1, OutputTokens: 2, CacheReadTokens: 3, CacheCreationTokens: 4}, 1500); err != nil {
		t.Fatalf("AddRunUsage: %v", err)
	}
	got, _ = db.GetRun(ctx, "run_1")
	r1.Usage, r1.CostNanoUSD, r1.LastSeq = agent.Usage{InputTokens: 11, OutputTokens: 2, CacheReadTokens: 3, CacheCreationTokens: 4}, 1505, 3
	if d := cmp.Diff(r1, got); d != "" {
		t.Errorf("after UpdateRun (-want +got):\n%s", d)
	}
	if s, err := db.LastSessionID(ctx, "sb_1"); err != nil || s != "sess-1" {
		t.Errorf("LastSessionID = %q, %v", s, err)
	}
	if s, err := db.LastSessionID(ctx, "sb_other"); err != nil || s != "" {
		t.Errorf("LastSessionID(none) = %q, %v", s, err)
	}
	if err := db.UpdateRun(ctx, agent.Run{ID: "nope", Status: agent.Failed}); errs.KindOf(err) != errs.NotFound {
		t.Errorf("UpdateRun(missing) = %v, want not found", err)
	}

	// The sandbox is free again; list is newest first.
	if err := db.CreateRun(ctx, r2); err != nil {
		t.Fatalf("CreateRun after the first finished: %v", err)
	}
	list, err := db.ListRuns(ctx, "sb_1", 10)
	if err != nil || len(list) != 2 || list[0].ID != "run_2" || list[1].ID != "run_1" {
		t.Errorf("ListRuns = %v, %v", list, err)
	}

	// Tokens.
	tok := agent.RunToken{Hash: "h2", RunID: "run_2", SandboxID: "sb_1", UserID: "alice", CreatedAt: base}
	if err := db.CreateRunToken(ctx, tok); err != nil {
		t.Fatalf("CreateRunToken: %v", err)
	}
	if g, err := db.RunToken(ctx, "h2"); err != nil || g != tok {
		t.Errorf("RunToken = %+v, %v", g, err)
	}
	if _, err := db.RunToken(ctx, "nope"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("RunToken(missing) = %v, want not found", err)
	}

	// Orphans: an active run whose replica is gone (no row, or not seen
	// since staleBefore) becomes interrupted and loses its tokens; runs of
	// a live replica, and the caller's own, are left alone.
	marked, err := db.InterruptOrphanedRuns(ctx, "rep_self", base, base.Add(time.Hour), "server restarted")
	if err != nil || len(marked) != 1 || marked[0].ID != "run_2" {
		t.Fatalf("InterruptOrphanedRuns = %v, %v", marked, err)
	}
	got, _ = db.GetRun(ctx, "run_2")
	if got.Status != agent.Interrupted || got.Error != "server restarted" || !got.FinishedAt.Equal(base.Add(time.Hour)) {
		t.Errorf("interrupted run = %+v", got)
	}
	if _, err := db.RunToken(ctx, "h2"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("token of an interrupted run survived: %v", err)
	}
	for _, rep := range []struct {
		id   string
		seen time.Time
	}{{"rep_live", base.Add(time.Second)}, {"rep_dead", base.Add(-time.Second)}} {
		if renewed, err := db.ReplicaAlive(ctx, rep.id, "host_"+rep.id, rep.seen.Add(-time.Minute)); err != nil || renewed {
			t.Fatalf("ReplicaAlive (first) = %v, %v; want registered, not renewed", renewed, err)
		}
		if renewed, err := db.ReplicaAlive(ctx, rep.id, "host_"+rep.id, rep.seen); err != nil || !renewed {
			t.Fatalf("ReplicaAlive (again) = %v, %v; want renewed", renewed, err)
		}
	}
	for host, want := range map[string]bool{"host_rep_live": true, "host_rep_dead": false, "host_nobody": false} {
		if alive, err := db.HostAlive(ctx, host, base); err != nil || alive != want {
			t.Errorf("HostAlive(%s) = %v, %v; want %v", host, alive, err, want)
		}
	}
	for i, rep := range []string{"rep_live", "rep_dead", "rep_self", "rep_unknown"} {
		r := agent.Run{ID: "run_r" + rep, SandboxID: fmt.Sprintf("sb_r%d", i), OwnerID: "alice", Prompt: "p", Status: agent.Running, CreatedAt: base, Replica: rep}
		if err := db.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.GetRun(ctx, r.ID); got.Replica != rep {
			t.Errorf("run replica = %q, want %q", got.Replica, rep)
		}
	}
	marked, err = db.InterruptOrphanedRuns(ctx, "rep_self", base, base.Add(time.Hour), "replica gone")
	var ids []string
	for _, r := range marked {
		ids = append(ids, r.ID)
	}
	sort.Strings(ids)
	if err != nil || !slices.Equal(ids, []string{"run_rrep_dead", "run_rrep_unknown"}) {
		t.Fatalf("InterruptOrphanedRuns with replicas = %v, %v; want the dead and unknown replicas' runs", ids, err)
	}
	if again, err := db.InterruptOrphanedRuns(ctx, "rep_self", base, base.Add(time.Hour), "replica gone"); err != nil || len(again) != 0 {
		t.Errorf("second sweep = %v, %v; want nothing", again, err)
	}
	// The dead replica, back, learns it was forgotten; its run stays ended.
	if renewed, err := db.ReplicaAlive(ctx, "rep_dead", "host_rep_dead", base.Add(time.Hour)); err != nil || renewed {
		t.Errorf("ReplicaAlive after being taken for dead = %v, %v; want not renewed", renewed, err)
	}
	late := agent.Run{ID: "run_rrep_dead", Status: agent.Succeeded}
	if err := db.UpdateRun(ctx, late); errs.KindOf(err) != errs.Conflict {
		t.Errorf("UpdateRun of an interrupted run = %v, want conflict", err)
	}
	if got, _ := db.GetRun(ctx, "run_rrep_dead"); got.Status != agent.Interrupted {
		t.Errorf("interrupted run became %s", got.Status)
	}
	for _, id := range []string{"run_rrep_live", "run_rrep_self"} {
		if got, _ := db.GetRun(ctx, id); got.Status != agent.Running {
			t.Errorf("%s = %s, want running", id, got.Status)
		}
	}
	// The dead replica's row went with its runs; a clean stop removes one.
	if err := db.RemoveReplica(ctx, "rep_live"); err != nil {
		t.Fatal(err)
	}
	if marked, _ := db.InterruptOrphanedRuns(ctx, "rep_self", base, base.Add(time.Hour), "replica gone"); len(marked) != 1 || marked[0].ID != "run_rrep_live" {
		t.Errorf("after rep_live stopped: %v, want its run", marked)
	}
	if err := db.CreateRunToken(ctx, agent.RunToken{Hash: "h3", RunID: "run_1", SandboxID: "sb_1", UserID: "alice", CreatedAt: base}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRunTokens(ctx, "run_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RunToken(ctx, "h3"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("DeleteRunTokens left the token: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
