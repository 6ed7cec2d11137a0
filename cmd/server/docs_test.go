package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
)

// repoRoot is the repository's top directory (this package is cmd/server).
const repoRoot = "../.."

// docFiles are the documents whose examples TestDocsCurl runs and whose
// links TestDocsLinks checks: README.md and every docs/*.md.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return append([]string{filepath.Join(repoRoot, "README.md")}, files...)
}

// docBlock is one fenced shell block of a document.
type docBlock struct {
	file string
	line int // of the opening fence
	lang string
	text string
}

var fenceRE = regexp.MustCompile("^(\\s*)(```+)\\s*([A-Za-z0-9_-]*)")

// runnableLangs are the fence languages whose curl commands are run.
var runnableLangs = map[string]bool{"sh": true, "bash": true, "shell": true, "console": true}

// parseDoc returns the fenced blocks of a document, and the lines outside
// a runnable block that start a curl command (an example the test would
// not see: an indented block or another language).
func parseDoc(path string, src string) (blocks []docBlock, stray []int) {
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			if curlLineRE.MatchString(lines[i]) {
				stray = append(stray, i+1)
			}
			continue
		}
		b := docBlock{file: path, line: i + 1, lang: strings.ToLower(m[3])}
		var body []string
		for i++; i < len(lines); i++ {
			if strings.HasPrefix(strings.TrimSpace(lines[i]), m[2]) {
				break
			}
			body = append(body, strings.TrimPrefix(lines[i], m[1]))
		}
		b.text = strings.Join(body, "\n")
		if !runnableLangs[b.lang] {
			for j, l := range body {
				if curlLineRE.MatchString(l) {
					stray = append(stray, b.line+1+j)
				}
			}
			continue
		}
		if b.lang == "console" {
			b.text = consoleCommands(body)
		}
		blocks = append(blocks, b)
	}
	return blocks, stray
}

// curlLineRE matches a line that starts a curl command (after an optional
// prompt or assignment), the way examples are written.
var curlLineRE = regexp.MustCompile(`^\s*(\$ )?([A-Za-z_][A-Za-z0-9_]*=\$\()?curl\s`)

// curlCallRE finds curl invocations in a script line.
var curlCallRE = regexp.MustCompile(`(^|[\s|;&(])curl\s`)

// consoleCommands keeps the commands of a console block: lines after a
// "$ " prompt and their continuation lines; the rest is output.
func consoleCommands(lines []string) string {
	var out []string
	cont := false
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "$ "):
			out = append(out, strings.TrimPrefix(l, "$ "))
		case cont:
			out = append(out, l)
		default:
			cont = false
			continue
		}
		cont = strings.HasSuffix(l, "\\")
	}
	return strings.Join(out, "\n")
}

// curlCount is how many curl commands a script's text holds (comments
// left out).
func curlCount(script string) int {
	n := 0
	for _, l := range strings.Split(script, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.Index(l, " # "); i >= 0 {
			l = l[:i]
		}
		n += len(curlCallRE.FindAllString(l, -1))
	}
	return n
}

var expectRE = regexp.MustCompile(`^(\s*)# expect: (\d{3})\b.*$`)

// prepare turns a block into the script the test runs: the documented
// address becomes the test server's, and a "# expect: NNN" comment line
// tells the next curl which status to expect instead of a 2xx.
func prepare(text, addr string) string {
	text = strings.ReplaceAll(text, "localhost:8080", addr)
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if m := expectRE.FindStringSubmatch(l); m != nil {
			lines[i] = m[1] + "__expect " + m[2]
		}
	}
	return strings.Join(lines, "\n")
}

// docsPreamble runs before each block. Each block runs in its own bash
// (set -euo pipefail); the variables it sets are kept for the next block of
// the same document. curl is a function that records each call's final
// HTTP status (from -D) and fails unless it is 2xx, or the status the
// "# expect:" line before it named.
const docsPreamble = `set -euo pipefail
[ -f "$__STATE" ] && . "$__STATE"
__expect() { echo "$1" > "$__EXPECTF"; }
curl() {
  local __hdr __body __rcf __rc=0 __want="" __status __a __fail="" __args=()
  if [ -f "$__EXPECTF" ]; then __want=$(cat "$__EXPECTF"); rm -f "$__EXPECTF"; fi
  # -f drops the body of an error; --fail-with-body fails the same way
  # (exit 22) and keeps it, so a failed example shows what the server said.
  for __a in "$@"; do
    if [[ $__a =~ ^-[a-zA-Z]+$ && $__a == *f* ]]; then
      __fail=1; __a=${__a//f/}
      [ "$__a" = "-" ] && continue
    fi
    __args+=("$__a")
  done
  [ -n "$__fail" ] && __args=(--fail-with-body "${__args[@]}")
  __hdr=$(mktemp); __body=$(mktemp); __rcf=$(mktemp)
  { __rc=0; command curl -D "$__hdr" "${__args[@]}" || __rc=$?; echo "$__rc" > "$__rcf"; } | tee "$__body"
  __rc=$(cat "$__rcf")
  __status=$(grep -a '^HTTP/' "$__hdr" | tail -n 1 | awk '{print $2}')
  rm -f "$__hdr" "$__rcf"
  echo "${__status:-none} ${__rc} ${__want:-2xx}" >> "$__CALLS"
  if [ -n "$__want" ]; then
    rm -f "$__body"
    if [ "$__status" != "$__want" ]; then echo "docs test: HTTP ${__status:-none}, want $__want" >&2; return 1; fi
    return 0
  fi
  # A stream that does not end by itself is shown with --max-time: its
  # timeout (exit 28) after a 2xx answer is the example working.
  if [ "$__rc" = 28 ] && [[ " $* " == *" --max-time "* ]]; then __rc=0; fi
  case "$__rc $__status" in "0 2"??) rm -f "$__body"; return 0;; esac
  echo "docs test: curl exited $__rc (HTTP ${__status:-none}, want 2xx); the body: $(head -c 2000 "$__body")" >&2
  rm -f "$__body"
  [ "$__rc" != 0 ] && return "$__rc"
  return 1
}
__save() {
  local __v
  for __v in $(compgen -v); do
    case $__v in
      __*|BASH*|FUNCNAME|PIPESTATUS|RANDOM|SRANDOM|SECONDS|LINENO|EPOCH*|PWD|OLDPWD|SHLVL|PPID|UID|EUID|GROUPS|HOSTNAME|HOSTTYPE|MACHTYPE|OSTYPE|IFS|OPTERR|OPTIND|PS4|SHELLOPTS|DIRSTACK|COMP_WORDBREAKS|_) continue ;;
    esac
    case "$(declare -p "$__v" 2>/dev/null)" in
      "declare -- "*|"declare -x "*) printf 'export %s=%q\n' "$__v" "${!__v}" ;;
    esac
  done > "$__STATE"
}
trap __save EXIT
`

// TestDocsCurl runs every curl example of README.md and docs/*.md against
// the real server (the real local driver, the real Claude Code CLI against
// the scripted model server). Each document's shell blocks run in order in
// bash with TOKEN set to an admin's API token (a document may log in and
// make its own); each curl must answer 2xx, or the status a "# expect: NNN"
// line before it names, and must exit 0. A document with a curl outside a
// runnable block (an indented block, another fence language) fails.
//
// Writing examples: ```sh (or bash, shell, console with "$ " prompts)
// blocks; the server is localhost:8080; variables a block sets (ID=$(curl
// ... | jq -r ...)) are there in the document's later blocks; files are
// made in a scratch directory; a stream that never ends (a follow, a watch)
// takes --max-time N and may time out. Blocks without curl are not run.
func TestDocsCurl(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the docs' examples (scripts/deps.sh test installs it): %v", tool, err)
		}
	}
	claudeBin := modeltest.ClaudeBin(t)
	model := modeltest.New(t, modeltest.Text("The workspace holds hello.txt."))
	// A prompt with approvalMarker (docs/api.md's approvals example) gets
	// a model that calls the Bash tool first, so the run asks.
	tools := modeltest.New(t, modeltest.Bash("date > today.txt"), modeltest.Text("I saved the date in today.txt."))
	modelURL := routeModel(t, approvalMarker, model, tools)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		// The documents' own admin.
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "a long password",
		"ANTHROPIC_BASE_URL": modelURL, "ANTHROPIC_API_KEY": "sk-ant-upstream-docs",
		"TECHBOSS_CLAUDE_BIN": claudeBin,
		// docs/repositories.md's repository is a real git server on loopback.
		"TECHBOSS_NETWORK_ALLOW": "127.0.0.1/32",
		// /v1/chat's provider, with a priced model for the examples.
		"TECHBOSS_LLM_PROVIDERS": `{"providers": [{"name": "anthropic", "type": "anthropic", "base_url": "` + modelURL + `",
			"models": [{"id": "claude-sonnet-4-5", "input_per_mtok": 3, "output_per_mtok": 15}], "any_model": true}],
			"default_provider": "anthropic"}`,
	}
	docsGit := newGitServer(t, "ghp_your_token") // the documents' token and repository
	in := start(t, env)
	addr := strings.TrimPrefix(in.url, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "docs")
	if err != nil {
		t.Fatal(err)
	}
	// Sandboxes outlive the server: end whatever an example left running.
	t.Cleanup(func() { terminateAll(t, in.url, tok.Token) })

	ran := 0
	for _, f := range docFiles(t) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(repoRoot, f)
		blocks, stray := parseDoc(name, string(src))
		for _, l := range stray {
			t.Errorf("%s:%d: a curl example outside a ```sh block (the test would not run it)", name, l)
		}
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			dir := t.TempDir()
			for _, b := range blocks {
				if curlCount(b.text) == 0 {
					continue // e.g. make run, environment settings
				}
				b.text = strings.ReplaceAll(b.text, docsRepoURL, docsGit.url+"/owner/app")
				ran += runBlock(t, ctx, dir, addr, tok.Token, b)
				if t.Failed() {
					return // later blocks build on this one
				}
			}
		})
	}
	if ran == 0 {
		t.Fatal("no curl example ran")
	}
	t.Logf("%d curl calls ran", ran)
}

// docsRepoURL is the documents' example repository; the test serves it.
const docsRepoURL = "https://github.com/you/app"

// approvalMarker is in the prompt of docs/api.md's approvals example.
const approvalMarker = "(ask first)"

// routeModel serves the model API from plain, and from tools for the
// requests whose body holds marker (every request of that run holds its
// prompt). It returns the URL to use as the upstream.
func routeModel(t *testing.T, marker string, plain, tools *modeltest.Server) string {
	t.Helper()
	tr := &http.Transport{}
	proxy := func(base string) *httputil.ReverseProxy {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		p := httputil.NewSingleHostReverseProxy(u)
		p.Transport = tr
		return p
	}
	toPlain, toTools := proxy(plain.URL), proxy(tools.URL)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		if bytes.Contains(b, []byte(marker)) {
			toTools.ServeHTTP(w, r)
			return
		}
		toPlain.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	return srv.URL
}

// runBlock runs one block in dir (the document's working directory, whose
// state file carries variables between its blocks) and returns how many
// curl calls it made.
func runBlock(t *testing.T, ctx context.Context, dir, addr, token string, b docBlock) int {
	t.Helper()
	got, out, err := runScript(ctx, dir, token, prepare(b.text, addr))
	if err != nil {
		t.Errorf("%s:%d: the example failed: %v\ncalls (status, curl exit, wanted): %q\n--- block ---\n%s\n--- output ---\n%s", b.file, b.line, err, got, b.text, out)
		return len(got)
	}
	if want := curlCount(b.text); len(got) < want {
		t.Errorf("%s:%d: %d curl calls ran, the block has %d\n%s\n--- output ---\n%s", b.file, b.line, len(got), want, b.text, out)
	}
	if testing.Verbose() {
		t.Logf("%s:%d: %q\n%s", b.file, b.line, got, out)
	}
	return len(got)
}

// runScript runs a prepared block after docsPreamble in dir and returns
// its curl calls (status, curl exit, wanted status) and its output.
func runScript(ctx context.Context, dir, token, script string) (calls []string, out []byte, err error) {
	callsFile := filepath.Join(dir, ".calls")
	_ = os.Remove(callsFile)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", docsPreamble+script+"\n")
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TOKEN=" + token,
		"__STATE=" + filepath.Join(dir, ".state"), "__EXPECTF=" + filepath.Join(dir, ".expect"), "__CALLS=" + callsFile,
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Output goes to a file, so Wait returns when bash does; whatever the
	// block left in the background is killed with its process group then.
	outFile, err := os.CreateTemp(dir, ".out")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(outFile.Name())
	defer outFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, outFile
	if err = cmd.Start(); err == nil {
		err = cmd.Wait()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	out, _ = os.ReadFile(outFile.Name())
	if f, ferr := os.Open(callsFile); ferr == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			calls = append(calls, sc.Text())
		}
		f.Close()
	}
	return calls, out, err
}

// TestDocsCurlChecks pins what the examples' curl is held to: a 2xx unless
// an expect line names the status, the named status exactly, a stream cut
// by --max-time after a 2xx, and variables kept from block to block.
func TestDocsCurlChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/404":
			http.Error(w, `{"error":{}}`, http.StatusNotFound)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	for _, tc := range []struct {
		script string
		ok     bool
	}{
		{"curl -fsS localhost:8080/200", true},
		{"curl -sS localhost:8080/404", false},
		{"curl -fsS localhost:8080/404", false},
		{"# expect: 404 (none such)\ncurl -sS localhost:8080/404", true},
		{"# expect: 404\ncurl -fsS localhost:8080/404", true},
		{"# expect: 404\ncurl -sS localhost:8080/200", false},
		{"# expect: 404\nX=$(curl -sS localhost:8080/404)\ncurl -sS localhost:8080/404", false}, // an expectation is used once
		{"curl -fsSN --max-time 1 localhost:8080/stream", true},
		{"curl -fsSN -m 1 localhost:8080/stream", false}, // a timeout is an example's only when it says --max-time
		{"curl -fsSN localhost:8080/stream & sleep 0.1; kill %1; wait %1", false},
		{"curl -fsS --max-time 1 localhost:1/", false},
		{"V=$(curl -fsS localhost:8080/200)", true},
		{`test "$V" = ok`, true},
	} {
		_, out, err := runScript(context.Background(), dir, "tok", prepare(tc.script, addr))
		if (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok %v\n%s", tc.script, err, tc.ok, out)
		}
	}
}

// terminateAll ends every running sandbox the token's user has.
func terminateAll(t *testing.T, base, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := bearerCall(t, ctx, token, "GET", base+"/sandbox?state=running", "")
	var list struct {
		Data struct {
			Sandboxes []struct {
				ID string `json:"sandbox_id"`
			} `json:"sandboxes"`
		} `json:"data"`
	}
	err := json.NewDecoder(res.Body).Decode(&list)
	res.Body.Close()
	if err != nil {
		t.Errorf("list sandboxes: %v", err)
		return
	}
	for _, s := range list.Data.Sandboxes {
		res := bearerCall(t, ctx, token, "DELETE", base+"/sandbox/"+s.ID, "")
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("terminate %s: %d", s.ID, res.StatusCode)
		}
	}
}

var (
	mdLinkRE  = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRE = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
)

// anchor is GitHub's id for a heading: lower case, punctuation other than
// '-' and '_' dropped, spaces as '-'.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors lists the heading ids of a Markdown file (code blocks left out).
func anchors(src string) map[string]bool {
	var prose strings.Builder
	in := false
	for _, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			in = !in
			continue
		}
		if !in {
			prose.WriteString(l + "\n")
		}
	}
	out := map[string]bool{}
	for _, m := range headingRE.FindAllStringSubmatch(prose.String(), -1) {
		h := strings.NewReplacer("`", "", "*", "").Replace(m[1])
		out[anchor(h)] = true
	}
	return out
}

// TestDocsLinks checks that every relative link in README.md and docs/*.md
// names a file of the repository (never a path outside it) and, with a
// #fragment into a Markdown file, one of its headings.
func TestDocsLinks(t *testing.T) {
	root, _ := filepath.Abs(repoRoot)
	for _, f := range docFiles(t) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(repoRoot, f)
		for _, m := range mdLinkRE.FindAllStringSubmatch(string(src), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(link, "#")
			target := f
			if path != "" {
				target = filepath.Join(filepath.Dir(f), path)
			}
			abs, _ := filepath.Abs(target)
			if !strings.HasPrefix(abs, root+string(filepath.Separator)) {
				t.Errorf("%s: link %q leaves the repository", name, link)
				continue
			}
			tsrc, err := os.ReadFile(target)
			if err != nil {
				if st, serr := os.Stat(target); serr == nil && st.IsDir() {
					continue
				}
				t.Errorf("%s: link %q: %v", name, link, err)
				continue
			}
			if frag != "" && strings.HasSuffix(target, ".md") && !anchors(string(tsrc))[frag] {
				t.Errorf("%s: link %q: no heading with that anchor", name, link)
			}
		}
	}
}

// TestDocsConfigTable checks that the README's configuration table and
// docs/operations.md name every variable the server's configuration reads
// (internal/config/config.go).
func TestDocsConfigTable(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "internal", "config", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "## Configuration")
	vars := map[string]bool{"PORT": true}
	for _, m := range regexp.MustCompile(`"([A-Z][A-Z0-9]*_[A-Z0-9_]+)"`).FindAllStringSubmatch(string(cfg), -1) {
		vars[m[1]] = true
	}
	if len(vars) < 10 {
		t.Fatalf("found %d variables in config.go; the pattern no longer matches it", len(vars))
	}
	for v := range vars {
		re := regexp.MustCompile(`\b` + v + `\b`)
		if !re.MatchString(table) {
			t.Errorf("README.md's configuration table does not name %s", v)
		}
		if !re.Match(ops) {
			t.Errorf("docs/operations.md does not name %s", v)
		}
	}
}

// TestParseDoc pins how examples are found: fence languages, console
// prompts, expectations and stray curls.
func TestParseDoc(t *testing.T) {
	src := strings.Join([]string{
		"text",
		"```sh",
		"ID=$(curl -fsS localhost:8080/x | jq -r .data.id)",
		"# expect: 404",
		"curl -sS localhost:8080/y",
		"```",
		"    curl localhost:8080/indented",
		"```console",
		"$ curl -fsS localhost:8080/z \\",
		"    -d '{}'",
		"{\"data\":{}}",
		"```",
		"```json",
		"{}",
		"```",
	}, "\n")
	blocks, stray := parseDoc("x.md", src)
	if len(blocks) != 2 || blocks[0].line != 2 || blocks[1].lang != "console" {
		t.Fatalf("blocks = %+v", blocks)
	}
	if fmt.Sprint(stray) != "[7]" {
		t.Fatalf("stray curl lines = %v, want [7]", stray)
	}
	if got := blocks[1].text; got != "curl -fsS localhost:8080/z \\\n    -d '{}'" {
		t.Fatalf("console commands = %q", got)
	}
	if n := curlCount(blocks[0].text); n != 2 {
		t.Fatalf("curlCount = %d, want 2", n)
	}
	got := prepare(blocks[0].text, "127.0.0.1:1")
	if want := "ID=$(curl -fsS 127.0.0.1:1/x | jq -r .data.id)\n__expect 404\ncurl -sS 127.0.0.1:1/y"; got != want {
		t.Fatalf("prepare = %q, want %q", got, want)
	}
	if a := anchor("Full disks: what `x` does"); a != "full-disks-what-x-does" {
		t.Fatalf("anchor = %q", a)
	}
}
