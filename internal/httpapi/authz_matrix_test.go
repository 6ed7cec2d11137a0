package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
	"github.com/techbossai/techboss/internal/teams"
)

// newTeamsHarness is newHarness on either database.
func newTeamsHarness(t *testing.T, d store.Dialect, tweak ...func(*Deps)) *harness {
	t.Helper()
	h := &harness{t: t, db: storetest.Open(t, d), clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		logs: newLogs(t), reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.auth = auth.New(auth.Options{Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 100, IPLimit: 1000, ThrottleWindow: 10 * time.Minute})
	deps := Deps{Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test"}
	for _, f := range tweak {
		f(&deps)
	}
	h.srv = httptest.NewServer(validateResponses(t, NewServer(deps)))
	t.Cleanup(h.srv.Close)
	return h
}

// TestAccessMatrix walks the real router: every route behind
// authentication must have a rule in accessRules (a new route without one
// fails here), and every sandbox route is tried by the owner, a team
// member, a team viewer, an operator, a viewer and a stranger: allowed
// where their access reaches the route's need, else 404 for the stranger
// (existence does not leak) and 403 for the others.
func TestAccessMatrix(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			testAccessMatrix(t, d)
		})
	}
}

func testAccessMatrix(t *testing.T, d store.Dialect) {
	h := newTeamsHarness(t, d)
	ctx := context.Background()
	users := map[string]*auth.User{}
	clients := map[string]*http.Client{}
	for _, n := range []string{"owner", "member", "teamviewer", "operator", "viewer", "stranger"} {
		users[n] = h.createUser(n+"@example.com", auth.RoleMember)
		clients[n] = h.mustLogin(n + "@example.com")
	}
	ts := teams.New(h.db, storeUsers{h.db}, nil)
	tm, err := ts.Create(ctx, users["owner"].ID, "T")
	if err != nil {
		t.Fatal(err)
	}
	for n, role := range map[string]teams.Role{"member": teams.RoleMember, "teamviewer": teams.RoleViewer} {
		if _, err := ts.PutMember(ctx, users["owner"].ID, tm.ID, n+"@example.com", role); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	sb := &sandbox.Sandbox{ID: "sb_matrix", OwnerID: users["owner"].ID, TeamID: tm.ID, State: sandbox.Terminated, Driver: "local",
		Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
	if err := h.db.CreateSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if err := h.db.CreateRun(ctx, agent.Run{ID: "run_matrix", SandboxID: sb.ID, OwnerID: sb.OwnerID, Prompt: "hi", Status: agent.Succeeded, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := h.db.InsertSnapshot(ctx, snapshot.Record{ID: "snap_matrix", SandboxID: sb.ID, OwnerID: sb.OwnerID, Prefix: "p", Name: "n",
		Trigger: snapshot.TriggerManual, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for n, role := range map[string]teams.ShareRole{"operator": teams.ShareOperator, "viewer": teams.ShareViewer} {
		if _, err := ts.CreateShare(ctx, users["owner"].ID, sb.ID, sb.OwnerID, teams.ShareRequest{Email: n + "@example.com", Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	level := map[string]teams.Access{"owner": teams.Admin, "member": teams.Operate, "teamviewer": teams.Read,
		"operator": teams.Operate, "viewer": teams.Read, "stranger": teams.None}

	mux := newServer(Deps{Store: h.db, Auth: h.auth}).routes().(*chi.Mux)
	seen := map[string]bool{}
	sandboxRoutes := 0
	err = chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		key := method + " " + route
		// Behind authentication? The route answers 401 without credentials.
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, fill(route, "x", "x"), strings.NewReader("{}")))
		if rec.Code != http.StatusUnauthorized {
			return nil
		}
		seen[key] = true
		rule, ok := accessRules[key]
		if !ok {
			t.Errorf("%s: no rule in accessRules (say who may call it: read, operate, admin, or skip(why))", key)
			return nil
		}
		if rule.Skip != "" {
			return nil
		}
		sandboxRoutes++
		id := map[string]string{"": sb.ID, "run": "run_matrix", "snapshot": "snap_matrix"}[rule.Via]
		path := fill(route, id, "snap_matrix")
		for _, who := range []string{"owner", "member", "teamviewer", "operator", "viewer", "stranger"} {
			r := h.do(clients[who], method, path, "{}")
			got := r.header.Get(accessHeader)
			switch {
			case level[who] >= rule.Need:
				if got != level[who].String() {
					t.Errorf("%s %s as %s: status %d, %s %q; want allowed (%s)", method, path, who, r.status, accessHeader, got, level[who])
				}
			case level[who] == teams.None:
				if r.status != http.StatusNotFound || got != "" || !strings.Contains(string(r.body), "not found") {
					t.Errorf("%s %s as %s: status %d %s; want 404", method, path, who, r.status, r.body)
				}
			default:
				if r.status != http.StatusForbidden || got != "" {
					t.Errorf("%s %s as %s: status %d %s; want 403", method, path, who, r.status, r.body)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key := range accessRules {
		if !seen[key] {
			t.Errorf("accessRules names %s, which is not an authenticated route", key)
		}
	}
	if sandboxRoutes < 40 {
		t.Errorf("only %d sandbox routes tried; the walk missed some", sandboxRoutes)
	}
	// A stranger's 404 is the one a missing sandbox gets.
	missing := h.do(clients["stranger"], "GET", "/sandbox/sb_nope", nil)
	hidden := h.do(clients["stranger"], "GET", "/sandbox/"+sb.ID, nil)
	if missing.status != hidden.status || missing.errBody(t).Message != hidden.errBody(t).Message {
		t.Errorf("missing %d %s vs someone else's %d %s: they differ", missing.status, missing.body, hidden.status, hidden.body)
	}
}

// fill puts id in a route's {id}, other in {other}, and "x" everywhere else.
func fill(route, id, other string) string {
	p := strings.ReplaceAll(route, "{id}", id)
	p = strings.ReplaceAll(p, "{other}", other)
	p = strings.ReplaceAll(p, "*", "x")
	for strings.Contains(p, "{") {
		i, j := strings.IndexByte(p, '{'), strings.IndexByte(p, '}')
		p = p[:i] + "x" + p[j+1:]
	}
	return p
}
