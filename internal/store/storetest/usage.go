package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// Usage exercises usage records and summaries on a migrated, empty DB.
func Usage(t *testing.T, db *store.DB) {
	ctx := context.Background()
	day1 := time.Date(2027, 1, 2, 10, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	recs := []agent.UsageRecord{
		{ID: "u1", Time: day1, UserID: "alice", SandboxID: "sb_1", RunID: "run_1", Provider: "anthropic", Model: "opus",
			Usage: agent.Usage{InputTokens: 100, OutputTokens: 20, CacheReadTokens: 5, CacheCreationTokens: 1}, CostNanoUSD: 1_000, Latency: 120 * time.Millisecond, Status: 200},
		{ID: "u2", Time: day1.Add(time.Hour), UserID: "alice", SandboxID: "sb_2", Provider: "anthropic", Model: "sonnet",
			Usage: agent.Usage{InputTokens: 10, OutputTokens: 2}, CostNanoUSD: 300, Status: 200},
		{ID: "u3", Time: day2, UserID: "alice", SandboxID: "sb_1", RunID: "run_2", Provider: "anthropic", Model: "opus",
			Usage: agent.Usage{InputTokens: 1}, CostNanoUSD: 7, Status: 500},
		{ID: "u4", Time: day2, UserID: "bob", Provider: "anthropic", Model: "opus", Usage: agent.Usage{InputTokens: 1000}, CostNanoUSD: 9_000_000_000},
	}
	for _, r := range recs {
		if err := db.InsertUsage(ctx, r); err != nil {
			t.Fatalf("InsertUsage(%s): %v", r.ID, err)
		}
	}
	if err := db.InsertUsage(ctx, recs[0]); errs.KindOf(err) != errs.Conflict {
		t.Errorf("InsertUsage(duplicate) = %v, want conflict", err)
	}
	// StoreUsage: the record and its run's totals at once, once.
	if err := db.CreateRun(ctx, agent.Run{ID: "run_su", SandboxID: "sb_1", OwnerID: "alice", Prompt: "p", Status: agent.Running, CreatedAt: day1}); err != nil {
		t.Fatal(err)
	}
	su := agent.UsageRecord{ID: "u_su", Time: day1.Add(-48 * time.Hour), UserID: "carol", RunID: "run_su", Provider: "anthropic", Model: "opus",
		Usage: agent.Usage{InputTokens: 3, OutputTokens: 4}, CostNanoUSD: 50}
	for range 2 { // a retry after a lost answer
		if err := db.StoreUsage(ctx, su); err != nil {
			t.Fatalf("StoreUsage: %v", err)
		}
	}
	if r, err := db.GetRun(ctx, "run_su"); err != nil || r.Usage != su.Usage || r.CostNanoUSD != 50 {
		t.Errorf("run after StoreUsage twice = %+v (cost %d), %v; want the record's usage once", r.Usage, r.CostNanoUSD, err)
	}

	q := agent.UsageQuery{UserID: "alice", From: day1.Add(-time.Hour), To: day2.Add(time.Hour)}
	for _, tt := range []struct {
		by   string
		want []agent.UsageGroup
	}{
		{"day", []agent.UsageGroup{
			{Key: "2027-01-02", Requests: 2, Usage: agent.Usage{InputTokens: 110, OutputTokens: 22, CacheReadTokens: 5, CacheCreationTokens: 1}, CostNanoUSD: 1_300},
			{Key: "2027-01-03", Requests: 1, Usage: agent.Usage{InputTokens: 1}, CostNanoUSD: 7},
		}},
		{"model", []agent.UsageGroup{
			{Key: "opus", Requests: 2, Usage: agent.Usage{InputTokens: 101, OutputTokens: 20, CacheReadTokens: 5, CacheCreationTokens: 1}, CostNanoUSD: 1_007},
			{Key: "sonnet", Requests: 1, Usage: agent.Usage{InputTokens: 10, OutputTokens: 2}, CostNanoUSD: 300},
		}},
		{"sandbox", []agent.UsageGroup{
			{Key: "sb_1", Requests: 2, Usage: agent.Usage{InputTokens: 101, OutputTokens: 20, CacheReadTokens: 5, CacheCreationTokens: 1}, CostNanoUSD: 1_007},
			{Key: "sb_2", Requests: 1, Usage: agent.Usage{InputTokens: 10, OutputTokens: 2}, CostNanoUSD: 300},
		}},
	} {
		q.GroupBy = tt.by
		got, err := db.UsageSummary(ctx, q)
		if err != nil {
			t.Fatalf("UsageSummary(%s): %v", tt.by, err)
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("UsageSummary(%s) (-want +got):\n%s", tt.by, d)
		}
	}
	q.GroupBy = "bogus"
	if _, err := db.UsageSummary(ctx, q); errs.KindOf(err) != errs.Invalid {
		t.Errorf("UsageSummary(bogus) = %v, want invalid", err)
	}

	// By user, every user: the label is the user's email where the user exists.
	if err := db.CreateUser(ctx, auth.User{ID: "bob", Email: "bob@example.com", Role: auth.RoleMember, CreatedAt: day1}, "x"); err != nil {
		t.Fatal(err)
	}
	byUser, err := db.UsageSummary(ctx, agent.UsageQuery{From: day1.Add(-time.Hour), To: day2.Add(time.Hour), GroupBy: "user"})
	if err != nil {
		t.Fatalf("UsageSummary(user): %v", err)
	}
	if d := cmp.Diff([]agent.UsageGroup{
		{Key: "alice", Requests: 3, Usage: agent.Usage{InputTokens: 111, OutputTokens: 22, CacheReadTokens: 5, CacheCreationTokens: 1}, CostNanoUSD: 1_307},
		{Key: "bob", Label: "bob@example.com", Requests: 1, Usage: agent.Usage{InputTokens: 1000}, CostNanoUSD: 9_000_000_000},
	}, byUser); d != "" {
		t.Errorf("UsageSummary(user) (-want +got):\n%s", d)
	}

	// Every user (admin view), half-open range.
	all, err := db.UsageSummary(ctx, agent.UsageQuery{From: day2, To: day2.Add(time.Hour), GroupBy: "model"})
	if err != nil || len(all) != 1 || all[0].Requests != 2 {
		t.Errorf("UsageSummary(all users, day2) = %+v, %v", all, err)
	}

	list, err := db.ListUsage(ctx, agent.UsageQuery{UserID: "alice", From: day1, To: day1.Add(2 * time.Hour)}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]agent.UsageRecord{recs[1], recs[0]}, list); d != "" {
		t.Errorf("ListUsage (-want +got):\n%s", d)
	}

	spent, err := db.SpentUSD(ctx, "bob", day1)
	if err != nil || spent != 9 {
		t.Errorf("SpentUSD(bob) = %v, %v; want 9", spent, err)
	}
	if spent, _ := db.SpentUSD(ctx, "alice", day2); spent != 7e-9 {
		t.Errorf("SpentUSD(alice, day2) = %v, want 7e-9", spent)
	}

	usageByTeam(t, db, day2.Add(48*time.Hour))
}

// usageByTeam: a team's usage is every call from its sandboxes, whoever
// made it; a member sees the teams they belong to; calls outside a team
// sandbox are in no group.
func usageByTeam(t *testing.T, db *store.DB, day time.Time) {
	ctx := context.Background()
	for _, tm := range []struct{ id, name, owner string }{{"tm_a", "Alpha", "carol"}, {"tm_b", "Beta", "dan"}} {
		if err := db.CreateTeam(ctx, teams.Team{ID: tm.id, Name: tm.name, CreatedBy: tm.owner, CreatedAt: day},
			teams.Member{TeamID: tm.id, UserID: tm.owner, Role: teams.RoleOwner, CreatedAt: day}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutMember(ctx, teams.Member{TeamID: "tm_a", UserID: "dan", Role: teams.RoleViewer, CreatedAt: day}); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []struct{ id, team string }{{"sb_ta", "tm_a"}, {"sb_tb", "tm_b"}, {"sb_p", ""}} {
		if err := db.CreateSandbox(ctx, &sandbox.Sandbox{ID: sb.id, OwnerID: "carol", TeamID: sb.team, State: sandbox.Running,
			Driver: "local", Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: day, UpdatedAt: day, LastActiveAt: day}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []agent.UsageRecord{
		{ID: "ut1", Time: day, UserID: "carol", SandboxID: "sb_ta", Model: "opus", Usage: agent.Usage{InputTokens: 10}, CostNanoUSD: 100},
		{ID: "ut2", Time: day, UserID: "dan", SandboxID: "sb_ta", Model: "opus", Usage: agent.Usage{OutputTokens: 2}, CostNanoUSD: 20},
		{ID: "ut3", Time: day, UserID: "dan", SandboxID: "sb_tb", Model: "opus", Usage: agent.Usage{InputTokens: 1}, CostNanoUSD: 5},
		{ID: "ut4", Time: day, UserID: "carol", SandboxID: "sb_p", Model: "opus", Usage: agent.Usage{InputTokens: 1}, CostNanoUSD: 1000},
		{ID: "ut5", Time: day, UserID: "carol", Model: "opus", Usage: agent.Usage{InputTokens: 1}, CostNanoUSD: 1000},
	} {
		if err := db.InsertUsage(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	alpha := agent.UsageGroup{Key: "tm_a", Label: "Alpha", Requests: 2, Usage: agent.Usage{InputTokens: 10, OutputTokens: 2}, CostNanoUSD: 120}
	beta := agent.UsageGroup{Key: "tm_b", Label: "Beta", Requests: 1, Usage: agent.Usage{InputTokens: 1}, CostNanoUSD: 5}
	for _, tt := range []struct {
		member string
		want   []agent.UsageGroup
	}{{"", []agent.UsageGroup{alpha, beta}}, {"carol", []agent.UsageGroup{alpha}}, {"dan", []agent.UsageGroup{alpha, beta}}, {"erin", []agent.UsageGroup{}}} {
		got, err := db.UsageSummary(ctx, agent.UsageQuery{TeamMemberID: tt.member, From: day, To: day.Add(time.Hour), GroupBy: "team"})
		if err != nil {
			t.Fatalf("UsageSummary(team, member %q): %v", tt.member, err)
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("UsageSummary(team, member %q) (-want +got):\n%s", tt.member, d)
		}
	}
	if _, err := db.UsageSummary(ctx, agent.UsageQuery{TeamMemberID: "carol", From: day, To: day.Add(time.Hour), GroupBy: "model"}); errs.KindOf(err) != errs.Invalid {
		t.Errorf("UsageSummary(model, team member) = %v, want invalid", err)
	}
}
