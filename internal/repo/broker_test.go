package repo

import (
	"context"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// upstreamGit serves a bare repository with git's own http-backend,
// refusing requests whose password accept refuses; it returns the
// server's URL.
func upstreamGit(t *testing.T, accept func(password string) bool) string {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is needed (scripts/deps.sh test installs git): %v", err)
	}
	root, work := t.TempDir(), t.TempDir()
	run := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run(work, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("# app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(work, "add", ".")
	run(work, "commit", "-q", "-m", "first")
	run("", "clone", "-q", "--bare", work, filepath.Join(root, "owner", "app.git"))
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, p, ok := r.BasicAuth(); !ok || !accept(p) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// grantWorld is a broker in front of a real git server, with the records
// it consults (the sandbox, the secret's age, the clock) held by the test.
type grantWorld struct {
	mu      sync.Mutex
	now     time.Time
	sb      sandbox.Sandbox
	updated time.Time // the credential secret's last write; zero: deleted
	bound   string    // the sandbox the request's listener belongs to
	broker  *Broker
	url     string // the broker's base URL
	repo    string // the repository's path under the broker
}

func newGrantWorld(t *testing.T, ttl time.Duration) *grantWorld {
	const pat = "ghp_grant-test-token"
	up := upstreamGit(t, func(p string) bool { return p == pat })
	w := &grantWorld{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	w.updated = w.now.Add(-time.Hour)
	w.sb = sandbox.Sandbox{ID: "sb_grant1", OwnerID: "u1", State: sandbox.Running, CreatedAt: w.now,
		Spec: sandbox.Spec{MaxLifetimeS: 3600, Repos: sandbox.RepoList{{URL: up + "/owner/app.git", Credential: "gh"}}}}
	b, err := NewBroker(BrokerConfig{
		Key: []byte("0123456789abcdef0123456789abcdef"),
		Lookup: func(_ context.Context, id string) (*sandbox.Sandbox, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if id != w.sb.ID {
				return nil, errs.E(errs.NotFound, "no sandbox")
			}
			sb := w.sb
			return &sb, nil
		},
		Reveal: func(context.Context, string, string) (string, error) { return pat, nil },
		SecretUpdated: func(context.Context, string, string) (time.Time, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.updated.IsZero() {
				return time.Time{}, errs.E(errs.NotFound, "no secret")
			}
			return w.updated, nil
		},
		Bound: func(context.Context) (string, bool) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.bound, w.bound != ""
		},
		Now: func() time.Time {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.now
		},
		GrantTTL: ttl,
		Allow:    []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.broker = b
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	w.url, w.repo = srv.URL, "/git/"+strings.TrimPrefix(up, "http://")+"/owner/app.git"
	return w
}

func (w *grantWorld) set(f func(w *grantWorld)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(w)
}

// refs asks the broker for the ref advertisement as user with grant.
func (w *grantWorld) refs(t *testing.T, user, grant string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", w.url+w.repo+"/info/refs?service=git-upload-pack", nil)
	req.SetBasicAuth(user, grant)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGrants: a sandbox's grant opens its repositories until it expires
// (the operator's TTL or the sandbox's lifetime, whichever ends first),
// and is revoked when the sandbox stops, when the credential secret is
// rotated or deleted, and for any other sandbox or listener.
func TestGrants(t *testing.T) {
	w := newGrantWorld(t, 20*time.Minute)
	sb := w.sb
	grant := w.broker.Grant(&sb)
	want := func(t *testing.T, name string, gotStatus int, body string, status int, text string) {
		t.Helper()
		if gotStatus != status || !strings.Contains(body, text) {
			t.Fatalf("%s: got %d %q, want %d with %q", name, gotStatus, body, status, text)
		}
	}
	code, body := w.refs(t, sb.ID, grant)
	want(t, "a fresh grant", code, body, 200, "refs/heads/main")
	if !w.broker.GrantFresh(context.Background(), &sb, grant) {
		t.Fatal("a new grant is not fresh")
	}

	t.Run("another sandbox", func(t *testing.T) {
		other := sandbox.Sandbox{ID: "sb_other", OwnerID: "u1", CreatedAt: w.now, Spec: sb.Spec}
		code, body := w.refs(t, sb.ID, w.broker.Grant(&other))
		want(t, "another sandbox's grant", code, body, 403, "not a grant of sandbox")
		code, body = w.refs(t, sb.ID, "tbg1.0.zzzzzzzz."+strings.Split(grant, ".")[3])
		want(t, "a grant with a forged expiry", code, body, 403, "not a grant of sandbox")
		w.set(func(w *grantWorld) { w.bound = "sb_other" })
		code, body = w.refs(t, sb.ID, grant)
		w.set(func(w *grantWorld) { w.bound = "" })
		want(t, "the grant on another sandbox's listener", code, body, 403, "belongs to another sandbox")
	})

	t.Run("expiry", func(t *testing.T) {
		w.set(func(w *grantWorld) { w.now = w.now.Add(11 * time.Minute) })
		if w.broker.GrantFresh(context.Background(), &sb, grant) {
			t.Fatal("a grant past half its life is fresh (the service would not renew it)")
		}
		code, body := w.refs(t, sb.ID, grant)
		want(t, "a grant past half its life", code, body, 200, "refs/heads/main")
		w.set(func(w *grantWorld) { w.now = w.now.Add(10 * time.Minute) })
		code, body = w.refs(t, sb.ID, grant)
		want(t, "an expired grant", code, body, 401, "grant expired at 2026-01-02T03:24:05Z")
		// The sandbox's lifetime (an hour from its creation) bounds a grant
		// below the TTL.
		w.set(func(w *grantWorld) { w.now = w.sb.CreatedAt.Add(50 * time.Minute) })
		renewed := w.broker.Grant(&sb)
		code, body = w.refs(t, sb.ID, renewed)
		want(t, "a renewed grant", code, body, 200, "refs/heads/main")
		w.set(func(w *grantWorld) { w.now = w.sb.CreatedAt.Add(time.Hour + time.Millisecond) })
		code, body = w.refs(t, sb.ID, renewed)
		want(t, "a grant past the sandbox's lifetime", code, body, 401, "grant expired at 2026-01-02T04:04:05Z")
		w.set(func(w *grantWorld) { w.now = w.sb.CreatedAt })
	})

	t.Run("rotation and deletion", func(t *testing.T) {
		grant := w.broker.Grant(&sb)
		w.set(func(w *grantWorld) { w.now = w.now.Add(time.Second); w.updated = w.now })
		code, body := w.refs(t, sb.ID, grant)
		want(t, "a grant issued before the credential's rotation", code, body, 403, `the credential "gh" was rotated after this grant was issued`)
		if w.broker.GrantFresh(context.Background(), &sb, grant) {
			t.Fatal("a revoked grant is fresh")
		}
		w.set(func(w *grantWorld) { w.now = w.now.Add(time.Second) })
		after := w.broker.Grant(&sb)
		code, body = w.refs(t, sb.ID, after)
		want(t, "a grant issued after the rotation", code, body, 200, "refs/heads/main")
		w.set(func(w *grantWorld) { w.updated = time.Time{} })
		code, body = w.refs(t, sb.ID, after)
		want(t, "a grant whose credential was deleted", code, body, 403, `the credential "gh" was deleted`)
		w.set(func(w *grantWorld) { w.updated = w.now.Add(-time.Minute) })
	})

	t.Run("the sandbox stopped", func(t *testing.T) {
		grant := w.broker.Grant(&sb)
		w.set(func(w *grantWorld) { w.sb.State = sandbox.Terminated })
		code, body := w.refs(t, sb.ID, grant)
		w.set(func(w *grantWorld) { w.sb.State = sandbox.Running })
		want(t, "the grant of a terminated sandbox", code, body, 403, "the sandbox is not running")
	})

	t.Run("git shows why", func(t *testing.T) {
		grant := w.broker.Grant(&sb)
		w.set(func(w *grantWorld) { w.now = w.now.Add(2 * time.Hour) })
		defer w.set(func(w *grantWorld) { w.now = w.sb.CreatedAt })
		u := strings.Replace(w.url, "http://", "http://"+sb.ID+":"+grant+"@", 1) + w.repo
		cmd := exec.Command("git", "ls-remote", u)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "remote: techboss git broker: the sandbox's git grant expired") {
			t.Fatalf("git ls-remote with an expired grant: %v\n%s", err, out)
		}
	})
}
