package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
	"github.com/techbossai/techboss/internal/teams"
)

// TestTeamBudget: with the team budget check (teams.BudgetCheck on the
// real store, both databases), a run in a team sandbox is refused with 402
// once the team's calls this month cost its limit, whoever made them; a
// run outside the team goes on; removing the limit lets the team's run
// through again.
func TestTeamBudget(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			testTeamBudget(t, storetest.Open(t, d))
		})
	}
}

func testTeamBudget(t *testing.T, db *store.DB) {
	ctx := context.Background()
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	if err := db.CreateTeam(ctx, teams.Team{ID: "tm_a", Name: "A", CreatedBy: "ann", CreatedAt: now},
		teams.Member{TeamID: "tm_a", UserID: "ann", Role: teams.RoleOwner, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []struct{ id, team string }{{"sb_team", "tm_a"}, {"sb_own", ""}} {
		if err := db.CreateSandbox(ctx, &sandbox.Sandbox{ID: sb.id, OwnerID: "ann", TeamID: sb.team, State: sandbox.Running,
			Driver: "local", Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.SetTeamBudget(ctx, "tm_a", 1000, now); err != nil {
		t.Fatal(err)
	}
	// Another member's call, in the team's sandbox, spent the whole limit.
	if err := db.InsertUsage(ctx, agent.UsageRecord{ID: "u1", Time: now.Add(-time.Hour), UserID: "ben", SandboxID: "sb_team",
		Model: "claude-test", CostNanoUSD: 1000}); err != nil {
		t.Fatal(err)
	}
	ms := modeltest.New(t, modeltest.Text("ok").Times(2))
	g, err := gateway.New(gateway.Config{
		Upstream: gateway.NewAnthropic(ms.URL, upstreamKey, nil),
		RunTokens: tokens{
			"tbr_team": {UserID: "ann", SandboxID: "sb_team", RunID: "run1"},
			"tbr_own":  {UserID: "ann", SandboxID: "sb_own", RunID: "run2"},
		},
		Admit:        func(context.Context, string) error { return nil },
		AdmitSandbox: teams.BudgetCheck(db, func() time.Time { return now }),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	post := func(tok string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+gateway.Prefix+"/v1/messages",
			strings.NewReader(`{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("x-api-key", tok)
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post("tbr_team")
	if resp.StatusCode != http.StatusPaymentRequired || !strings.Contains(body, "billing_error") ||
		!strings.Contains(body, "team tm_a's monthly LLM budget of $0.00 reached") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("team run over its team's budget: %d %s (Retry-After %q), want 402 billing_error naming the team", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if resp, body := post("tbr_own"); resp.StatusCode != http.StatusOK {
		t.Errorf("run outside the team: %d %s, want 200", resp.StatusCode, body)
	}
	if err := db.DeleteTeamBudget(ctx, "tm_a"); err != nil {
		t.Fatal(err)
	}
	if resp, body := post("tbr_team"); resp.StatusCode != http.StatusOK {
		t.Errorf("team run without a team budget: %d %s, want 200", resp.StatusCode, body)
	}
}
