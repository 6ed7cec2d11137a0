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

// TestRegistryCredential: a user stores a registry login as a secret and
// names it in the spec; the wired server pulls the private image with it.
// Bad names and bad values are field errors, and the password never shows
// in an answer or the log.
func TestRegistryCredential(t *testing.T) {
	sandboxtest.RequireLocal(t)
	const password = "reg-pw-7c1d0a9e"
	image, _ := sandboxtest.PushPrivateBusybox(t, "deploy", password)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "registry")
	if err != nil {
		t.Fatal(err)
	}
	bearer := bearerCaller(t, ctx, in.url, password)
	call := func(method, path, body string, want int) string {
		t.Helper()
		return bearer(tok.Token, method, path, body, want)
	}
	field := errorField
	spec := func(cred string) string {
		b, _ := json.Marshal(map[string]string{"image_base": image, "registry_credential": cred})
		return string(b)
	}
	if f := field(call("POST", "/sandbox", spec("no-such-secret"), http.StatusUnprocessableEntity)); f != "registry_credential" {
		t.Fatalf("missing secret: field %q", f)
	}
	call("PUT", "/secrets/not-a-login", `{"value":"just-a-token"}`, http.StatusNoContent)
	if f := field(call("POST", "/sandbox", spec("not-a-login"), http.StatusUnprocessableEntity)); f != "registry_credential" {
		t.Fatalf("malformed secret: field %q", f)
	}
	call("PUT", "/secrets/wrong-login", `{"value":"deploy:nope"}`, http.StatusNoContent)
	if f := field(call("POST", "/sandbox", spec("wrong-login"), http.StatusUnprocessableEntity)); f != "registry_credential" {
		t.Fatalf("refused login: field %q", f)
	}
	if f := field(call("POST", "/sandbox", `{"image_base":"`+image+`"}`, http.StatusUnprocessableEntity)); f != "image_base" {
		t.Fatalf("no login: field %q", f)
	}

	call("PUT", "/secrets/registry", `{"value":"{\"username\":\"deploy\",\"password\":\"`+password+`\"}"}`, http.StatusNoContent)
	var created struct {
		Data struct {
			ID     string `json:"sandbox_id"`
			Status string `json:"status"`
		}
	}
	if err := json.Unmarshal([]byte(call("POST", "/sandbox", spec("registry"), http.StatusOK)), &created); err != nil {
		t.Fatal(err)
	}
	out := call("POST", "/sandbox/"+created.Data.ID+"/exec?wait=true", `{"command":["sh","-c","echo $IMAGE_VAR"]}`, http.StatusOK)
	if !strings.Contains(out, "from-image") {
		t.Fatalf("exec in the private image: %s", out)
	}
	// The sandbox record keeps the secret's name, not its value.
	if got := call("GET", "/sandbox/"+created.Data.ID, "", http.StatusOK); !strings.Contains(got, `"registry_credential":"registry"`) {
		t.Fatalf("sandbox record: %s", got)
	}
	call("DELETE", "/sandbox/"+created.Data.ID, "", http.StatusOK)
	cancel()
	if logs := in.stop(); strings.Contains(logs, password) {
		t.Fatal("the server log shows the registry password")
	}
}
