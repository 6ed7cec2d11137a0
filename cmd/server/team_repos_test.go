package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
)

// TestTeamRepoCredential: a team owner stores a git token as a team
// secret; a member creates a sandbox in the team's scope cloning with
// repo credential "team:gh" through the broker. Outside the team's scope,
// for a stranger and for a former member the name is no such secret
// (422). Deleting the team secret revokes the clone's grant as deleting
// a user's secret does, and leaving the team ends the member's use of it
// at the next fetch. The token is in no answer, sandbox file nor the log.
func TestTeamRepoCredential(t *testing.T) {
	const pat = "ghp_TEAMpat0123456789abcdefTEAMREPO"
	git := newGitServer(t, pat)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"TECHBOSS_NETWORK_ALLOW": "127.0.0.1/32", // the git server is on loopback
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	login := func(email, pw string, opts ...client.Option) (*client.Client, string) {
		t.Helper()
		c, _ := client.New(in.url, opts...)
		if _, err := c.Login(ctx, email, pw); err != nil {
			t.Fatal(err)
		}
		tok, err := c.CreateToken(ctx, "team-repos")
		if err != nil {
			t.Fatal(err)
		}
		return c, tok.Token
	}
	admin, adminTok := login(env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"])
	call := bearerCaller(t, ctx, in.url, pat)
	field := errorField
	for _, email := range []string{"bob@example.com", "sam@example.com"} {
		call(adminTok, "POST", "/auth/users", `{"email":"`+email+`","password":"a long password 123"}`, http.StatusCreated)
	}
	_, samTok := login("sam@example.com", "a long password 123")
	tm, err := admin.CreateTeam(ctx, "Repos")
	if err != nil {
		t.Fatal(err)
	}
	bobMember, err := admin.PutTeamMember(ctx, tm.ID, "bob@example.com", "member")
	if err != nil {
		t.Fatal(err)
	}
	bob, bobTok := login("bob@example.com", "a long password 123", client.WithTeam(tm.ID))
	if err := admin.PutTeamSecret(ctx, tm.ID, "gh", pat); err != nil {
		t.Fatal(err)
	}
	repoURL := git.url + "/owner/app.git"
	spec := func(cred string) string {
		return `{"image_base":"host","repo":{"url":"` + repoURL + `","ref":"main","credential":"` + cred + `"}}`
	}

	// Not in a team's scope, a stranger, or another team's full name: no such secret.
	if f := field(call(bobTok, "POST", "/sandbox", spec("team:gh"), http.StatusUnprocessableEntity)); f != "repo[0].credential" {
		t.Fatalf("team secret outside the team's scope: field %q", f)
	}
	if f := field(call(samTok, "POST", "/sandbox", spec("team:gh"), http.StatusUnprocessableEntity, "X-Team", tm.ID)); f != "team" {
		t.Fatalf("a stranger in the team's scope: field %q", f)
	}
	if f := field(call(samTok, "POST", "/sandbox", spec("team:"+tm.ID+"/gh"), http.StatusUnprocessableEntity)); f != "repo[0].credential" {
		t.Fatalf("a stranger naming the team's secret in full: field %q", f)
	}
	if f := field(call(bobTok, "POST", "/sandbox", spec("team:otherteam/gh"), http.StatusUnprocessableEntity, "X-Team", tm.ID)); f != "repo[0].credential" {
		t.Fatalf("another team's secret: field %q", f)
	}

	// A member in the team's scope clones with the team's token.
	created, err := bob.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Repo: []client.GitRepo{{URL: repoURL, Ref: "main", Credential: "team:gh"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.SandboxID
	terminateAtCleanup(t, in.url, adminTok, id)
	exec := func(script string) (string, int) {
		t.Helper()
		res, err := bob.Exec(ctx, id, client.ExecRequest{Command: []string{"sh", "-c", script}, Workdir: "/workspace/app"})
		if err != nil {
			t.Fatal(err)
		}
		out := string(res.Stdout) + string(res.Stderr)
		if strings.Contains(out, pat) {
			t.Fatalf("exec shows the token: %s", out)
		}
		return out, res.ExitCode
	}
	if out, code := exec("cat README.md && git ls-remote --heads origin 2>&1"); code != 0 || !strings.Contains(out, "# app") || !strings.Contains(out, "refs/heads/main") {
		t.Fatalf("clone with the team's token: exit %d\n%s", code, out)
	}
	if got := call(bobTok, "GET", "/sandbox/"+id, "", http.StatusOK); !strings.Contains(got, `"credential":"team:`+tm.ID+`/gh"`) {
		t.Fatalf("sandbox record: %s", got)
	}
	// The token is in no file of the sandbox (the command names it in two halves).
	if out, code := exec(`grep -rlF "` + pat[:12] + `""` + pat[12:] + `" /workspace /tmp "$HOME" 2>/dev/null; echo "grep=$?"`); code != 0 || !strings.Contains(out, "grep=1") {
		t.Fatalf("the token in the sandbox's files: exit %d\n%s", code, out)
	}

	// Deleting the team secret revokes the grant.
	if err := admin.DeleteTeamSecret(ctx, tm.ID, "gh"); err != nil {
		t.Fatal(err)
	}
	if out, code := exec("git ls-remote --heads origin 2>&1"); code == 0 || !strings.Contains(out, `the credential "team:`+tm.ID+`/gh" was deleted`) {
		t.Fatalf("a fetch after the team secret was deleted: exit %d\n%s", code, out)
	}

	// Stored again, a new grant opens it; once bob has left the team it
	// opens nothing, and his creates naming it are refused.
	if err := admin.PutTeamSecret(ctx, tm.ID, "gh", pat); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.GitStatus(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if out, code := exec("git ls-remote --heads origin 2>&1"); code != 0 || !strings.Contains(out, "refs/heads/main") {
		t.Fatalf("after the secret was stored again: exit %d\n%s", code, out)
	}
	if err := admin.RemoveTeamMember(ctx, tm.ID, bobMember.UserID); err != nil {
		t.Fatal(err)
	}
	if out, code := exec("git ls-remote --heads origin 2>&1"); code == 0 || !strings.Contains(out, "no such secret") {
		t.Fatalf("a former member's fetch: exit %d\n%s", code, out)
	}
	if f := field(call(bobTok, "POST", "/sandbox", spec("team:"+tm.ID+"/gh"), http.StatusUnprocessableEntity)); f != "repo[0].credential" {
		t.Fatalf("a former member naming the team's secret in full: field %q", f)
	}
	if f := field(call(bobTok, "POST", "/sandbox", spec("team:gh"), http.StatusUnprocessableEntity, "X-Team", tm.ID)); f != "team" {
		t.Fatalf("a former member in the team's scope: field %q", f)
	}
	var ce *client.Error
	if _, err := bob.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Repo: []client.GitRepo{{URL: repoURL, Credential: "team:gh"}}}); !errors.As(err, &ce) || ce.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("a former member's create: %v", err)
	}
	call(adminTok, "DELETE", "/sandbox/"+id, "", http.StatusOK)
	cancel()
	if logs := in.stop(); strings.Contains(logs, pat) {
		t.Fatal("the server log shows the team's token")
	}
}
