package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestGatewayWhileDatabaseDown stops a real PostgreSQL while a real
// Claude CLI run is in its Bash tool, on a server whose gateway checks a
// monthly budget before every model call (so every call would consult the
// database). The run's next model call still reaches the model: its run
// token is checked in memory and its budget check is skipped while the
// database is unreachable. A user's own API key on the gateway gets 503
// with Retry-After in the provider's error format (not a 500). Once the
// database is back the run ends succeeded.
func TestGatewayWhileDatabaseDown(t *testing.T) {
	requireSandboxHost(t)
	pg := storetest.StartPGServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := store.Open(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	fs := newFaultServer(t, faultOpts{db: db, blobDir: t.TempDir(),
		admit: func(db *store.DB) func(context.Context, string) error {
			return llm.NewBudgets(llm.BudgetConfig{MonthlyUSD: 100}, db, db, time.Now).Check
		}},
		modeltest.Bash("sleep 3; echo slept"), modeltest.Text("Answered while the database was down."))
	alice := fs.createUser("alice@example.com", auth.RoleMember)
	c := fs.mustLogin("alice@example.com")
	tok := fs.newToken(c, "gateway").Token
	r := fs.do(c, "POST", "/sandbox", map[string]any{"image_base": "host"})
	wantStatus(t, r, http.StatusOK)
	var created createSandboxResponse
	r.data(t, &created)

	run, err := fs.svc.Start(ctx, alice.ID, created.SandboxID, "sleep, then answer", agent.Options{NewSession: true})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := fs.svc.Subscribe(ctx, alice.ID, run.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var live []agent.Event
	until := func(typ string) {
		t.Helper()
		for !hasEvent(live, typ) {
			evs, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v (got %v)", typ, err, eventTypes(live))
			}
			live = append(live, evs...)
		}
	}
	until(agent.TypeToolUse)
	pg.Stop()
	up := false
	t.Cleanup(func() { // before the server's cleanup, which lists sandboxes to destroy
		if !up {
			pg.Start()
		}
	})

	// A user's API key needs the database: every model route of the
	// gateway answers 503 with Retry-After in its provider's format.
	for _, op := range gatewayOps {
		if op.Method == http.MethodHead || strings.HasPrefix(op.Path, "/llm/mcp") {
			continue // the probe authenticates no one; the MCP routes take run tokens only
		}
		req, _ := http.NewRequestWithContext(ctx, op.Method, fs.srv.URL+op.Path,
			strings.NewReader(`{"model":"claude-test","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var provErr struct {
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &provErr); err != nil || res.StatusCode != http.StatusServiceUnavailable ||
			res.Header.Get("Retry-After") == "" || provErr.Error.Type == "" {
			t.Errorf("%s %s with a user key, database down = %d (Retry-After %q) %s; want 503 with Retry-After in the provider's error format",
				op.Method, op.Path, res.StatusCode, res.Header.Get("Retry-After"), body)
		}
	}

	// The run's own calls go on: its answer arrives with the database down.
	until(agent.TypeResult)
	res2, _ := lastEvent(live, agent.TypeResult)
	if hasEvent(live, agent.TypeError) || !strings.Contains(string(res2.Data), "Answered while the database was down.") {
		t.Fatalf("run with the database down: %v\n%s", eventTypes(live), res2.Data)
	}

	pg.Start()
	up = true
	for {
		evs, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("follow after the database returned: %v (got %v)", err, eventTypes(live))
		}
		live = append(live, evs...)
	}
	got, err := fs.svc.Get(ctx, alice.ID, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != agent.Succeeded {
		t.Errorf("run = %s (%s), want succeeded", got.Status, got.Error)
	}
}
