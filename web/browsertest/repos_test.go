package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/techbossai/techboss/internal/modeltest"
)

// gitServer is a real git server over smart HTTP: git's own http-backend
// behind net/http/cgi, serving owner/app.git (main: README.md, login.py)
// and refusing any request without the token.
type gitServer struct {
	url, root string
}

func newGitServer(t *testing.T, token string) *gitServer {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		need(t, "git http-backend (scripts/deps.sh test installs git): "+err.Error())
	}
	g := &gitServer{root: t.TempDir()}
	work := t.TempDir()
	gitHost(t, work, "init", "-q", "-b", "main")
	for name, text := range map[string]string{"README.md": "# app\n", "login.py": "def login(user):\n    return False\n"} {
		if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitHost(t, work, "add", ".")
	gitHost(t, work, "commit", "-q", "-m", "first")
	bare := filepath.Join(g.root, "owner", "app.git")
	gitHost(t, "", "clone", "-q", "--bare", work, bare)
	gitHost(t, bare, "config", "http.receivepack", "true")
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + g.root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "x-access-token" || p != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

// ref returns the object a ref of the served repository points to ("" if none).
func (g *gitServer) ref(name string) string {
	out, err := exec.Command("git", "-C", filepath.Join(g.root, "owner", "app.git"), "rev-parse", "--verify", "-q", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// gitHost runs git on the host, on the test's own repositories.
func gitHost(t *testing.T, dir string, args ...string) {
	t.Helper()
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// githubStandIn answers the one GitHub REST call opening a pull request
// makes (what google/go-github sends), and records the requests.
type githubStandIn struct {
	url string
	mu  sync.Mutex
	got []map[string]any
}

func newGitHubStandIn(t *testing.T) *githubStandIn {
	g := &githubStandIn{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		n := len(g.got)
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"number": n, "html_url": fmt.Sprintf("https://github.example/owner/app/pull/%d", n), "state": "open"})
	}))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

func (g *githubStandIn) requests() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.got...)
}

// TestRepositoryFlow is issue 18 in the browser, against a real git
// server: the repository fields of the create form (a bad ref and a
// refused credential said next to their fields), the Changes tab (per-file
// diffs, Commit, Push, Open pull request, each error in its own form),
// and a run delivered as a pull request showing the PR's link.
func TestRepositoryFlow(t *testing.T) { forViewports(t, testRepositoryFlow) }

func testRepositoryFlow(t *testing.T, vp viewport) {
	const pat = "ghp_UIflow0123456789abcdefTOKEN"
	git := newGitServer(t, pat)
	gh := newGitHubStandIn(t)
	s := buildStack(t, stackOptions{sandboxes: true, agent: true, repos: true, script: []modeltest.Reply{
		modeltest.Bash("cd /workspace/app && sed -i 's/return True/return user is not None/' login.py"),
		modeltest.Text("I fixed the login."),
	}})
	uid := s.user(t, aliceEmail, alicePass)
	ctx := context.Background()
	if err := s.secrets.Put(ctx, uid, "gh", pat); err != nil {
		t.Fatal(err)
	}
	if err := s.secrets.Put(ctx, uid, "wrong", "ghp_not-the-token"); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	b.allow(`^http: POST .*/sandbox -> 42[24]$`)
	b.allow(`^http: POST .*/git/commit -> 409$`)
	b.allow(`^http: POST .*/git/push -> 422$`)
	b.open("/")
	b.login(aliceEmail, alicePass)

	// The repository fields, under Advanced. A ref the remote lacks is
	// said next to "Branch or tag".
	repoURL := git.url + "/owner/app.git"
	b.fillByLabel("Name", "repo box")
	b.openAdvanced()
	b.fillByLabel("Repository URL", repoURL)
	b.fillByLabel("Branch or tag", "no-such-branch")
	b.fillByLabel("Credential (secret name)", "gh")
	b.fillByLabel("Forge API URL", gh.url+"/api/v3/")
	b.clickButton("Create sandbox")
	b.waitJS("the ref's error next to it", `document.querySelector('[data-for="repo_ref"]').textContent.includes("no-such-branch")`)
	b.waitJS("focus on the ref", `document.activeElement.getAttribute("aria-describedby") === "create-err-repo_ref" && document.activeElement.getAttribute("aria-invalid") === "true"`)
	// Said once (the build log, raw output, aside).
	said := eval[string](b, `(() => { const f = document.querySelector('form[aria-labelledby="create-h"]').cloneNode(true); f.querySelector("pre.build-log")?.remove(); return f.innerText; })()`)
	if n := strings.Count(said, "no-such-branch\""); n != 1 {
		t.Errorf("the ref's error is said %d times, want once:\n%s", n, said)
	}
	b.checkA11y("create form, repository error")
	// The git host refuses the credential: said under the repository's
	// fields, the credential marked.
	b.fillByLabel("Branch or tag", "main")
	b.fillByLabel("Credential (secret name)", "wrong")
	b.clickButton("Create sandbox")
	b.waitJS("the refusal under the repository", `document.getElementById("create-err-repo").textContent.trim() !== ""`)
	b.waitJS("the credential marked", `document.activeElement.getAttribute("aria-invalid") === "true" && document.activeElement.getAttribute("aria-describedby").includes("create-err-repo")`)
	if got := eval[string](b, `document.querySelector('form[aria-labelledby="create-h"] > .error[data-for="create"]').textContent`); got != "" {
		t.Errorf("the credential's refusal is said again under the form: %q", got)
	}
	b.fillByLabel("Credential (secret name)", "gh")
	b.createSandbox("repo box")

	// An edit in the clone, through the Run command tab.
	b.clickButton("Run command")
	b.fillByLabel("Command (run with sh -c in /workspace)", "cd app && sed -i 's/return False/return True/' login.py && echo new > NOTES.md && git log --oneline | wc -l")
	b.clickButton("Run")
	b.waitJS("command done", `document.querySelector("#panel-exec [role=status]").textContent.includes("Exited with code 0")`)

	// The Changes tab: each changed file with its diff.
	b.clickButton("Changes")
	b.waitJS("changed files", `!!document.querySelector('.changed-file[data-path="login.py"][data-status="modified"]') && !!document.querySelector('.changed-file[data-path="NOTES.md"][data-status="untracked"]')`)
	if got := eval[string](b, `document.querySelector('.changed-file[data-path="login.py"] .diff-text .add').textContent`); !strings.Contains(got, "+    return True") {
		t.Errorf("login.py's added line = %q", got)
	}
	b.checkA11y("changes")
	b.shotBoth("changes")

	// Commit on a new branch; then again with nothing to commit: the 409
	// is said in the commit form.
	b.fillByLabel("Commit message", "Fix login")
	b.fillByLabel("On branch (optional)", "agent/fix-login")
	b.clickButton("Commit")
	b.waitJS("committed", `document.querySelector("form.git-commit [role=status]").textContent.includes("on agent/fix-login")`)
	b.waitJS("clean", `document.querySelector("#panel-changes p[role=status]").textContent.includes("nothing to commit") && !document.querySelector(".changed-file")`)
	b.fillByLabel("Commit message", "again")
	b.clickButton("Commit")
	b.waitJS("nothing to commit, in the commit form", `document.getElementById("git-err-commit").textContent.includes("nothing to commit")`)

	// A push to the default branch: refused, said in the push form, the
	// branch field marked.
	b.fillByLabel("Remote branch (optional)", "main")
	b.clickButton("Push")
	b.waitJS("push refused", `document.getElementById("git-err-push").textContent.trim() !== ""`)
	b.waitJS("branch marked", `document.querySelector('form.git-push input[name="branch"]').getAttribute("aria-invalid") === "true"`)
	if git.ref("refs/heads/main") == "" || eval[string](b, `document.getElementById("git-err-commit").textContent`) == "" {
		t.Errorf("the push's error replaced the commit form's")
	}
	b.fillByLabel("Remote branch (optional)", "agent/fix-login")
	b.clickButton("Push")
	b.waitJS("pushed", `document.querySelector("form.git-push [role=status]").textContent.includes("to agent/fix-login")`)
	if git.ref("refs/heads/agent/fix-login") == "" {
		t.Fatal("the branch did not reach the git server")
	}
	if eval[string](b, `document.getElementById("git-err-push").textContent`) != "" {
		t.Errorf("the refused push's error stayed after a push that worked")
	}

	// Open a pull request: the link to it is shown.
	b.fillByLabel("Title", "Fix login")
	b.clickButton("Open pull request")
	b.waitJS("PR link", `(document.querySelector("form.git-pull-request a.pr-link") || {}).href === "https://github.example/owner/app/pull/1"`)
	if got := gh.requests(); len(got) != 1 || got[0]["head"] != "agent/fix-login" || got[0]["title"] != "Fix login" {
		t.Errorf("the GitHub stand-in got %v", got)
	}
	b.checkA11y("changes after a pull request")

	// A run delivered as a pull request shows the PR's link.
	b.clickButton("Agent")
	b.do("open Deliver", chromedp.Click(chromedp.CSS(`form.composer details.deliver > summary`)))
	b.fillByLabel("Branch to push when the run succeeds", "agent/run-fix")
	b.fillByLabel("Prompt", "Fix the login check")
	b.clickButton("Send")
	b.waitJS("delivery with the PR link", `(document.querySelector('.run .notice.delivery a.pr-link') || {}).href === "https://github.example/owner/app/pull/2"`)
	if got := b.text(".run .notice.delivery"); !strings.Contains(got, "to agent/run-fix") {
		t.Errorf("the delivery says %q", got)
	}
	if git.ref("refs/heads/agent/run-fix") == "" {
		t.Error("the run's branch was not pushed")
	}
	b.checkA11y("run delivered")
	b.shotBoth("run-delivered")
	b.checkProblems()

}
