package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
)

// updateSDKOpenAPI rewrites sdk/typescript/openapi.json (the document a
// user's `npm run build` types the SDK from) with the one the server serves:
// go test ./cmd/server -run TestSDKs -update-sdk-openapi
var updateSDKOpenAPI = flag.Bool("update-sdk-openapi", false, "rewrite sdk/typescript/openapi.json from the served document")

// sdkAnswer is what the scripted model says in every run of the SDK tests;
// the suites look for it in the streamed text.
const sdkAnswer = "Hello from the scripted model. The workspace is ready."

// TestSDKs runs the Python SDK's pytest suite (sdk/python/tests) and the
// TypeScript SDK's node test suite (sdk/typescript, built with its pinned
// tsc against the document this server serves) against the real server:
// the local driver, the real Claude Code CLI against the scripted model.
// Then each SDK README's quick start runs as written and must print the
// agent's streamed answer.
// Each suite gets TECHBOSS_URL and TECHBOSS_TOKEN, and TECHBOSS_FLAKY_URL:
// the same server behind a proxy that cuts every run event stream after
// two events, so the SDKs' automatic Last-Event-ID resume is exercised.
// Under TECHBOSS_REQUIRE_ALL=1 a missing python3-httpx, pytest, node or
// npm install fails the test.
func TestSDKs(t *testing.T) {
	claudeBin := modeltest.ClaudeBin(t)
	model := modeltest.New(t, modeltest.Text(sdkAnswer).Times(1000))
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "sk-ant-upstream-sdk-0123456789",
		"TECHBOSS_CLAUDE_BIN": claudeBin,
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "sdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { terminateAll(t, in.url, tok.Token) })
	flaky := newFlakyProxy(t, in.url, 2)
	suiteEnv := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C.UTF-8",
		"TECHBOSS_URL=" + in.url, "TECHBOSS_TOKEN=" + tok.Token,
		"TECHBOSS_FLAKY_URL=" + flaky.url, "TECHBOSS_SDK_ANSWER=" + sdkAnswer,
	}
	root, _ := filepath.Abs(repoRoot)
	ran := 0 // suites that ran to their end (not skipped)

	t.Run("python", func(t *testing.T) {
		py := requirePython(t)
		runSuite(t, ctx, filepath.Join(root, "sdk", "python"), suiteEnv,
			py, "-m", "pytest", "-p", "no:cacheprovider", "-v", "tests")
		// The README's quick start, as a new user would run it.
		dir := filepath.Join(root, "sdk", "python")
		code := firstBlock(t, filepath.Join(dir, "README.md"), "python")
		out := runSuite(t, ctx, t.TempDir(), append(suiteEnv, "PYTHONPATH="+dir), py, "-c", code)
		checkQuickstart(t, "sdk/python/README.md", out)
		ran++
	})
	t.Run("typescript", func(t *testing.T) {
		dir := filepath.Join(root, "sdk", "typescript")
		node := requireNodeSDK(t, dir)
		// Build against the document this server serves: a field the SDK
		// uses that the API no longer has fails tsc.
		doc := filepath.Join(t.TempDir(), "openapi.json")
		res := bearerCall(t, ctx, tok.Token, "GET", in.url+"/openapi.json", "")
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if err := os.WriteFile(doc, b, 0o644); err != nil {
			t.Fatal(err)
		}
		checkSDKOpenAPI(t, filepath.Join(dir, "openapi.json"), b)
		runSuite(t, ctx, dir, append(suiteEnv, "TECHBOSS_OPENAPI="+doc), "npm", "run", "--silent", "build")
		runSuite(t, ctx, dir, suiteEnv, node, "--test", "--test-reporter=spec", "dist/test/")
		// The README's quick start in a project of its own that installed
		// the SDK as the README says (npm install of the directory: a link,
		// no package index involved).
		proj := t.TempDir()
		runSuite(t, ctx, proj, suiteEnv, "npm", "install", "--silent", "--offline", "--no-audit", "--no-fund", dir)
		qs := filepath.Join(proj, "quickstart.mjs")
		if err := os.WriteFile(qs, []byte(firstBlock(t, filepath.Join(dir, "README.md"), "js")), 0o644); err != nil {
			t.Fatal(err)
		}
		out := runSuite(t, ctx, proj, suiteEnv, node, qs)
		checkQuickstart(t, "sdk/typescript/README.md", out)
		ran++
	})
	if n := flaky.resumed.Load(); ran > 0 && !t.Failed() && n == 0 {
		t.Errorf("no SDK reconnected with Last-Event-ID through the cutting proxy (%d streams cut)", flaky.cut.Load())
	} else {
		t.Logf("cutting proxy: %d streams cut, %d resumed with Last-Event-ID", flaky.cut.Load(), n)
	}
}

// checkSDKOpenAPI compares the SDK's copy of the OpenAPI document with the
// served one (info.version aside), rewriting it under -update-sdk-openapi.
// A stale copy is only logged: the test builds against the served one, and
// routes land often.
func checkSDKOpenAPI(t *testing.T, path string, served []byte) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(served, &doc); err != nil {
		t.Fatalf("served OpenAPI document: %v", err)
	}
	if info, ok := doc["info"].(map[string]any); ok {
		delete(info, "version")
	}
	want, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	have, _ := os.ReadFile(path)
	switch {
	case bytes.Equal(have, want):
	case *updateSDKOpenAPI:
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", path)
	default:
		t.Logf("note: %s differs from the served document; refresh it with -update-sdk-openapi", path)
	}
}

// firstBlock returns the first fenced block of a Markdown file in lang.
func firstBlock(t *testing.T, path, lang string) string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(src), "\n```"+lang+"\n")
	body, _, closed := strings.Cut(rest, "\n```")
	if !ok || !closed {
		t.Fatalf("%s has no ```%s block", path, lang)
	}
	return body + "\n"
}

// checkQuickstart checks a quick start's output: the command's output and
// the agent's streamed answer.
func checkQuickstart(t *testing.T, name, out string) {
	t.Helper()
	if !strings.Contains(out, "hello.txt") || !strings.Contains(out, sdkAnswer) {
		t.Errorf("%s's quick start printed %q; want hello.txt and the agent's answer %q", name, out, sdkAnswer)
	}
}

// runSuite runs a command in dir and returns its output, failing the test
// with it when it fails; with -v the output is logged either way.
func runSuite(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	if testing.Verbose() {
		t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out)
	}
	return string(out)
}

// missing skips, or fails under TECHBOSS_REQUIRE_ALL=1.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatalf("missing dependency (TECHBOSS_REQUIRE_ALL=1): %s", why)
	}
	t.Skip("why: " + why)
}

// requirePython returns Debian's python3 when it has httpx and pytest
// (scripts/deps.sh test installs python3-httpx and python3-pytest).
func requirePython(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import httpx, pytest").CombinedOutput(); err != nil {
		missing(t, "/usr/bin/python3 with httpx and pytest (apt python3-httpx python3-pytest): "+strings.TrimSpace(string(out)))
	}
	return py
}

// requireNodeSDK returns node when it is there and the TypeScript SDK's
// dev dependencies are installed (scripts/deps.sh test runs npm ci).
func requireNodeSDK(t *testing.T, dir string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node (18 or later) for the TypeScript SDK's tests")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		missing(t, "npm for the TypeScript SDK's build")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "tsc")); err != nil {
		missing(t, "the TypeScript SDK's dev dependencies (scripts/deps.sh test runs npm ci in sdk/typescript)")
	}
	return node
}

// flakyProxy forwards to the server and cuts every run event stream
// (POST /sandbox/{id}/claude, GET /runs/{id}/events) after a few events,
// the way a dropped connection would.
type flakyProxy struct {
	url     string
	cut     atomic.Int64 // streams cut
	resumed atomic.Int64 // requests that carried Last-Event-ID or ?after
}

func newFlakyProxy(t *testing.T, target string, events int) *flakyProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{}
	tr := &http.Transport{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	rp.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stream := strings.HasSuffix(r.URL.Path, "/claude") || strings.HasSuffix(r.URL.Path, "/events")
		if !stream {
			rp.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Last-Event-ID") != "" || r.URL.Query().Get("after") != "" {
			p.resumed.Add(1)
		}
		rp.ServeHTTP(&cuttingWriter{ResponseWriter: w, left: events, cut: &p.cut}, r)
	}))
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			srv.CloseClientConnections()
			srv.Close()
			tr.CloseIdleConnections()
		})
	})
	p.url = srv.URL
	return p
}

// cuttingWriter passes a text/event-stream body through until it has
// written `left` events that carry an id, then aborts the response (the
// client sees the connection drop mid-stream, without a clean end).
type cuttingWriter struct {
	http.ResponseWriter
	left int
	cut  *atomic.Int64
	buf  []byte
	sse  bool
	seen bool
}

func (w *cuttingWriter) Write(b []byte) (int, error) {
	if !w.seen {
		w.seen = true
		w.sse = strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")
	}
	if !w.sse {
		return w.ResponseWriter.Write(b)
	}
	w.buf = append(w.buf, b...)
	for {
		i := bytes.Index(w.buf, []byte("\n\n"))
		if i < 0 {
			return len(b), nil
		}
		ev := w.buf[:i+2]
		if _, err := w.ResponseWriter.Write(ev); err != nil {
			return 0, err
		}
		w.buf = w.buf[i+2:]
		if bytes.HasPrefix(ev, []byte("id:")) || bytes.Contains(ev, []byte("\nid:")) {
			w.left--
		}
		if w.left <= 0 {
			http.NewResponseController(w.ResponseWriter).Flush()
			w.cut.Add(1)
			panic(http.ErrAbortHandler)
		}
	}
}

func (w *cuttingWriter) Flush() {
	http.NewResponseController(w.ResponseWriter).Flush()
}
