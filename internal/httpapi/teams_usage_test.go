package httpapi

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// TestUsageByTeam: GET /usage?group_by=team sums every call from a team's
// sandboxes, whoever made it, labelled by the team's name; an admin sees
// every team, a member (any role) the teams they belong to, anyone else
// none. Calls outside a team sandbox are in no group.
func TestUsageByTeam(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			var h *harness
			h = newTeamsHarness(t, d, func(deps *Deps) {
				m := newSandboxManager(t, deps.Store, time.Now, sandbox.DefaultLimits())
				svc, err := agent.NewService(agent.Config{Credentials: agent.CredentialsDirect, UpstreamAPIKey: "unused"},
					agent.Deps{Store: deps.Store, Sandboxes: m, CLI: claude.New(claude.Config{Bin: filepath.Join(t.TempDir(), "none")}), Logger: deps.Logger})
				if err != nil {
					t.Fatal(err)
				}
				deps.Runs = svc
			})
			testUsageByTeam(t, h)
		})
	}
}

func testUsageByTeam(t *testing.T, h *harness) {
	ctx := context.Background()
	h.createUser("root@example.com", auth.RoleAdmin)
	users := map[string]*auth.User{}
	for _, n := range []string{"ann", "ben", "cat", "dan"} {
		users[n] = h.createUser(n+"@example.com", auth.RoleMember)
	}
	ts := teams.New(h.db, storeUsers{h.db}, nil)
	alpha, err := ts.Create(ctx, users["ann"].ID, "Alpha")
	if err != nil {
		t.Fatal(err)
	}
	beta, err := ts.Create(ctx, users["cat"].ID, "Beta")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.PutMember(ctx, users["ann"].ID, alpha.ID, "ben@example.com", teams.RoleViewer); err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now().UTC().Truncate(time.Millisecond)
	for _, sb := range []struct{ id, team string }{{"sb_alpha", alpha.ID}, {"sb_beta", beta.ID}, {"sb_own", ""}} {
		if err := h.db.CreateSandbox(ctx, &sandbox.Sandbox{ID: sb.id, OwnerID: users["ann"].ID, TeamID: sb.team, State: sandbox.Terminated,
			Driver: "local", Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range []struct {
		user, sb string
		cost     int64
	}{{"ann", "sb_alpha", 100}, {"cat", "sb_alpha", 20}, {"cat", "sb_beta", 5}, {"ann", "sb_own", 1000}, {"dan", "", 1000}} {
		if err := h.db.InsertUsage(ctx, agent.UsageRecord{ID: "ur" + string(rune('0'+i)), Time: now.Add(-time.Hour), UserID: users[r.user].ID,
			SandboxID: r.sb, Provider: "anthropic", Model: "claude-x", Usage: agent.Usage{InputTokens: r.cost}, CostNanoUSD: r.cost}); err != nil {
			t.Fatal(err)
		}
	}
	byTeam := func(c *http.Client) []agent.UsageGroup {
		t.Helper()
		r := h.do(c, "GET", "/usage?group_by=team", nil)
		wantStatus(t, r, http.StatusOK)
		var u struct {
			GroupBy string `json:"group_by"`
			Groups  []struct {
				Key, Label string
				Requests   int64
				Usage      agent.Usage
			} `json:"groups"`
		}
		r.data(t, &u)
		out := []agent.UsageGroup{}
		for _, g := range u.Groups {
			out = append(out, agent.UsageGroup{Key: g.Key, Label: g.Label, Requests: g.Requests, Usage: g.Usage})
		}
		return out
	}
	a := agent.UsageGroup{Key: alpha.ID, Label: "Alpha", Requests: 2, Usage: agent.Usage{InputTokens: 120}}
	b := agent.UsageGroup{Key: beta.ID, Label: "Beta", Requests: 1, Usage: agent.Usage{InputTokens: 5}}
	wantAB := []agent.UsageGroup{a, b}
	if beta.ID < alpha.ID {
		wantAB = []agent.UsageGroup{b, a}
	}
	for who, want := range map[string][]agent.UsageGroup{
		"root": wantAB, // an admin: every team
		"ann":  {a},    // Alpha's owner: cat's call in Alpha's sandbox counts
		"ben":  {a},    // a viewer of Alpha
		"cat":  {b},    // Beta's owner, not in Alpha though her call there is Alpha's
		"dan":  {},     // in no team
	} {
		if d := cmp.Diff(want, byTeam(h.mustLogin(who+"@example.com"))); d != "" {
			t.Errorf("%s: usage by team (-want +got):\n%s", who, d)
		}
	}
}

// TestTeamBudgetRoutes: PUT/DELETE /teams/{team}/budget for team owners
// and admins; a member is refused (403), a stranger cannot tell the team
// exists (404), a bad limit names the field. The gateway's refusal is
// TestTeamBudget (internal/llm/gateway).
func TestTeamBudgetRoutes(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			h := newTeamsHarness(t, d)
			ctx := context.Background()
			h.createUser("root@example.com", auth.RoleAdmin)
			users := map[string]*auth.User{}
			for _, n := range []string{"ann", "ben", "dan"} {
				users[n] = h.createUser(n+"@example.com", auth.RoleMember)
			}
			ts := teams.New(h.db, storeUsers{h.db}, nil)
			tm, err := ts.Create(ctx, users["ann"].ID, "Alpha")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ts.PutMember(ctx, users["ann"].ID, tm.ID, "ben@example.com", teams.RoleMember); err != nil {
				t.Fatal(err)
			}
			ann, ben, dan, root := h.mustLogin("ann@example.com"), h.mustLogin("ben@example.com"), h.mustLogin("dan@example.com"), h.mustLogin("root@example.com")
			if err := h.db.CreateSandbox(ctx, &sandbox.Sandbox{ID: "sb_b", OwnerID: users["ann"].ID, TeamID: tm.ID, State: sandbox.Terminated,
				Driver: "local", Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: time.Now(), UpdatedAt: time.Now(), LastActiveAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			limit := func() int64 {
				t.Helper()
				_, l, _, err := h.db.SandboxTeamBudget(ctx, "sb_b", time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			path := "/teams/" + tm.ID + "/budget"
			wantField(t, h.do(ann, "PUT", path, map[string]any{"monthly_usd": 0}), http.StatusUnprocessableEntity, "monthly_usd")
			wantStatus(t, h.do(ben, "PUT", path, map[string]any{"monthly_usd": 5}), http.StatusForbidden)
			wantStatus(t, h.do(dan, "PUT", path, map[string]any{"monthly_usd": 5}), http.StatusNotFound)
			wantStatus(t, h.do(root, "PUT", "/teams/tm_nope/budget", map[string]any{"monthly_usd": 5}), http.StatusNotFound)
			if l := limit(); l != 0 {
				t.Fatalf("limit after refused PUTs = %d, want none", l)
			}
			r := h.do(ann, "PUT", path, map[string]any{"monthly_usd": 12.5})
			wantStatus(t, r, http.StatusOK)
			var got teamBudget
			r.data(t, &got)
			if got != (teamBudget{TeamID: tm.ID, MonthlyUSD: 12.5}) || limit() != 12_500_000_000 {
				t.Errorf("PUT budget = %+v, stored %d nano-USD; want 12.5 USD", got, limit())
			}
			wantStatus(t, h.do(root, "PUT", path, map[string]any{"monthly_usd": 3}), http.StatusOK)
			if limit() != 3_000_000_000 {
				t.Errorf("admin's PUT: stored %d, want 3 USD", limit())
			}
			// Any member reads the limit and this month's spend of the team's
			// sandboxes; a stranger gets 404.
			if err := h.db.InsertUsage(ctx, agent.UsageRecord{ID: "ub1", Time: h.clock.Now(), UserID: users["dan"].ID, SandboxID: "sb_b",
				Model: "claude-x", CostNanoUSD: 250_000_000}); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, h.do(dan, "GET", path, nil), http.StatusNotFound)
			r = h.do(ben, "GET", path, nil)
			wantStatus(t, r, http.StatusOK)
			var view teamBudgetView
			r.data(t, &view)
			if want := (teamBudgetView{TeamID: tm.ID, MonthlyUSD: 3, SpentUSD: 0.25, ResetsAt: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)}); view != want {
				t.Errorf("GET budget = %+v, want %+v", view, want)
			}
			wantStatus(t, h.do(ben, "DELETE", path, nil), http.StatusForbidden)
			wantStatus(t, h.do(ann, "DELETE", path, nil), http.StatusNoContent)
			if limit() != 0 {
				t.Errorf("limit after DELETE = %d, want none", limit())
			}
		})
	}
}
