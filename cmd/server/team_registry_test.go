package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// TestTeamRegistryCredential: a team owner stores a registry login as a
// team secret; a team member creates a sandbox in the team's scope naming
// it as registry_credential "team:registry" and the wired server pulls the
// private image with it. Outside the team's scope, for a stranger, and
// after the member leaves, the name does not resolve (422 on the field or
// the team). The password is in no answer nor the server log (the sealed
// rows: httpapi's TestTeamSecrets).
func TestTeamRegistryCredential(t *testing.T) {
	sandboxtest.RequireLocal(t)
	const password = "team-reg-pw-5e2b77c1"
	image, _ := sandboxtest.PushPrivateBusybox(t, "deploy", password)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	login := func(email, pw string) (*client.Client, string) {
		c, _ := client.New(in.url)
		if _, err := c.Login(ctx, email, pw); err != nil {
			t.Fatal(err)
		}
		tok, err := c.CreateToken(ctx, "team-registry")
		if err != nil {
			t.Fatal(err)
		}
		return c, tok.Token
	}
	admin, adminTok := login(env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"])
	call := bearerCaller(t, ctx, in.url, password)
	field := errorField
	for _, email := range []string{"bob@example.com", "sam@example.com"} {
		call(adminTok, "POST", "/auth/users", `{"email":"`+email+`","password":"a long password 123"}`, http.StatusCreated)
	}
	_, bobTok := login("bob@example.com", "a long password 123")
	_, samTok := login("sam@example.com", "a long password 123")
	tm, err := admin.CreateTeam(ctx, "Registry")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := admin.PutTeamMember(ctx, tm.ID, "bob@example.com", "member")
	if err != nil {
		t.Fatal(err)
	}
	call(adminTok, "PUT", "/teams/"+tm.ID+"/secrets/registry", `{"value":"{\"username\":\"deploy\",\"password\":\"`+password+`\"}"}`, http.StatusNoContent)
	spec := `{"image_base":"` + image + `","registry_credential":"team:registry"}`

	// Not in a team's scope, or a stranger: no such secret.
	if f := field(call(bobTok, "POST", "/sandbox", spec, http.StatusUnprocessableEntity)); f != "registry_credential" {
		t.Fatalf("team secret outside the team's scope: field %q", f)
	}
	if f := field(call(samTok, "POST", "/sandbox", spec, http.StatusUnprocessableEntity, "X-Team", tm.ID)); f != "team" {
		t.Fatalf("a stranger in the team's scope: field %q", f)
	}
	if f := field(call(samTok, "POST", "/sandbox", `{"image_base":"`+image+`","registry_credential":"team:`+tm.ID+`/registry"}`, http.StatusUnprocessableEntity)); f != "registry_credential" {
		t.Fatalf("a stranger naming the team's secret in full: field %q", f)
	}

	var created struct {
		Data struct {
			ID string `json:"sandbox_id"`
		}
	}
	if err := json.Unmarshal([]byte(call(bobTok, "POST", "/sandbox", spec, http.StatusOK, "X-Team", tm.ID)), &created); err != nil {
		t.Fatal(err)
	}
	out := call(bobTok, "POST", "/sandbox/"+created.Data.ID+"/exec?wait=true", `{"command":["sh","-c","echo $IMAGE_VAR"]}`, http.StatusOK)
	if !strings.Contains(out, "from-image") {
		t.Fatalf("exec in the private image: %s", out)
	}
	if got := call(bobTok, "GET", "/sandbox/"+created.Data.ID, "", http.StatusOK); !strings.Contains(got, `"registry_credential":"team:`+tm.ID+`/registry"`) {
		t.Fatalf("sandbox record: %s", got)
	}
	call(bobTok, "DELETE", "/sandbox/"+created.Data.ID, "", http.StatusOK)

	// Once bob has left the team, the name no longer opens anything.
	call(bobTok, "DELETE", "/teams/"+tm.ID+"/members/"+bob.UserID, "", http.StatusNoContent)
	if f := field(call(bobTok, "POST", "/sandbox", `{"image_base":"`+image+`","registry_credential":"team:`+tm.ID+`/registry"}`, http.StatusUnprocessableEntity)); f != "registry_credential" {
		t.Fatalf("a former member naming the team's secret: field %q", f)
	}
	cancel()
	if logs := in.stop(); strings.Contains(logs, password) {
		t.Fatal("the server log shows the registry password")
	}
}
