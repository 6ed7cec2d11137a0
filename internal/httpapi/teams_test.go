package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// streamEnds waits for an SSE stream to end; the bound only keeps a
// broken revoke from hanging the test.
func streamEnds(t *testing.T, evs <-chan sseEvent, what string) {
	t.Helper()
	tm := time.NewTimer(time.Minute)
	defer tm.Stop()
	for {
		select {
		case _, ok := <-evs:
			if !ok {
				return
			}
		case <-tm.C:
			t.Fatalf("%s: the stream is still open a minute after the revoke", what)
		}
	}
}

// wantClosed reads until the WebSocket closes: with 1008 (access revoked).
func wantClosed(t *testing.T, c *websocket.Conn, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue // output still in flight
		}
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("%s after the revoke: %v, want closed with 1008", what, err)
		}
		return
	}
}

// readOnlyFrame reads a viewer's terminal until the server's error frame
// saying input is ignored.
func readOnlyFrame(t *testing.T, tm *term) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		typ, b, err := tm.c.Read(ctx)
		if err != nil {
			t.Fatalf("viewer's terminal ended before the read-only notice: %v", err)
		}
		if typ == websocket.MessageText && strings.Contains(string(b), "read-only") {
			return
		}
	}
}

// TestSharing runs a shared sandbox on the real local driver: a viewer
// reads and follows but may not operate (403), an operator execs and
// writes but may not delete or share, a stranger gets 404; revoking a
// share ends the viewer's open log stream and the operator's terminal at
// once, while the owner's stream goes on.
func TestSharing(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	for _, n := range []string{"carol", "dave"} {
		h.createUser(n+"@example.com", auth.RoleMember)
	}
	alice, carol, dave, stranger := h.alice, h.mustLogin("carol@example.com"), h.mustLogin("dave@example.com"), h.bob
	id := h.createSandbox(alice, map[string]any{})
	base := "/sandbox/" + id

	shareWith := func(email, role string) teams.Share {
		t.Helper()
		r := h.do(alice, "POST", base+"/shares", map[string]any{"user": email, "role": role})
		wantStatus(t, r, http.StatusCreated)
		var sh teams.Share
		r.data(t, &sh)
		return sh
	}
	carolShare := shareWith("carol@example.com", "viewer")
	daveShare := shareWith("dave@example.com", "operator")
	wantField(t, h.do(alice, "POST", base+"/shares", map[string]any{"user": "nobody@example.com", "role": "viewer"}), 422, "user")
	wantField(t, h.do(alice, "POST", base+"/shares", map[string]any{"user": "carol@example.com", "role": "boss"}), 422, "role")

	// The stranger: 404 everywhere, as for a sandbox that does not exist.
	for _, p := range []string{base, base + "/files", base + "/shares"} {
		wantStatus(t, h.do(stranger, "GET", p, nil), http.StatusNotFound)
	}
	wantStatus(t, h.do(stranger, "POST", base+"/shares", map[string]any{"user": "bob@example.com", "role": "operator"}), http.StatusNotFound)

	// The operator execs and writes; the viewer reads what was written.
	r := h.do(dave, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", "echo hi from dave"}})
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), "hi from dave") || r.header.Get(accessHeader) != "operate" {
		t.Fatalf("operator exec: %s (%s %q)", r.body, accessHeader, r.header.Get(accessHeader))
	}
	wantStatus(t, h.do(dave, "PUT", base+"/files/note.txt", "from dave"), http.StatusOK)
	r = h.do(carol, "GET", base+"/files/note.txt", nil)
	if r.status != http.StatusOK || string(r.body) != "from dave" || r.header.Get(accessHeader) != "read" {
		t.Fatalf("viewer read: %d %q (%q)", r.status, r.body, r.header.Get(accessHeader))
	}
	var view sandboxView
	h.do(carol, "GET", base, nil).data(t, &view)
	if view.ID != id {
		t.Fatalf("viewer GET sandbox: %+v", view)
	}
	// What each may not do: 403, not 404 (they know it exists).
	for _, c := range []struct {
		who          string
		c            *http.Client
		method, path string
		body         any
	}{
		{"viewer", carol, "POST", base + "/exec?wait=true", map[string]any{"command": []string{"true"}}},
		{"viewer", carol, "PUT", base + "/files/x.txt", "x"},
		{"viewer", carol, "POST", base + "/processes", map[string]any{"command": []string{"true"}}},
		{"viewer", carol, "DELETE", base, nil},
		{"operator", dave, "DELETE", base, nil},
		{"operator", dave, "POST", base + "/shares", map[string]any{"user": "bob@example.com", "role": "viewer"}},
		{"operator", dave, "DELETE", base + "/shares/" + carolShare.ID, nil},
	} {
		if r := h.do(c.c, c.method, c.path, c.body); r.status != http.StatusForbidden {
			t.Errorf("%s %s %s: %d %s, want 403", c.who, c.method, c.path, r.status, r.body)
		}
	}
	var shared listSandboxesResponse
	h.do(carol, "GET", "/sandbox?shared=true", nil).data(t, &shared)
	if len(shared.Sandboxes) != 1 || shared.Sandboxes[0].ID != id {
		t.Fatalf("?shared=true as the viewer: %+v", shared)
	}
	h.do(stranger, "GET", "/sandbox?shared=true", nil).data(t, &shared)
	if len(shared.Sandboxes) != 0 {
		t.Fatalf("?shared=true as a stranger: %+v", shared)
	}
	wantField(t, h.do(carol, "GET", "/sandbox?shared=yes", nil), 422, "shared")
	var shares listSharesResponse
	h.do(carol, "GET", base+"/shares", nil).data(t, &shares)
	roles := map[string]teams.ShareRole{}
	for _, sh := range shares.Shares {
		roles[sh.Email] = sh.Role
	}
	if len(roles) != 2 || roles["carol@example.com"] != teams.ShareViewer || roles["dave@example.com"] != teams.ShareOperator {
		t.Fatalf("shares: %+v", shares)
	}

	// Live: the operator starts a process; the viewer and the owner follow
	// its output; the operator holds a terminal.
	r = h.do(dave, "POST", base+"/processes", map[string]any{"command": []string{"cat"}})
	wantStatus(t, r, http.StatusCreated)
	var p sandbox.Process
	r.data(t, &p)
	logs := base + "/processes/" + strconv.Itoa(p.PID) + "/logs?follow=true"
	carolEvs, _ := h.liveSSE(carol, logs)
	aliceEvs, _ := h.liveSSE(alice, logs)
	wantStatus(t, h.do(dave, "POST", base+"/processes/"+strconv.Itoa(p.PID)+"/stdin", "one\n"), http.StatusNoContent)
	waitEvent(t, carolEvs, "stdout", "one")
	waitEvent(t, aliceEvs, "stdout", "one")
	tm := h.mustDialPTY(dave, id, "")
	// The viewer follows the operator's terminal, read-only; she cannot
	// open one of her own.
	if _, res, err := h.dialPTY(carol, id, ""); err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer opening a terminal: %v %v, want 403", err, res)
	}
	ctm := h.mustDialPTY(carol, id, "?session_id="+tm.id)
	tm.send("echo shared-$((6*7))\n")
	ctm.waitFor("shared-42")
	ctm.send("touch /workspace/viewer-typed\n")
	readOnlyFrame(t, ctm)
	r = h.do(dave, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", "test -e /workspace/viewer-typed; echo $?"}})
	if !strings.Contains(string(r.body), `"stdout":"1\n"`) {
		t.Fatalf("the viewer's keystrokes reached the terminal: %s", r.body)
	}

	// Revoking the viewer ends her stream; she no longer sees the sandbox.
	wantStatus(t, h.do(alice, "DELETE", base+"/shares/"+carolShare.ID, nil), http.StatusNoContent)
	streamEnds(t, carolEvs, "viewer's process log")
	wantClosed(t, ctm.c, "viewer's terminal")
	wantStatus(t, h.do(carol, "GET", base, nil), http.StatusNotFound)
	// Revoking the operator closes his terminal.
	wantStatus(t, h.do(alice, "DELETE", base+"/shares/"+daveShare.ID, nil), http.StatusNoContent)
	wantClosed(t, tm.c, "operator's terminal")
	wantStatus(t, h.do(dave, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"true"}}), http.StatusNotFound)
	// The owner's stream goes on.
	wantStatus(t, h.do(alice, "POST", base+"/processes/"+strconv.Itoa(p.PID)+"/stdin", "two\n"), http.StatusNoContent)
	waitEvent(t, aliceEvs, "stdout", "two")
	wantStatus(t, h.do(alice, "DELETE", base+"/shares/"+daveShare.ID, nil), http.StatusNotFound)
}

// TestTeamSandboxes: a sandbox created in a team's scope (X-Team) is listed
// with ?team=, operated by a member and read by a team viewer; removing
// the member from the team ends their access and their open stream.
func TestTeamSandboxes(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	h.createUser("vic@example.com", auth.RoleMember)
	alice, bob, vic := h.alice, h.bob, h.mustLogin("vic@example.com")
	r := h.do(alice, "POST", "/teams", map[string]any{"name": "Platform"})
	wantStatus(t, r, http.StatusCreated)
	var tm teams.Team
	r.data(t, &tm)
	wantStatus(t, h.do(alice, "POST", "/teams/"+tm.ID+"/members", map[string]any{"email": "bob@example.com", "role": "member"}), http.StatusOK)
	wantStatus(t, h.do(alice, "POST", "/teams/"+tm.ID+"/members", map[string]any{"email": "vic@example.com", "role": "viewer"}), http.StatusOK)
	// A viewer may not create in the team; a stranger's team is refused.
	wantStatus(t, h.do(vic, "POST", "/sandbox", map[string]any{}, "X-Team", tm.ID), http.StatusForbidden)
	wantField(t, h.do(alice, "POST", "/sandbox?team=tm_nope", map[string]any{}), http.StatusUnprocessableEntity, "team")

	r = h.do(bob, "POST", "/sandbox", map[string]any{}, "X-Team", tm.ID)
	wantStatus(t, r, http.StatusOK)
	var created createSandboxResponse
	r.data(t, &created)
	id := created.SandboxID
	personal := h.createSandbox(alice, map[string]any{})

	list := func(c *http.Client, q string) []string {
		t.Helper()
		r := h.do(c, "GET", "/sandbox"+q, nil)
		wantStatus(t, r, http.StatusOK)
		var l listSandboxesResponse
		r.data(t, &l)
		ids := []string{}
		for _, sb := range l.Sandboxes {
			ids = append(ids, sb.ID)
		}
		return ids
	}
	if got := list(vic, "?team="+tm.ID); len(got) != 1 || got[0] != id {
		t.Errorf("team list as viewer = %v, want [%s]", got, id)
	}
	if got := list(alice, ""); len(got) != 1 || got[0] != personal {
		t.Errorf("alice's own list = %v, want only [%s]: the personal scope is unchanged", got, personal)
	}
	wantStatus(t, h.do(h.client(), "GET", "/sandbox?team="+tm.ID, nil), http.StatusUnauthorized)

	// alice, a team owner, administers bob's team sandbox; vic reads it.
	wantStatus(t, h.do(alice, "POST", "/sandbox/"+id+"/exec?wait=true", map[string]any{"command": []string{"true"}}), http.StatusOK)
	wantStatus(t, h.do(vic, "GET", "/sandbox/"+id+"/files", nil), http.StatusOK)
	wantStatus(t, h.do(vic, "POST", "/sandbox/"+id+"/exec?wait=true", map[string]any{"command": []string{"true"}}), http.StatusForbidden)

	// vic follows the build log stream... of a running process instead
	// (it stays open): removing vic from the team ends it.
	r = h.do(bob, "POST", "/sandbox/"+id+"/processes", map[string]any{"command": []string{"cat"}})
	wantStatus(t, r, http.StatusCreated)
	var p sandbox.Process
	r.data(t, &p)
	evs, _ := h.liveSSE(vic, "/sandbox/"+id+"/processes/"+strconv.Itoa(p.PID)+"/logs?follow=true")
	wantStatus(t, h.do(bob, "POST", "/sandbox/"+id+"/processes/"+strconv.Itoa(p.PID)+"/stdin", "x\n"), http.StatusNoContent)
	waitEvent(t, evs, "stdout", "x")
	var vicUser teamView
	h.do(alice, "GET", "/teams/"+tm.ID, nil).data(t, &vicUser)
	vicID := ""
	for _, m := range vicUser.Members {
		if m.Email == "vic@example.com" {
			vicID = m.UserID
		}
	}
	wantStatus(t, h.do(alice, "DELETE", "/teams/"+tm.ID+"/members/"+vicID, nil), http.StatusNoContent)
	streamEnds(t, evs, "removed member's process log")
	wantStatus(t, h.do(vic, "GET", "/sandbox/"+id, nil), http.StatusNotFound)
	wantField(t, h.do(vic, "GET", "/sandbox?team="+tm.ID, nil), http.StatusUnprocessableEntity, "team")
}

// TestTeamsAPI runs the team routes on both databases: create, members,
// roles, the last owner, invitations (shown once, one use, one email,
// expiry).
func TestTeamsAPI(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			h := newTeamsHarness(t, d)
			for _, n := range []string{"ann", "ben", "cat"} {
				h.createUser(n+"@example.com", auth.RoleMember)
			}
			ann, ben, cat := h.mustLogin("ann@example.com"), h.mustLogin("ben@example.com"), h.mustLogin("cat@example.com")
			wantField(t, h.do(ann, "POST", "/teams", map[string]any{"name": ""}), 422, "name")
			r := h.do(ann, "POST", "/teams", map[string]any{"name": "Platform"})
			wantStatus(t, r, http.StatusCreated)
			var tm teams.Team
			r.data(t, &tm)
			if tm.Role != teams.RoleOwner || !strings.HasPrefix(tm.ID, "tm_") {
				t.Fatalf("created %+v", tm)
			}
			team := "/teams/" + tm.ID
			wantStatus(t, h.do(ben, "GET", team, nil), http.StatusNotFound)

			r = h.do(ann, "POST", team+"/invitations", map[string]any{"email": "ben@example.com", "role": "member"})
			wantStatus(t, r, http.StatusCreated)
			var inv invitationCreated
			r.data(t, &inv)
			if !strings.HasPrefix(inv.Token, "tbinv_") || inv.AcceptURL != "/invitations/"+inv.Token+"/accept" {
				t.Fatalf("invitation %+v", inv)
			}
			r = h.do(ann, "GET", team+"/invitations", nil)
			if strings.Contains(string(r.body), inv.Token) {
				t.Fatalf("the invitation list shows the token: %s", r.body)
			}
			wantStatus(t, h.do(ben, "POST", team+"/invitations", map[string]any{"email": "x@example.com"}), http.StatusNotFound)
			wantStatus(t, h.do(cat, "POST", inv.AcceptURL, nil), http.StatusForbidden) // another email
			wantStatus(t, h.do(ben, "POST", inv.AcceptURL, nil), http.StatusOK)
			wantStatus(t, h.do(ben, "POST", inv.AcceptURL, nil), http.StatusConflict)
			wantStatus(t, h.do(ben, "POST", "/invitations/tbinv_nope/accept", nil), http.StatusNotFound)
			wantStatus(t, h.do(ben, "POST", team+"/invitations", map[string]any{"email": "x@example.com"}), http.StatusForbidden)

			r = h.do(ann, "POST", team+"/invitations", map[string]any{"email": "cat@example.com", "role": "viewer", "expires_in_s": 60})
			wantStatus(t, r, http.StatusCreated)
			var late invitationCreated
			r.data(t, &late)
			h.clock.Advance(time.Minute)
			wantStatus(t, h.do(cat, "POST", late.AcceptURL, nil), http.StatusForbidden)
			wantField(t, h.do(ann, "POST", team+"/invitations", map[string]any{"email": "cat@example.com", "expires_in_s": 1 << 40}), 422, "expires_in_s")

			var lt listTeamsResponse
			h.do(ben, "GET", "/teams", nil).data(t, &lt)
			if len(lt.Teams) != 1 || lt.Teams[0].Role != teams.RoleMember {
				t.Fatalf("ben's teams: %+v", lt)
			}
			var view teamView
			h.do(ben, "GET", team, nil).data(t, &view)
			if len(view.Members) != 2 {
				t.Fatalf("team view %+v", view)
			}
			ids := map[string]string{}
			for _, m := range view.Members {
				ids[m.Email] = m.UserID
			}
			annID, benID := ids["ann@example.com"], ids["ben@example.com"]
			wantStatus(t, h.do(ann, "PUT", team+"/members/"+annID, map[string]any{"role": "member"}), http.StatusConflict)
			wantField(t, h.do(ann, "PUT", team+"/members/"+benID, map[string]any{"role": "boss"}), 422, "role")
			wantStatus(t, h.do(ann, "PUT", team+"/members/"+benID, map[string]any{"role": "owner"}), http.StatusOK)
			wantStatus(t, h.do(ann, "DELETE", team+"/members/"+annID, nil), http.StatusNoContent) // leaves: ben owns it now
			wantStatus(t, h.do(ann, "GET", team, nil), http.StatusNotFound)
			wantStatus(t, h.do(ben, "DELETE", team+"/members/"+benID, nil), http.StatusConflict) // the last owner
		})
	}
}

// sharedRunFollowed shares a new sandbox of alice's with bob as role,
// starts a slow run in it that alice follows and has bob follow it too;
// it returns once both streams have text. The streams close at cleanup.
func (h *runHarness) sharedRunFollowed(t *testing.T, role string) (sandboxID string, sh teams.Share, runID string, ownBR, bobBR *bufio.Reader) {
	t.Helper()
	sandboxID = h.newSandbox(h.alice)
	r := h.do(h.alice, "POST", "/sandbox/"+sandboxID+"/shares", map[string]any{"user": "bob@example.com", "role": role})
	wantStatus(t, r, http.StatusCreated)
	r.data(t, &sh)
	own := h.open(h.alice, "POST", "/sandbox/"+sandboxID+"/claude?format=events", map[string]any{"prompt": "talk"})
	t.Cleanup(func() { own.Body.Close() })
	runID = own.Header.Get("X-Run-ID")
	ownBR = bufio.NewReader(own.Body)
	readTyped(t, ownBR, func(e typedEvent) bool { return e.event == "text_delta" })
	theirs := h.open(h.bob, "GET", "/runs/"+runID+"/events", nil)
	t.Cleanup(func() { theirs.Body.Close() })
	want := map[string]string{"operator": "operate", "viewer": "read"}[role]
	if theirs.StatusCode != http.StatusOK || theirs.Header.Get(accessHeader) != want {
		t.Fatalf("bob follows the run: %d %s", theirs.StatusCode, theirs.Header.Get(accessHeader))
	}
	bobBR = bufio.NewReader(theirs.Body)
	readTyped(t, bobBR, func(e typedEvent) bool { return e.event == "text_delta" })
	return sandboxID, sh, runID, ownBR, bobBR
}

// TestRevokeEndsRunStream: two users on one run. Bob, sharing the sandbox
// as an operator, follows the owner's run; the owner unshares while the
// run still streams: Bob's stream ends before the run's done event, the
// owner's own stream goes on to it.
func TestRevokeEndsRunStream(t *testing.T) {
	t.Parallel()
	h := newRunHarness(t, modeltest.Slow(strings.Repeat("a long answer streamed slowly ", 400), 20*time.Millisecond))
	sb, sh, runID, ownBR, bobBR := h.sharedRunFollowed(t, "operator")
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+sb+"/shares/"+sh.ID, nil), http.StatusNoContent)
	rest := readTyped(t, bobBR, nil) // returns when the stream ends
	for _, e := range rest {
		if e.event == "done" {
			t.Fatalf("bob's stream ran to the run's end (%d events after the revoke): the revoke did not end it", len(rest))
		}
	}
	wantStatus(t, h.do(h.bob, "GET", "/runs/"+runID, nil), http.StatusNotFound)
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), http.StatusAccepted)
	ownRest := readTyped(t, ownBR, nil)
	if len(ownRest) == 0 || ownRest[len(ownRest)-1].event != "done" {
		t.Fatalf("the owner's stream ended without done: %+v", ownRest)
	}
}

// TestRevokeOnAnotherReplica: a share removed through another replica
// ends the stream this one serves to the shared user (at its next access
// check), and the owner's stream goes on.
func TestRevokeOnAnotherReplica(t *testing.T) {
	t.Parallel()
	h := newRunHarness(t, modeltest.Slow(strings.Repeat("a long answer streamed slowly ", 2000), 20*time.Millisecond))
	other := h.replica()
	aliceTok := h.newToken(h.alice, "replica").Token
	sb, sh, runID, ownBR, bobBR := h.sharedRunFollowed(t, "viewer")
	wantStatus(t, h.do(&http.Client{}, "DELETE", other+"/sandbox/"+sb+"/shares/"+sh.ID, nil, "Authorization", "Bearer "+aliceTok), http.StatusNoContent)
	rest := readTyped(t, bobBR, nil) // returns when the stream ends
	for _, e := range rest {
		if e.event == "done" {
			t.Fatalf("bob's stream ran to the run's end (%d events after the revoke on the other replica)", len(rest))
		}
	}
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), http.StatusAccepted)
	ownRest := readTyped(t, ownBR, nil)
	if len(ownRest) == 0 || ownRest[len(ownRest)-1].event != "done" {
		t.Fatalf("the owner's stream ended without done: %+v", ownRest)
	}
}

// TestAuditTeams: each team and share change is in the audit log with
// who did it and what it touched; an invitation's token is in no entry.
func TestAuditTeams(t *testing.T) {
	var al *audit.Log
	h := newTeamsHarness(t, store.SQLite, func(d *Deps) {
		al = audit.New(audit.Options{Repo: d.Store, Clock: d.Clock})
		d.Audit = al
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = al.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	annUser := h.createUser("ann@example.com", auth.RoleMember)
	h.createUser("ben@example.com", auth.RoleMember)
	h.createUser("root@example.com", auth.RoleAdmin)
	ann, ben, root := h.mustLogin("ann@example.com"), h.mustLogin("ben@example.com"), h.mustLogin("root@example.com")

	var gone teams.Team
	h.do(ann, "POST", "/teams", map[string]any{"name": "Gone"}).data(t, &gone)
	wantStatus(t, h.do(ann, "DELETE", "/teams/"+gone.ID, nil), http.StatusNoContent)
	var tm teams.Team
	h.do(ann, "POST", "/teams", map[string]any{"name": "Audited"}).data(t, &tm)
	var inv invitationCreated
	h.do(ann, "POST", "/teams/"+tm.ID+"/invitations", map[string]any{"email": "ben@example.com"}).data(t, &inv)
	wantStatus(t, h.do(ben, "POST", inv.AcceptURL, nil), http.StatusOK)
	now := time.Now()
	if err := h.db.CreateSandbox(ctx, &sandbox.Sandbox{ID: "sb_audit", OwnerID: annUser.ID, State: sandbox.Terminated, Driver: "local",
		Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}); err != nil {
		t.Fatal(err)
	}
	var sh teams.Share
	h.do(ann, "POST", "/sandbox/sb_audit/shares", map[string]any{"team": tm.ID, "role": "viewer"}).data(t, &sh)
	wantStatus(t, h.do(ann, "DELETE", "/sandbox/sb_audit/shares/"+sh.ID, nil), http.StatusNoContent)
	if err := al.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := h.do(root, "GET", "/audit/export", nil)
	wantStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.body), inv.Token) || strings.Contains(string(r.body), strings.TrimPrefix(inv.Token, "tbinv_")) {
		t.Fatalf("the invitation token is in the audit log:\n%s", r.body)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Action == "team.create" && strings.HasSuffix(e.Resource, gone.ID) {
			continue // the team deleted below
		}
		got[e.Action] = e.Email + " " + e.Resource
	}
	for action, want := range map[string]string{
		"team.create": "ann@example.com team:" + tm.ID,
		"team.invite": "ann@example.com team:" + tm.ID + "/invitation:" + inv.ID,
		"team.join":   "ben@example.com team:" + tm.ID,
		"share":       "ann@example.com sandbox:sb_audit/share:" + sh.ID,
		"unshare":     "ann@example.com sandbox:sb_audit/share:" + sh.ID,
		"team.delete": "ann@example.com team:" + gone.ID,
	} {
		if got[action] != want {
			t.Errorf("audit %s: %q, want %q", action, got[action], want)
		}
	}
}

// TestDeleteTeam: DELETE /teams/{team} on both databases. A member gets
// 403, a stranger 404; while the team owns a sandbox that is not
// terminated the owner gets 409 saying so; once it is terminated the team
// goes with its members, invitations, shares to it and budget, and its
// terminated sandboxes stay. An admin deletes any team.
func TestDeleteTeam(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			h := newTeamsHarness(t, d)
			ctx := context.Background()
			h.createUser("root@example.com", auth.RoleAdmin)
			annUser := h.createUser("ann@example.com", auth.RoleMember)
			h.createUser("ben@example.com", auth.RoleMember)
			h.createUser("dan@example.com", auth.RoleMember)
			ann, ben, dan, root := h.mustLogin("ann@example.com"), h.mustLogin("ben@example.com"), h.mustLogin("dan@example.com"), h.mustLogin("root@example.com")
			var tm teams.Team
			h.do(ann, "POST", "/teams", map[string]any{"name": "Doomed"}).data(t, &tm)
			team := "/teams/" + tm.ID
			wantStatus(t, h.do(ann, "POST", team+"/members", map[string]any{"email": "ben@example.com", "role": "member"}), http.StatusOK)
			wantStatus(t, h.do(ann, "POST", team+"/invitations", map[string]any{"email": "dan@example.com"}), http.StatusCreated)
			wantStatus(t, h.do(ann, "PUT", team+"/budget", map[string]any{"monthly_usd": 5}), http.StatusOK)
			now := time.Now()
			mk := func(id, teamID string, st sandbox.State) *sandbox.Sandbox {
				sb := &sandbox.Sandbox{ID: id, OwnerID: annUser.ID, TeamID: teamID, State: st, Driver: "local",
					Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
				if err := h.db.CreateSandbox(ctx, sb); err != nil {
					t.Fatal(err)
				}
				return sb
			}
			live := mk("sb_live", tm.ID, sandbox.Running)
			mk("sb_dead", tm.ID, sandbox.Terminated)
			mk("sb_mine", "", sandbox.Terminated)
			wantStatus(t, h.do(ann, "POST", "/sandbox/sb_mine/shares", map[string]any{"team": tm.ID, "role": "viewer"}), http.StatusCreated)
			wantStatus(t, h.do(ben, "GET", "/sandbox/sb_mine/shares", nil), http.StatusOK)

			wantStatus(t, h.do(ben, "DELETE", team, nil), http.StatusForbidden)
			wantStatus(t, h.do(dan, "DELETE", team, nil), http.StatusNotFound)
			r := h.do(ann, "DELETE", team, nil)
			wantStatus(t, r, http.StatusConflict)
			if !strings.Contains(string(r.body), "1 sandbox(es) that are not terminated") {
				t.Errorf("409 body does not say why: %s", r.body)
			}
			wantStatus(t, h.do(ben, "GET", team, nil), http.StatusOK) // nothing went

			live.State = sandbox.Terminated
			if err := h.db.UpdateSandbox(ctx, live); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, h.do(ann, "DELETE", team, nil), http.StatusNoContent)
			wantStatus(t, h.do(ann, "GET", team, nil), http.StatusNotFound)
			wantStatus(t, h.do(ann, "DELETE", team, nil), http.StatusNotFound)
			wantStatus(t, h.do(ben, "GET", "/sandbox/sb_mine/shares", nil), http.StatusNotFound)
			var lt listTeamsResponse
			h.do(ben, "GET", "/teams", nil).data(t, &lt)
			if len(lt.Teams) != 0 {
				t.Errorf("ben's teams after delete: %+v", lt.Teams)
			}
			for _, tbl := range []string{"team_members", "team_invitations", "team_budgets", "teams"} {
				col := "team_id"
				if tbl == "teams" {
					col = "id"
				}
				var n int
				if err := h.db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tbl+" WHERE "+col+" = '"+tm.ID+"'").Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("%d rows left in %s", n, tbl)
				}
			}
			var shares int
			if err := h.db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM sandbox_shares WHERE team_id = '"+tm.ID+"'").Scan(&shares); err != nil || shares != 0 {
				t.Errorf("shares to the deleted team: %d, %v", shares, err)
			}
			if sb, err := h.db.GetSandbox(ctx, "sb_dead"); err != nil || sb.TeamID != tm.ID {
				t.Errorf("terminated team sandbox after delete: %+v, %v", sb, err)
			}

			var other teams.Team
			h.do(ben, "POST", "/teams", map[string]any{"name": "Other"}).data(t, &other)
			wantStatus(t, h.do(root, "DELETE", "/teams/"+other.ID, nil), http.StatusNoContent)
			wantStatus(t, h.do(root, "DELETE", "/teams/tm_nope", nil), http.StatusNotFound)
			wantStatus(t, h.do(ben, "GET", "/teams/"+other.ID, nil), http.StatusNotFound)
		})
	}
}
