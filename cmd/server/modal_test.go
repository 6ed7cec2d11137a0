package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/sandbox/modal/modaltest"
)

// TestModalSecretsFromConfig: the wired server gives every Modal sandbox
// the Modal secrets TECHBOSS_MODAL_SECRETS names, and pulls image_base
// with TECHBOSS_MODAL_REGISTRY_SECRET (the loopback Modal control plane
// stands in for Modal's; the official SDK talks to it).
func TestModalSecretsFromConfig(t *testing.T) {
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Fatalf("bubblewrap is required (the loopback Modal server runs commands with it): %v", err)
	}
	srv, err := modaltest.Start(modaltest.Options{Dir: t.TempDir(), Secrets: map[string]map[string]string{
		"anthropic-api-key": {"ANTHROPIC_API_KEY": "sk-ant-from-modal"},
		"team-registry":     {"REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"TECHBOSS_SANDBOX_DRIVER": "modal",
		"MODAL_TOKEN_ID":          modaltest.DefaultTokenID, "MODAL_TOKEN_SECRET": modaltest.DefaultTokenSecret,
		"TECHBOSS_CLAUDE_CREDENTIALS":    "direct",
		"TECHBOSS_MODAL_SECRETS":         "anthropic-api-key",
		"TECHBOSS_MODAL_REGISTRY_SECRET": "team-registry",
	}
	// The SDK reads these from the process environment.
	t.Setenv("MODAL_SERVER_URL", srv.URL())
	t.Setenv("MODAL_CONFIG_PATH", filepath.Join(t.TempDir(), "no-profile.toml"))
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "modal")
	if err != nil {
		t.Fatal(err)
	}
	res := bearerCall(t, ctx, tok.Token, "POST", in.url+"/sandbox", `{"image_base":"registry.example.com/team/img:1"}`)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("create: %d %s", res.StatusCode, b)
	}
	var created struct {
		Data struct {
			ID string `json:"sandbox_id"`
		}
	}
	_ = json.Unmarshal(b, &created)
	terminateAtCleanup(t, in.url, tok.Token, created.Data.ID)
	creates := srv.Creates()
	if len(creates) != 1 {
		t.Fatalf("%d creates", len(creates))
	}
	got := creates[0]
	if !slices.Contains(got.SecretNames, "anthropic-api-key") || got.Env["ANTHROPIC_API_KEY"] != "sk-ant-from-modal" {
		t.Errorf("secrets attached: %v (env has the key: %v)", got.SecretNames, got.Env["ANTHROPIC_API_KEY"] != "")
	}
	if got.RegistrySecretName != "team-registry" {
		t.Errorf("registry secret: %q", got.RegistrySecretName)
	}
}
