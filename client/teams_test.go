package client_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestClientTeams: a team, a member by email, an invitation accepted once,
// a share that lets the other user read the sandbox's shares and an
// unshare that ends it.
func TestClientTeams(t *testing.T) {
	ctx := context.Background()
	db := storetest.OpenSQLite(t)
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams})
	sec, err := secrets.New(db, bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Store: db, Auth: svc, Secrets: sec}))
	t.Cleanup(srv.Close)
	login := func(email string) (*client.Client, *auth.User) {
		u, err := svc.CreateUser(ctx, email, "a long password", auth.RoleMember)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := client.New(srv.URL)
		if _, err := c.Login(ctx, email, "a long password"); err != nil {
			t.Fatal(err)
		}
		return c, u
	}
	ann, annUser := login("ann@example.com")
	ben, benUser := login("ben@example.com")
	cat, _ := login("cat@example.com")

	tm, err := ann.CreateTeam(ctx, "Platform")
	if err != nil || tm.Role != "owner" {
		t.Fatalf("CreateTeam = %+v, %v", tm, err)
	}
	if _, err := ann.PutTeamMember(ctx, tm.ID, "ben@example.com", "viewer"); err != nil {
		t.Fatal(err)
	}
	if m, err := ann.SetTeamRole(ctx, tm.ID, benUser.ID, "member"); err != nil || m.Role != "member" {
		t.Fatalf("SetTeamRole = %+v, %v", m, err)
	}
	inv, err := ann.Invite(ctx, tm.ID, "cat@example.com", "viewer", time.Hour)
	if err != nil || inv.Token == "" {
		t.Fatalf("Invite = %+v, %v", inv, err)
	}
	if m, err := cat.AcceptInvitation(ctx, inv.Token); err != nil || m.Role != "viewer" {
		t.Fatalf("AcceptInvitation = %+v, %v", m, err)
	}
	var ce *client.Error
	if _, err := cat.AcceptInvitation(ctx, inv.Token); !errors.As(err, &ce) || ce.StatusCode != 409 {
		t.Fatalf("AcceptInvitation again = %v, want 409", err)
	}
	full, err := ben.Team(ctx, tm.ID)
	if err != nil || len(full.Members) != 3 {
		t.Fatalf("Team = %+v, %v", full, err)
	}
	if ts, err := cat.Teams(ctx); err != nil || len(ts) != 1 || ts[0].Role != "viewer" {
		t.Fatalf("Teams = %+v, %v", ts, err)
	}

	now := time.Now()
	if err := db.CreateSandbox(ctx, &sandbox.Sandbox{ID: "sb_client", OwnerID: annUser.ID, State: sandbox.Terminated, Driver: "local",
		Spec: sandbox.Spec{ImageBase: "host"}, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Shares(ctx, "sb_client"); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("Shares before a share = %v, want 404", err)
	}
	sh, err := ann.ShareWithTeam(ctx, "sb_client", tm.ID, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ann.Share(ctx, "sb_client", "ben@example.com", "operator"); err != nil {
		t.Fatal(err)
	}
	list, err := cat.Shares(ctx, "sb_client")
	if err != nil || len(list) != 2 {
		t.Fatalf("Shares as a team viewer = %+v, %v", list, err)
	}
	if _, err := cat.Share(ctx, "sb_client", "ben@example.com", "viewer"); !errors.As(err, &ce) || ce.StatusCode != 403 {
		t.Fatalf("Share by a viewer = %v, want 403", err)
	}
	if err := ann.Unshare(ctx, "sb_client", sh.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Shares(ctx, "sb_client"); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("Shares after the unshare = %v, want 404", err)
	}
	if err := ann.PutTeamSecret(ctx, tm.ID, "deploy", "team-value-xyz"); err != nil {
		t.Fatal(err)
	}
	if err := ben.PutTeamSecret(ctx, tm.ID, "deploy", "x"); !errors.As(err, &ce) || ce.StatusCode != 403 {
		t.Fatalf("PutTeamSecret by a member = %v, want 403", err)
	}
	if list, err := ben.TeamSecrets(ctx, tm.ID); err != nil || len(list) != 1 || list[0].Name != "deploy" {
		t.Fatalf("TeamSecrets = %+v, %v", list, err)
	}
	if err := ann.DeleteTeamSecret(ctx, tm.ID, "deploy"); err != nil {
		t.Fatal(err)
	}
	if err := ann.RemoveTeamMember(ctx, tm.ID, benUser.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ben.Team(ctx, tm.ID); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("Team after removal = %v, want 404", err)
	}
	if err := cat.DeleteTeam(ctx, tm.ID); !errors.As(err, &ce) || ce.StatusCode != 403 {
		t.Fatalf("DeleteTeam by a viewer = %v, want 403", err)
	}
	if err := ann.DeleteTeam(ctx, tm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ann.Team(ctx, tm.ID); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("Team after DeleteTeam = %v, want 404", err)
	}
}
