package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// dbUsers finds users by email in the store (what auth.Service does).
type dbUsers struct{ db *store.DB }

func (u dbUsers) UserIDByEmail(ctx context.Context, email string) (string, error) {
	usr, _, err := u.db.UserByEmail(ctx, auth.NormalizeEmail(email))
	return usr.ID, err
}

// testTeams runs the team rules (teams.Service) on the store: roles,
// invitations used once, shares and the access they grant, team listing.
func testTeams(t *testing.T, db *store.DB) {
	ctx := context.Background()
	now := time.UnixMilli(1_800_000_000_000).UTC()
	clock := func() time.Time { now = now.Add(time.Millisecond); return now } // a tick per call: a stable order
	svc := teams.New(db, dbUsers{db}, clock)
	for _, id := range []string{"ann", "ben", "cat", "dan"} {
		if err := db.CreateUser(ctx, auth.User{ID: id, Email: id + "@example.com", Role: auth.RoleMember, CreatedAt: now}, "h"); err != nil {
			t.Fatal(err)
		}
	}
	kind := func(err error) errs.Kind { return errs.KindOf(err) }

	tm, err := svc.Create(ctx, "ann", "  Platform ")
	if err != nil || tm.Name != "Platform" || tm.Role != teams.RoleOwner {
		t.Fatalf("Create = %+v, %v", tm, err)
	}
	if _, err := svc.Create(ctx, "ann", ""); kind(err) != errs.Invalid {
		t.Errorf("Create(empty name) = %v, want invalid", err)
	}
	if _, err := svc.Get(ctx, "ben", tm.ID); kind(err) != errs.NotFound {
		t.Errorf("Get by a stranger = %v, want not found", err)
	}
	if _, err := svc.PutMember(ctx, "ann", tm.ID, "ben@example.com", teams.RoleMember); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutMember(ctx, "ben", tm.ID, "cat@example.com", teams.RoleMember); kind(err) != errs.Forbidden {
		t.Errorf("PutMember by a member = %v, want forbidden", err)
	}
	if _, err := svc.PutMember(ctx, "ann", tm.ID, "nobody@example.com", teams.RoleMember); kind(err) != errs.Invalid {
		t.Errorf("PutMember(unknown email) = %v, want invalid", err)
	}
	if _, err := svc.SetRole(ctx, "ann", tm.ID, "ann", teams.RoleMember); kind(err) != errs.Conflict {
		t.Errorf("the last owner stepping down = %v, want conflict", err)
	}
	if err := svc.RemoveMember(ctx, "ann", tm.ID, "ann"); kind(err) != errs.Conflict {
		t.Errorf("the last owner leaving = %v, want conflict", err)
	}
	ms, err := svc.Members(ctx, "ben", tm.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, m := range ms {
		got = append(got, m.Email+":"+string(m.Role))
	}
	if d := cmp.Diff([]string{"ann@example.com:owner", "ben@example.com:member"}, got); d != "" {
		t.Errorf("Members (-want +got):\n%s", d)
	}
	list, err := svc.List(ctx, "ben")
	if err != nil || len(list) != 1 || list[0].ID != tm.ID || list[0].Role != teams.RoleMember {
		t.Errorf("List(ben) = %+v, %v", list, err)
	}

	// Invitations: for one email, once, before expiry; only the hash is kept.
	inv, tok, err := svc.Invite(ctx, "ann", tm.ID, "Cat@Example.com", teams.RoleViewer, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if inv.TokenHash == tok || inv.TokenHash != teams.HashToken(tok) {
		t.Errorf("stored token hash %q for token %q", inv.TokenHash, tok)
	}
	var stored int
	if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM team_invitations WHERE token_hash = '"+tok+"'").Scan(&stored); err != nil || stored != 0 {
		t.Errorf("the plain token is stored (%d rows, %v)", stored, err)
	}
	if _, err := svc.Accept(ctx, "dan", "dan@example.com", tok); kind(err) != errs.Forbidden {
		t.Errorf("Accept by another email = %v, want forbidden", err)
	}
	m, err := svc.Accept(ctx, "cat", "cat@example.com", tok)
	if err != nil || m.Role != teams.RoleViewer {
		t.Fatalf("Accept = %+v, %v", m, err)
	}
	if _, err := svc.Accept(ctx, "cat", "cat@example.com", tok); kind(err) != errs.Conflict {
		t.Errorf("Accept again = %v, want conflict", err)
	}
	if _, err := svc.Accept(ctx, "cat", "cat@example.com", "tbinv_nope"); kind(err) != errs.NotFound {
		t.Errorf("Accept(unknown token) = %v, want not found", err)
	}
	_, tok2, err := svc.Invite(ctx, "ann", tm.ID, "dan@example.com", teams.RoleMember, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if _, err := svc.Accept(ctx, "dan", "dan@example.com", tok2); kind(err) != errs.Forbidden {
		t.Errorf("Accept after expiry = %v, want forbidden", err)
	}
	invs, err := svc.Invitations(ctx, "ann", tm.ID)
	if err != nil || len(invs) != 2 || invs[1].AcceptedBy != "cat" || invs[1].AcceptedAt == nil || invs[0].AcceptedAt != nil {
		t.Errorf("Invitations = %+v, %v", invs, err)
	}

	// Access: owner, team roles, shares (direct and to a team).
	sb := &sandbox.Sandbox{ID: "sb_t1", OwnerID: "ann", TeamID: tm.ID, State: sandbox.Running, Driver: "local",
		Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
	own := &sandbox.Sandbox{ID: "sb_d1", OwnerID: "dan", State: sandbox.Running, Driver: "local",
		Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
	for _, s := range []*sandbox.Sandbox{sb, own} {
		if err := db.CreateSandbox(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	back, err := db.GetSandbox(ctx, sb.ID)
	if err != nil || back.TeamID != tm.ID {
		t.Fatalf("GetSandbox team = %+v, %v", back, err)
	}
	inTeam, err := db.ListSandboxes(ctx, sandbox.ListFilter{TeamID: tm.ID})
	if err != nil || len(inTeam) != 1 || inTeam[0].ID != sb.ID {
		t.Errorf("ListSandboxes(team) = %v, %v", inTeam, err)
	}
	access := func(user string, s *sandbox.Sandbox) teams.Access {
		t.Helper()
		a, err := svc.Access(ctx, user, teams.SandboxRef{ID: s.ID, OwnerID: s.OwnerID, TeamID: s.TeamID})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, c := range []struct {
		user string
		s    *sandbox.Sandbox
		want teams.Access
	}{
		{"ann", sb, teams.Admin}, {"ben", sb, teams.Operate}, {"cat", sb, teams.Read}, {"dan", sb, teams.None},
		{"dan", own, teams.Admin}, {"ann", own, teams.None},
	} {
		if got := access(c.user, c.s); got != c.want {
			t.Errorf("Access(%s, %s) = %v, want %v", c.user, c.s.ID, got, c.want)
		}
	}
	// dan shares his own sandbox with ann (viewer), then with the team (operator).
	direct, err := svc.CreateShare(ctx, "dan", own.ID, own.OwnerID, teams.ShareRequest{Email: "ann@example.com", Role: teams.ShareViewer})
	if err != nil {
		t.Fatal(err)
	}
	if got := access("ann", own); got != teams.Read {
		t.Errorf("Access after a viewer share = %v, want read", got)
	}
	if _, err := svc.CreateShare(ctx, "dan", own.ID, own.OwnerID, teams.ShareRequest{TeamID: tm.ID, Role: teams.ShareOperator}); kind(err) != errs.Invalid {
		t.Errorf("sharing with a team one is not in = %v, want invalid", err)
	}
	if _, err := svc.CreateShare(ctx, "dan", own.ID, own.OwnerID, teams.ShareRequest{Email: "dan@example.com", Role: teams.ShareViewer}); kind(err) != errs.Invalid {
		t.Errorf("sharing with the owner = %v, want invalid", err)
	}
	if _, err := svc.CreateShare(ctx, "dan", own.ID, own.OwnerID, teams.ShareRequest{Email: "ben@example.com", Role: "boss"}); kind(err) != errs.Invalid {
		t.Errorf("share role boss = %v, want invalid", err)
	}
	if _, err := svc.PutMember(ctx, "ann", tm.ID, "dan@example.com", teams.RoleMember); err != nil {
		t.Fatal(err)
	}
	teamShare, err := svc.CreateShare(ctx, "dan", own.ID, own.OwnerID, teams.ShareRequest{TeamID: tm.ID, Role: teams.ShareOperator})
	if err != nil {
		t.Fatal(err)
	}
	// The team share makes ann (owner) and ben (member) operators, cat
	// (team viewer) only a reader.
	for user, want := range map[string]teams.Access{"ann": teams.Operate, "ben": teams.Operate, "cat": teams.Read} {
		if got := access(user, own); got != want {
			t.Errorf("Access(%s) through the team share = %v, want %v", user, got, want)
		}
	}
	shared, err := svc.SharedWith(ctx, "ann")
	if err != nil || !cmp.Equal(shared, []string{own.ID}) {
		t.Errorf("SharedWith(ann) = %v, %v", shared, err)
	}
	shares, err := svc.Shares(ctx, own.ID)
	if err != nil || len(shares) != 2 || shares[0].Email != "ann@example.com" || shares[1].TeamID != tm.ID {
		t.Errorf("Shares = %+v, %v", shares, err)
	}
	// Sharing again with the same user changes the role, not a new row.
	again, err := svc.CreateShare(ctx, "dan", own.ID, own.OwnerID, teams.ShareRequest{Email: "ann@example.com", Role: teams.ShareOperator})
	if err != nil {
		t.Fatal(err)
	}
	if sh, err := svc.GetShare(ctx, own.ID, direct.ID); err != nil || sh.Role != teams.ShareOperator {
		t.Errorf("re-share: %+v, %v (new id %s)", sh, err, again.ID)
	}
	if err := svc.DeleteShare(ctx, own.ID, teamShare.ID); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteShare(ctx, own.ID, teamShare.ID); kind(err) != errs.NotFound {
		t.Errorf("DeleteShare again = %v, want not found", err)
	}
	if got := access("ben", own); got != teams.None {
		t.Errorf("Access(ben) after the team share went = %v, want none", got)
	}
	// Leaving the team ends team access at once.
	if err := svc.RemoveMember(ctx, "ben", tm.ID, "ben"); err != nil {
		t.Fatal(err)
	}
	if got := access("ben", sb); got != teams.None {
		t.Errorf("Access(ben) after leaving = %v, want none", got)
	}
	// A second owner lets the first step down.
	if _, err := svc.SetRole(ctx, "ann", tm.ID, "dan", teams.RoleOwner); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetRole(ctx, "ann", tm.ID, "ann", teams.RoleViewer); err != nil {
		t.Errorf("an owner stepping down with another owner left: %v", err)
	}
}
