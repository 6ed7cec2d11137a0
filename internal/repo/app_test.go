package repo

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// appStandIn speaks GitHub's POST /app/installations/{id}/access_tokens:
// it verifies the App's JWT with the App's public key and mints tokens.
type appStandIn struct {
	url     string
	mu      sync.Mutex
	minted  map[string]bool
	bodies  []map[string]any
	expires func() time.Time
}

func newAppStandIn(t *testing.T, pub *rsa.PublicKey, appID string, installation int64, expires func() time.Time) *appStandIn {
	a := &appStandIn{minted: map[string]bool{}, expires: expires}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != "POST" || r.URL.Path != fmt.Sprintf("/api/v3/app/installations/%d/access_tokens", installation) {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"Not Found"}`)
			return
		}
		bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tok, err := jwt.Parse(bearer, func(*jwt.Token) (any, error) { return pub, nil },
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(appID), jwt.WithTimeFunc(expires))
		if err != nil || !tok.Valid {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"A JSON web token could not be decoded"}`)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		a.mu.Lock()
		n := len(a.bodies)
		a.bodies = append(a.bodies, body)
		token := fmt.Sprintf("ghs_minted%dxyz", n)
		a.minted[token] = true
		a.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"token": token, "expires_at": a.expires().Add(time.Hour).UTC().Format(time.RFC3339)})
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

func (a *appStandIn) accepts(tok string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.minted[tok]
}

func (a *appStandIn) requests() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.bodies...)
}

func appKeyPEM(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

// TestAppCredential: a GitHub App credential is traded for installation
// tokens (JWT signed with the App's key, verified by the stand-in),
// restricted to the repository, read-only for a fetch-only repository,
// cached until five minutes before they expire, minted anew when the
// secret changes; a wrong key is a clear refusal.
func TestAppCredential(t *testing.T) {
	key, keyPEM := appKeyPEM(t)
	var mu sync.Mutex
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	app := newAppStandIn(t, &key.PublicKey, "1234", 42, clock)
	up := upstreamGit(t, app.accepts)
	secret := fmt.Sprintf(`{"app_id": 1234, "installation_id": 42, "private_key": %q}`, keyPEM)
	sb := sandbox.Sandbox{ID: "sb_app1", OwnerID: "u1", State: sandbox.Running, CreatedAt: now,
		Spec: sandbox.Spec{Repos: sandbox.RepoList{
			{URL: up + "/owner/app.git", Credential: "app", APIURL: app.url + "/api/v3/"},
			{URL: up + "/owner/app", Credential: "app", APIURL: app.url + "/api/v3/", Access: sandbox.AccessFetch, Dir: "ro"},
		}}}
	b, err := NewBroker(BrokerConfig{
		Key:    []byte("0123456789abcdef0123456789abcdef"),
		Lookup: func(context.Context, string) (*sandbox.Sandbox, error) { s := sb; return &s, nil },
		Reveal: func(_ context.Context, _, name string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if name != "app" {
				return "", errs.E(errs.NotFound, "no secret")
			}
			return secret, nil
		},
		Now:   clock,
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b)
	defer srv.Close()
	w := &grantWorld{broker: b, url: srv.URL, repo: "/git/" + strings.TrimPrefix(up, "http://") + "/owner/app.git"}
	refs := func(name string, wantStatus int, wantText string) {
		t.Helper()
		code, body := w.refs(t, sb.ID, b.Grant(&sb))
		if code != wantStatus || !strings.Contains(body, wantText) {
			t.Fatalf("%s: got %d %q, want %d with %q", name, code, body, wantStatus, wantText)
		}
	}
	refs("the first fetch", 200, "refs/heads/main")
	refs("the second fetch", 200, "refs/heads/main")
	got := app.requests()
	if len(got) != 1 {
		t.Fatalf("%d tokens minted for two fetches, want 1 (cached)", len(got))
	}
	if repos, _ := got[0]["repositories"].([]any); len(repos) != 1 || repos[0] != "app" || got[0]["permissions"] != nil {
		t.Fatalf("the token request = %v, want repositories [app] and the installation's permissions", got[0])
	}
	mu.Lock()
	now = now.Add(56 * time.Minute) // within five minutes of the token's expiry
	mu.Unlock()
	refs("a fetch near the token's expiry", 200, "refs/heads/main")
	if n := len(app.requests()); n != 2 {
		t.Fatalf("%d tokens minted, want a new one near the expiry", n)
	}

	t.Run("fetch only", func(t *testing.T) {
		sbRO := sb
		tok, err := b.credentialFor(context.Background(), &sbRO, 1)
		if err != nil || !app.accepts(tok) {
			t.Fatalf("read-only token: %q %v", tok, err)
		}
		got := app.requests()
		if perms, _ := got[len(got)-1]["permissions"].(map[string]any); perms["contents"] != "read" || len(perms) != 1 {
			t.Fatalf("a fetch-only repository's token request = %v, want permissions {contents: read}", got[len(got)-1])
		}
	})

	t.Run("rotated key", func(t *testing.T) {
		_, otherPEM := appKeyPEM(t)
		mu.Lock()
		secret = fmt.Sprintf(`{"app_id": 1234, "installation_id": 42, "private_key": %q}`, otherPEM)
		mu.Unlock()
		// A new secret value does not reuse the cached token: the new key
		// signs the JWT, and GitHub refuses a key not the App's.
		refs("an App key GitHub does not know", 403, "GitHub refused the App's installation token for installation 42: A JSON web token could not be decoded")
	})

	t.Run("malformed", func(t *testing.T) {
		for _, tc := range []struct{ value, text string }{
			{`{"app_id": 1, "installation_id": 2}`, "private_key is required"},
			{`{"app_id": 1, "private_key": "-----BEGIN RSA PRIVATE KEY-----"}`, "installation_id is required"},
			{`{"installation_id": 2, "private_key": "x"}`, "app_id is required"},
			{`{"app_id": 1, "installation_id": 2, "private_key": "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----"}`, "not an RSA private key"},
			{`{"app_id": 1, "installation_id": 2, "private_key": "` + strings.Repeat("k", 20) + `", "extra": 1}`, `unknown field "extra"`},
		} {
			mu.Lock()
			secret = tc.value
			mu.Unlock()
			_, err := b.credentialFor(context.Background(), &sb, 0)
			if errs.KindOf(err) != errs.Dependency || !strings.Contains(err.Error(), tc.text) || strings.Contains(err.Error(), "kkkkkkkk") {
				t.Fatalf("%s: got %v, want a 424 saying %q without the value", tc.value, err, tc.text)
			}
		}
	})
}

// credentialFor is the broker's upstream password for sb's i-th repository.
func (b *Broker) credentialFor(ctx context.Context, sb *sandbox.Sandbox, i int) (string, error) {
	g := sb.Spec.Repos[i].WithDefaults()
	rm, err := sandbox.ParseRemote(g.URL)
	if err != nil {
		return "", err
	}
	_, pass, err := b.credential(ctx, sb.OwnerID, g, rm)
	return pass, err
}
