package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/repo/repotest"
)

// gitServer is a real git server over smart HTTP: git's own http-backend
// behind net/http/cgi, refusing any request without the token.
type gitServer struct {
	url, root, token string
	mu               sync.Mutex
	requests         []string // method path (service), for each authorized request
	// also accepts other passwords (installation tokens minted by the
	// GitHub stand-in); nil: only token.
	also func(password string) bool
}

func newGitServer(t *testing.T, token string) *gitServer {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is needed (scripts/deps.sh test installs git): %v", err)
	}
	g := &gitServer{root: t.TempDir(), token: token}
	work := t.TempDir()
	gitHost(t, work, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("# app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "login.py"), []byte("def login(user):\n    return False\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitHost(t, work, "add", ".")
	gitHost(t, work, "commit", "-q", "-m", "first")
	gitHost(t, work, "tag", "v1")
	bare := filepath.Join(g.root, "owner", "app.git")
	gitHost(t, "", "clone", "-q", "--bare", work, bare)
	gitHost(t, bare, "config", "http.receivepack", "true")
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + g.root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "x-access-token" || (p != g.token && (g.also == nil || !g.also(p))) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		g.mu.Lock()
		g.requests = append(g.requests, r.Method+" "+r.URL.Path+" "+r.URL.Query().Get("service"))
		g.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

// ref returns the object a ref of the served repository points to ("" if none).
func (g *gitServer) ref(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", filepath.Join(g.root, "owner", "app.git"), "rev-parse", "--verify", "-q", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// gitHost runs git on the host, only on the test's own repositories.
func gitHost(t *testing.T, dir string, args ...string) string {
	t.Helper()
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// gitHostTry runs git on the host and returns its output and error.
func gitHostTry(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// githubStandIn speaks the slice of the GitHub REST API that opening a
// pull request and a GitHub App's installation tokens use, and records
// what it received. An installation token is minted only for a JWT that
// the App's public key verifies.
type githubStandIn struct {
	url  string
	mu   sync.Mutex
	got  []map[string]any
	auth []string
	// The App: its ID, public key and installation; the tokens minted and
	// the token requests' bodies.
	appID        string
	appKey       *rsa.PublicKey
	installation int64
	minted       map[string]bool
	tokenReqs    []map[string]any
}

func newGitHubStandIn(t *testing.T) *githubStandIn {
	g := &githubStandIn{minted: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == "POST" && r.URL.Path == fmt.Sprintf("/api/v3/app/installations/%d/access_tokens", g.installation) && g.appKey != nil {
			bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if _, err := jwt.Parse(bearer, func(*jwt.Token) (any, error) { return g.appKey, nil },
				jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(g.appID), jwt.WithIssuedAt(), jwt.WithExpirationRequired()); err != nil {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"message":"A JSON web token could not be decoded"}`)
				return
			}
			var body map[string]any
			json.NewDecoder(r.Body).Decode(&body)
			g.mu.Lock()
			tok := fmt.Sprintf("ghs_standin%dinstallationtoken", len(g.tokenReqs))
			g.tokenReqs = append(g.tokenReqs, body)
			g.minted[tok] = true
			g.mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
			return
		}
		if r.Method != "POST" || r.URL.Path != "/api/v3/repos/owner/app/pulls" {
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"message":"Problems parsing JSON"}`, http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, body)
		g.auth = append(g.auth, r.Header.Get("Authorization"))
		n := len(g.got)
		g.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"number": n, "html_url": "https://github.example/owner/app/pull/" + string(rune('0'+n)), "state": "open"})
	}))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

// accepts reports whether tok is an installation token the stand-in minted.
func (g *githubStandIn) accepts(tok string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.minted[tok]
}

func (g *githubStandIn) installationTokens() ([]string, []map[string]any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var toks []string
	for k := range g.minted {
		toks = append(toks, k)
	}
	return toks, append([]map[string]any(nil), g.tokenReqs...)
}

func (g *githubStandIn) requests() ([]map[string]any, []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.got...), append([]string(nil), g.auth...)
}

// TestRepositories is the repositories flow on the real server: clone at
// create through the credential broker (network "none"), the git API,
// the broker's push policy enforced on git run by the agent itself, a
// pull request against the GitHub stand-in, a run delivered as a PR, and
// the token nowhere in the sandbox, its snapshots, events or logs.
func TestRepositories(t *testing.T) {
	claudeBin := modeltest.ClaudeBin(t)
	const pat = "ghp_TESTpat0123456789abcdefREPOS"
	git := newGitServer(t, pat)
	gh := newGitHubStandIn(t)
	appKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	appPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)}))
	appPEMBody := strings.Split(appPEM, "\n")[1] // a line of the key, as it would appear anywhere
	gh.appID, gh.appKey, gh.installation = "98765", &appKey.PublicKey, 4242
	git.also = gh.accepts
	model := modeltest.New(t,
		// The agent's own git fetch must work for the change to be made:
		// the run starts after the clone's broker address went stale and
		// its grant was revoked (see "run delivers a pull request").
		modeltest.Bash("cd /workspace/app && git fetch -q origin && sed -i 's/return False/return user is not None/' login.py"),
		modeltest.Text("I fixed the login."),
	)
	dataDir := t.TempDir()
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": dataDir,
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "sk-ant-upstream-repos",
		"TECHBOSS_CLAUDE_BIN": claudeBin,
		// The git server and the GitHub stand-in are on loopback.
		"TECHBOSS_NETWORK_ALLOW": "127.0.0.1/32",
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "repos")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PutSecret(ctx, "gh", pat); err != nil {
		t.Fatal(err)
	}
	if err := c.PutSecret(ctx, "wrong", "ghp_not-the-token"); err != nil {
		t.Fatal(err)
	}
	repoURL := git.url + "/owner/app.git"
	apiURL := gh.url + "/api/v3/"

	wantStatus := func(err error, status int) {
		t.Helper()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.StatusCode != status {
			t.Fatalf("got %v, want HTTP %d", err, status)
		}
	}
	t.Run("create errors", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			repo   client.GitRepo
			status int
			field  string
		}{
			{"bad url", client.GitRepo{URL: "ftp://example.com/x"}, 422, "repo[0].url"},
			{"token in url", client.GitRepo{URL: "https://user:tok@example.com/owner/app"}, 422, "repo[0].url"},
			{"unknown ref", client.GitRepo{URL: repoURL, Credential: "gh", Ref: "no-such-branch"}, 422, "repo[0].ref"},
			{"no such repository", client.GitRepo{URL: git.url + "/owner/missing.git", Credential: "gh"}, 422, "repo[0].url"},
			{"refused credential", client.GitRepo{URL: repoURL, Credential: "wrong"}, 424, ""},
			{"no credential", client.GitRepo{URL: repoURL}, 424, ""},
		} {
			_, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Repo: []client.GitRepo{tc.repo}})
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%s: got %v, want an API error", tc.name, err)
			}
			if ce.StatusCode != tc.status || (tc.field != "" && (len(ce.Fields) == 0 || ce.Fields[0].Field != tc.field)) {
				t.Fatalf("%s: got %d %+v, want %d on %s", tc.name, ce.StatusCode, ce.Fields, tc.status, tc.field)
			}
		}
	})

	created, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Repo: []client.GitRepo{{
		URL: repoURL, Ref: "main", Depth: 1, Credential: "gh", APIURL: apiURL,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.SandboxID
	terminateAtCleanup(t, in.url, tok.Token, id)
	exec := func(script string) (string, int) {
		t.Helper()
		res, err := c.Exec(ctx, id, client.ExecRequest{Command: []string{"sh", "-c", script}, Workdir: "/workspace/app"})
		if err != nil {
			t.Fatal(err)
		}
		return string(res.Stdout) + string(res.Stderr), res.ExitCode
	}

	t.Run("cloned through the broker", func(t *testing.T) {
		out, code := exec("cat README.md && git log --oneline | wc -l && git config remote.origin.url")
		if code != 0 || !strings.Contains(out, "# app") || !strings.Contains(out, "\n1\n") || !strings.Contains(out, repoURL) {
			t.Fatalf("clone: exit %d\n%s", code, out)
		}
		logs, err := c.SandboxLogs(ctx, id)
		if err != nil || !strings.Contains(logs, "cloning into /workspace/app through the credential broker") {
			t.Fatalf("build log lacks the clone: %v\n%s", err, logs)
		}
		// The sandbox has no network: the clone went through the broker.
		if out, code := exec("git -c url." + repoURL + ".insteadOf=nothing ls-remote --heads " + repoURL + " 2>&1; true"); code != 0 {
			t.Fatalf("ls-remote: %s", out)
		}
	})

	t.Run("a stale broker address is repaired", func(t *testing.T) {
		// What a server restart leaves: the listener's old port in the
		// clone's config (the new listener gets another).
		if out, code := exec(`sed -i 's#127\.0\.0\.1:[0-9]*/git/#127.0.0.1:1/git/#; s#credential "http://127\.0\.0\.1:[0-9]*"#credential "http://127.0.0.1:1"#' .git/config && ` +
			`git ls-remote --heads origin >/dev/null 2>&1; echo rc=$?`); code != 0 || !strings.Contains(out, "rc=128") {
			t.Fatalf("with a stale address, ls-remote: %q exit %d, want it to fail", out, code)
		}
		if _, err := c.GitStatus(ctx, id, "app"); err != nil {
			t.Fatal(err)
		}
		if out, code := exec("git ls-remote --heads origin 2>&1 && grep -c '127.0.0.1:1/' .git/config; true"); code != 0 || !strings.Contains(out, "refs/heads/main") || !strings.HasSuffix(strings.TrimSpace(out), "0") {
			t.Fatalf("after the status call, the agent's own git: %s", out)
		}
	})

	t.Run("status commit push", func(t *testing.T) {
		if _, code := exec("printf 'def login(user):\\n    return True\\n' > login.py && echo new > NOTES.md"); code != 0 {
			t.Fatal("edit failed")
		}
		st, err := c.GitStatus(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		byPath := map[string]client.GitFileChange{}
		for _, f := range st.Files {
			byPath[f.Path] = f
		}
		if st.Branch != "main" || st.Clean || byPath["login.py"].Status != "modified" || !strings.Contains(byPath["login.py"].Diff, "+    return True") ||
			byPath["NOTES.md"].Status != "untracked" || !strings.Contains(byPath["NOTES.md"].Diff, "+new") {
			t.Fatalf("status = %+v", st)
		}
		cm, err := c.GitCommit(ctx, id, "", "Fix login", "agent/fix-login")
		if err != nil {
			t.Fatal(err)
		}
		if cm.Branch != "agent/fix-login" || len(cm.SHA) != 40 {
			t.Fatalf("commit = %+v", cm)
		}
		out, _ := exec("git log -1 --format='%an <%ae>|%s'")
		if !strings.Contains(out, "admin <admin@example.com>|Fix login") {
			t.Fatalf("author/subject = %q, want the user", out)
		}
		_, err = c.GitCommit(ctx, id, "", "again", "")
		wantStatus(err, 409) // nothing to commit
		p, err := c.GitPush(ctx, id, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if p.Branch != "agent/fix-login" || git.ref(t, "refs/heads/agent/fix-login") != cm.SHA {
			t.Fatalf("push = %+v; the server has %q, want %s", p, git.ref(t, "refs/heads/agent/fix-login"), cm.SHA)
		}
		_, err = c.GitPush(ctx, id, "", "main")
		wantStatus(err, 422) // outside the prefix, refused before git runs
	})

	t.Run("broker refuses the default branch", func(t *testing.T) {
		mainBefore := git.ref(t, "refs/heads/main")
		// The agent's own git, with the clone's config: the broker reads
		// the ref updates and refuses, whatever the sandbox claims.
		for _, dst := range []string{"main", "other/x", "refs/tags/v2"} {
			out, code := exec("git push origin HEAD:" + dst + " 2>&1")
			if code == 0 || !strings.Contains(out, "techboss broker") {
				t.Fatalf("push to %s: exit %d, want a refusal from the broker\n%s", dst, code, out)
			}
		}
		if got := git.ref(t, "refs/heads/main"); got != mainBefore || git.ref(t, "refs/heads/other/x") != "" || git.ref(t, "refs/tags/v2") != "" {
			t.Fatalf("a refused push reached the git server (main %s -> %s)", mainBefore, got)
		}
		// A branch under the prefix goes through, from the agent's own git too.
		if out, code := exec("git push origin HEAD:agent/by-agent 2>&1"); code != 0 || git.ref(t, "refs/heads/agent/by-agent") == "" {
			t.Fatalf("push to agent/by-agent: exit %d\n%s", code, out)
		}
		// A token not the sandbox's is refused by the broker.
		out, code := exec(`url=$(git config --get-regexp '^url\..*insteadof$' | head -n1 | cut -d' ' -f1 | sed 's/^url\.//; s/\.insteadof$//'); ` +
			`git -c credential.helper= -c "credential.helper=!f() { echo username=` + id + `; echo password=tbg_forged; }; f" ls-remote "${url}owner/app.git" 2>&1`)
		if code == 0 || !strings.Contains(out, "403") {
			t.Fatalf("a forged sandbox token: exit %d\n%s", code, out)
		}
	})

	t.Run("the broker on the public URL", func(t *testing.T) {
		// Drivers without an in-sandbox listener reach the broker on the
		// API listener, with the same sandbox-scoped token.
		out, code := exec("git config --local --get-regexp '^credential\\..*\\.helper$' | grep -o 'tbg1[.][0-9a-z]*[.][0-9a-z]*[.][A-Za-z0-9_-]*' | head -n1")
		sbToken := strings.TrimSpace(out)
		if code != 0 || sbToken == "" {
			t.Fatalf("no sandbox token in the clone's helper: %q", out)
		}
		u := strings.Replace(in.url, "http://", "http://"+id+":"+sbToken+"@", 1) + "/git/" + strings.TrimPrefix(git.url, "http://") + "/owner/app.git"
		if out := gitHost(t, "", "ls-remote", "--heads", u); !strings.Contains(out, "refs/heads/main") {
			t.Fatalf("ls-remote through the public broker: %s", out)
		}
		bad := strings.Replace(u, sbToken, "tbg_forged", 1)
		if out, err := gitHostTry("ls-remote", bad); err == nil || !strings.Contains(out, "403") {
			t.Fatalf("a forged token through the public broker: %v\n%s", err, out)
		}
	})

	t.Run("a rotated credential revokes the grant", func(t *testing.T) {
		if err := c.PutSecret(ctx, "gh", pat); err != nil { // written again: a rotation
			t.Fatal(err)
		}
		out, code := exec("git ls-remote --heads origin 2>&1")
		if code == 0 || !strings.Contains(out, `the credential "gh" was rotated after this grant was issued`) {
			t.Fatalf("the agent's git with a grant from before the rotation: exit %d\n%s", code, out)
		}
		// The server's next git operation writes a new grant.
		if _, err := c.GitStatus(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		if out, code := exec("git ls-remote --heads origin 2>&1"); code != 0 || !strings.Contains(out, "refs/heads/main") {
			t.Fatalf("after the status call, the agent's git: exit %d\n%s", code, out)
		}
	})

	t.Run("pull request", func(t *testing.T) {
		pr, err := c.OpenPullRequest(ctx, id, client.PullRequestRequest{Title: "Fix login", Body: "The login was always refused."})
		if err != nil {
			t.Fatal(err)
		}
		got, auth := gh.requests()
		if pr.URL == "" || len(got) != 1 || got[0]["head"] != "agent/fix-login" || got[0]["base"] != "main" || got[0]["title"] != "Fix login" || auth[0] != "Bearer "+pat {
			t.Fatalf("pr = %+v; the stand-in got %v with %q", pr, got, auth)
		}
	})

	t.Run("run delivers a pull request", func(t *testing.T) {
		if _, code := exec("git switch -q main"); code != 0 {
			t.Fatal("switch")
		}
		// What a server restart and a rotation leave: the listener's old
		// port and a revoked grant. The run's start repairs both.
		if out, code := exec(`sed -i 's#127\.0\.0\.1:[0-9]*/git/#127.0.0.1:1/git/#; s#credential "http://127\.0\.0\.1:[0-9]*"#credential "http://127.0.0.1:1"#' .git/config && ` +
			`git ls-remote --heads origin >/dev/null 2>&1; echo rc=$?`); code != 0 || !strings.Contains(out, "rc=128") {
			t.Fatalf("with a stale address, ls-remote: %q exit %d, want it to fail", out, code)
		}
		if err := c.PutSecret(ctx, "gh", pat); err != nil {
			t.Fatal(err)
		}
		res := bearerCall(t, ctx, tok.Token, "POST", in.url+"/sandbox/"+id+"/claude",
			`{"prompt":"Fix the login check","deliver":{"branch":"agent/run-fix","pull_request":true}}`)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !bytes.Contains(body, []byte("I fixed the login.")) {
			t.Fatalf("run: %d\n%s", res.StatusCode, body)
		}
		head := git.ref(t, "refs/heads/agent/run-fix")
		if head == "" {
			t.Fatal("the run's branch was not pushed")
		}
		show := gitHost(t, filepath.Join(git.root, "owner", "app.git"), "show", "agent/run-fix:login.py")
		if !strings.Contains(show, "return user is not None") {
			t.Fatalf("the pushed branch lacks the agent's change:\n%s", show)
		}
		got, _ := gh.requests()
		if len(got) != 2 || got[1]["head"] != "agent/run-fix" || !strings.Contains(got[1]["body"].(string), "/runs/run_") {
			t.Fatalf("the stand-in got %v, want a PR for agent/run-fix linking the run", got)
		}
		var runs struct {
			Data []struct {
				ID string `json:"run_id"`
			} `json:"data"`
		}
		r := bearerCall(t, ctx, tok.Token, "GET", in.url+"/sandbox/"+id+"/runs", "")
		json.NewDecoder(r.Body).Decode(&runs)
		r.Body.Close()
		if len(runs.Data) == 0 {
			t.Fatal("no runs listed")
		}
		r = bearerCall(t, ctx, tok.Token, "GET", in.url+"/runs/"+runs.Data[0].ID+"/events", "")
		events, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if !bytes.Contains(events, []byte("event: delivery")) || !bytes.Contains(events, []byte("https://github.example/owner/app/pull/2")) {
			t.Fatalf("the run's events lack the delivery with the PR URL:\n%s", events)
		}
		if bytes.Contains(events, []byte(pat)) {
			t.Fatal("the token reached the run's events")
		}
	})

	t.Run("snapshots keep .git incrementally", func(t *testing.T) {
		type taken struct {
			ID    string `json:"snapshot_id"`
			Stats struct {
				Uploaded int64 `json:"uploaded_bytes"`
				Deduped  int64 `json:"deduplicated_bytes"`
			} `json:"stats"`
		}
		take := func() taken {
			var tk taken
			if err := c.Do(ctx, "POST", "/sandbox/"+id+"/snapshots", nil, &tk); err != nil {
				t.Fatal(err)
			}
			return tk
		}
		take()
		if _, code := exec("echo more >> NOTES.md"); code != 0 {
			t.Fatal("edit")
		}
		out, _ := exec("cat .git/objects/pack/*.pack | wc -c")
		var packBytes int64
		json.Unmarshal([]byte(strings.TrimSpace(out)), &packBytes)
		second := take()
		if packBytes == 0 || second.Stats.Deduped < packBytes || second.Stats.Uploaded >= packBytes {
			t.Fatalf("second snapshot %+v; the pack (%d bytes) should be deduplicated, not uploaded again", second.Stats, packBytes)
		}
		// A sandbox from the snapshot has the repository (not cloned again).
		from, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", FromSnapshot: second.ID, Repo: []client.GitRepo{{URL: repoURL, Credential: "gh"}}})
		if err != nil {
			t.Fatal(err)
		}
		terminateAtCleanup(t, in.url, tok.Token, from.SandboxID)
		logs, _ := c.SandboxLogs(ctx, from.SandboxID)
		res, err := c.Exec(ctx, from.SandboxID, client.ExecRequest{Command: []string{"git", "log", "-1", "--format=%s"}, Workdir: "/workspace/app"})
		if err != nil || !strings.Contains(logs, "already holds a repository") || res.ExitCode != 0 {
			t.Fatalf("restored sandbox: %v exit %d %s\n%s", err, res.ExitCode, res.Stderr, logs)
		}
		// The restored clone's config holds the first sandbox's grant: the
		// broker refuses it on this sandbox's listener, and the server
		// writes this sandbox's own grant at its first git operation.
		fromExec := func(script string) (string, int) {
			t.Helper()
			res, err := c.Exec(ctx, from.SandboxID, client.ExecRequest{Command: []string{"sh", "-c", script}, Workdir: "/workspace/app"})
			if err != nil {
				t.Fatal(err)
			}
			return string(res.Stdout) + string(res.Stderr), res.ExitCode
		}
		if _, err := c.GitStatus(ctx, from.SandboxID, ""); err != nil {
			t.Fatal(err)
		}
		if out, code := fromExec("git ls-remote --heads origin 2>&1"); code != 0 || !strings.Contains(out, "refs/heads/main") {
			t.Fatalf("the restored sandbox's git: exit %d\n%s", code, out)
		}
		otherGrant, _ := exec("git config --local --get-regexp '^credential\\..*\\.helper$' | grep -o 'tbg1[.][0-9a-z]*[.][0-9a-z]*[.][A-Za-z0-9_-]*' | head -n1")
		otherGrant = strings.TrimSpace(otherGrant)
		for _, user := range []string{id, from.SandboxID} {
			out, code := fromExec(`url=$(git config --get-regexp '^url\..*insteadof$' | head -n1 | cut -d' ' -f1 | sed 's/^url\.//; s/\.insteadof$//'); ` +
				`git -c credential.helper= -c "credential.helper=!f() { echo username=` + user + `; echo password=` + otherGrant + `; }; f" ls-remote "${url}owner/app.git" 2>&1`)
			if code == 0 || !strings.Contains(out, "403") {
				t.Fatalf("sandbox %s's grant used in %s as %s: exit %d\n%s", id, from.SandboxID, user, code, out)
			}
		}
	})

	t.Run("a GitHub App credential", func(t *testing.T) {
		app := fmt.Sprintf(`{"app_id": %s, "installation_id": %d, "private_key": %q}`, gh.appID, gh.installation, appPEM)
		if err := c.PutSecret(ctx, "ghapp", app); err != nil {
			t.Fatal(err)
		}
		sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Repo: []client.GitRepo{{
			URL: repoURL, Ref: "main", Credential: "ghapp", APIURL: apiURL, Dir: "app",
		}}})
		if err != nil {
			t.Fatal(err)
		}
		terminateAtCleanup(t, in.url, tok.Token, sb.SandboxID)
		appExec := func(script string) (string, int) {
			t.Helper()
			res, err := c.Exec(ctx, sb.SandboxID, client.ExecRequest{Command: []string{"sh", "-c", script}, Workdir: "/workspace/app"})
			if err != nil {
				t.Fatal(err)
			}
			return string(res.Stdout) + string(res.Stderr), res.ExitCode
		}
		if out, code := appExec("git log --oneline -1 && git ls-remote --heads origin"); code != 0 || !strings.Contains(out, "refs/heads/main") {
			t.Fatalf("clone and fetch with the App's installation tokens: exit %d\n%s", code, out)
		}
		// An installation token is not the App's key: with it the broker
		// still refuses what the sandbox may not push.
		mainBefore := git.ref(t, "refs/heads/main")
		for _, dst := range []string{"main", "other/x"} {
			if out, code := appExec("git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x && git push origin HEAD:" + dst + " 2>&1"); code == 0 || !strings.Contains(out, "techboss broker") {
				t.Fatalf("push to %s with an App token: exit %d, want the broker's refusal\n%s", dst, code, out)
			}
		}
		if git.ref(t, "refs/heads/main") != mainBefore || git.ref(t, "refs/heads/other/x") != "" {
			t.Fatal("a refused push reached the git server")
		}
		if out, code := appExec("git push origin HEAD:agent/app-change 2>&1"); code != 0 || git.ref(t, "refs/heads/agent/app-change") == "" {
			t.Fatalf("push to agent/app-change with an App token: exit %d\n%s", code, out)
		}
		pr, err := c.OpenPullRequest(ctx, sb.SandboxID, client.PullRequestRequest{Title: "App change", Head: "agent/app-change"})
		if err != nil {
			t.Fatal(err)
		}
		_, auth := gh.requests()
		toks, reqs := gh.installationTokens()
		if pr.URL == "" || !strings.HasPrefix(auth[len(auth)-1], "Bearer ghs_standin") {
			t.Fatalf("the pull request went with %q, want an installation token", auth[len(auth)-1])
		}
		// Cached: the create's check, the clone, the fetches, the pushes and
		// the pull request took one token.
		if len(toks) != 1 {
			t.Fatalf("%d installation tokens minted, want 1 (cached until near its expiry)", len(toks))
		}
		if repos, _ := reqs[0]["repositories"].([]any); len(repos) != 1 || repos[0] != "app" {
			t.Fatalf("the token request = %v, want it restricted to the repository", reqs[0])
		}
		out, _ := appExec(`env; cat .git/config; grep -rl -D skip -e '` + toks[0] + `' -e '` + appPEMBody + `' /workspace /tmp /root /home 2>/dev/null; true`)
		if strings.Contains(out, toks[0]) || strings.Contains(out, appPEMBody) {
			t.Fatalf("the installation token or the App's key is visible in the sandbox:\n%s", out)
		}
	})

	sshKey, sshSigner := repotest.NewKey(t)
	// A line of the key's private part, as it would appear anywhere (the
	// first lines are the same for every key).
	sshKeyLine := strings.Split(sshKey, "\n")[3]
	t.Run("an SSH key credential", func(t *testing.T) {
		srv := repotest.NewSSHGitServer(t, git.root, sshSigner.PublicKey())
		cred, _ := json.Marshal(map[string]string{"ssh_private_key": sshKey, "known_hosts": srv.KnownHosts()})
		if err := c.PutSecret(ctx, "sshkey", string(cred)); err != nil {
			t.Fatal(err)
		}
		sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Repo: []client.GitRepo{{
			URL: "ssh://git@127.0.0.1:" + srv.Port() + "/owner/app.git", Ref: "main", Credential: "sshkey",
		}}})
		if err != nil {
			t.Fatal(err)
		}
		terminateAtCleanup(t, in.url, tok.Token, sb.SandboxID)
		sshExec := func(script string) (string, int) {
			t.Helper()
			res, err := c.Exec(ctx, sb.SandboxID, client.ExecRequest{Command: []string{"sh", "-c", script}, Workdir: "/workspace/app"})
			if err != nil {
				t.Fatal(err)
			}
			return string(res.Stdout) + string(res.Stderr), res.ExitCode
		}
		if out, code := sshExec("git log --oneline -1 && git ls-remote --heads origin"); code != 0 || !strings.Contains(out, "refs/heads/main") {
			t.Fatalf("clone and fetch over the broker's SSH transport: exit %d\n%s", code, out)
		}
		mainBefore := git.ref(t, "refs/heads/main")
		if out, code := sshExec("git -c user.email=a@b -c user.name=a commit -q --allow-empty -m ssh && git push origin HEAD:main 2>&1"); code == 0 || !strings.Contains(out, "techboss broker") {
			t.Fatalf("push to main over SSH: exit %d, want the broker's refusal\n%s", code, out)
		}
		if git.ref(t, "refs/heads/main") != mainBefore {
			t.Fatal("a refused push reached the host")
		}
		if out, code := sshExec("git push origin HEAD:agent/ssh-change 2>&1"); code != 0 || git.ref(t, "refs/heads/agent/ssh-change") == "" {
			t.Fatalf("push to agent/ssh-change over SSH: exit %d\n%s", code, out)
		}
		if cmds := srv.Commands(); len(cmds) == 0 || !strings.Contains(strings.Join(cmds, "\n"), "git-receive-pack '/owner/app.git'") {
			t.Fatalf("the SSH host ran %q, want the push's receive-pack", cmds)
		}
		out, _ := sshExec(`env; cat .git/config; grep -rl -D skip -e '` + sshKeyLine + `' /workspace /tmp /root /home 2>/dev/null; true`)
		if strings.Contains(out, sshKeyLine) {
			t.Fatalf("the SSH key is visible in the sandbox:\n%s", out)
		}
	})

	t.Run("the token is nowhere in the sandbox", func(t *testing.T) {
		enc := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + pat))
		out, _ := exec(`env; cat /workspace/app/.git/config; grep -rl -D skip -e '` + pat + `' -e '` + enc + `' /workspace /tmp /root /home 2>/dev/null; true`)
		if strings.Contains(out, pat) || strings.Contains(out, enc) || strings.Contains(out, "/workspace") && strings.Contains(out, "grep") {
			t.Fatalf("the token is visible in the sandbox:\n%s", out)
		}
		if !strings.Contains(out, "insteadOf") && !strings.Contains(out, "insteadof") {
			t.Fatalf(".git/config lacks the broker rewrite:\n%s", out)
		}
		logs, _ := c.SandboxLogs(ctx, id)
		if strings.Contains(logs, pat) {
			t.Fatal("the token reached the build log")
		}
		// Everything the server stored: the database, snapshots, run
		// events (the workspaces' disk images were searched from inside).
		filepath.WalkDir(dataDir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			if fi, err := d.Info(); err != nil || fi.Size() > 64<<20 {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil && (bytes.Contains(b, []byte(pat)) || bytes.Contains(b, []byte(enc))) {
				t.Errorf("the token is in %s", p)
			}
			if err == nil && bytes.Contains(b, []byte(sshKeyLine)) {
				t.Errorf("the SSH key is in %s", p)
			}
			if err == nil && bytes.Contains(b, []byte(appPEMBody)) {
				t.Errorf("the GitHub App's private key is in %s", p)
			}
			toks, _ := gh.installationTokens()
			for _, tk := range toks {
				if err == nil && bytes.Contains(b, []byte(tk)) {
					t.Errorf("an installation token is in %s", p)
				}
			}
			return nil
		})
	})
	grantOut, _ := exec("git config --local --get-regexp '^credential\\..*\\.helper$' | grep -o 'tbg1[.][0-9a-z]*[.][0-9a-z]*[.][A-Za-z0-9_-]*' | head -n1")
	grant := strings.TrimSpace(grantOut)
	publicRepo := strings.Replace(in.url, "http://", "http://"+id+":"+grant+"@", 1) + "/git/" + strings.TrimPrefix(git.url, "http://") + "/owner/app.git"
	if out, err := gitHostTry("ls-remote", "--heads", publicRepo); err != nil || !strings.Contains(out, "refs/heads/main") {
		t.Fatalf("the sandbox's grant before it is deleted: %v\n%s", err, out)
	}
	if _, err := c.TerminateSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if out, err := gitHostTry("ls-remote", "--heads", publicRepo); err == nil || !strings.Contains(out, "the grant is revoked: the sandbox is not running") {
		t.Fatalf("the grant of a deleted sandbox: %v\n%s", err, out)
	}
	logs := in.stop()
	if strings.Contains(logs, pat) {
		t.Fatal("the token reached the server logs")
	}
	toks, _ := gh.installationTokens()
	for _, secret := range append(toks, appPEMBody, sshKeyLine) {
		if strings.Contains(logs, secret) {
			t.Fatal("the GitHub App's key or an installation token reached the server logs")
		}
	}
	if grant == "" || strings.Contains(logs, grant) {
		t.Fatalf("the sandbox's grant (%q) reached the server logs", grant)
	}
	if !strings.Contains(logs, `"op":"push"`) || !strings.Contains(logs, `"op":"fetch"`) || !strings.Contains(logs, "git broker: push refused") {
		t.Fatal("the broker did not log its uses (fetch, push, refusals)")
	}
}
