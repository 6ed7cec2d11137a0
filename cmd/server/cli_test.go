package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// buildCLI builds the techboss command once for the tests that run it.
func buildCLI(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "techboss-cli-bin-")
		if err != nil {
			cliErr = err
			return
		}
		cliBin = filepath.Join(dir, "techboss")
		out, err := exec.Command("go", "build", "-o", cliBin, "../techboss").CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("go build ../techboss: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliBin
}

// cliServer starts a server whose runs talk to model, with an admin
// account, and returns it and an admin client.
func cliServer(t *testing.T, model *modeltest.Server, extra ...map[string]string) (*instance, *client.Client, map[string]string) {
	t.Helper()
	sandboxtest.RequireLocal(t)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "sk-ant-upstream-cli-0123456789",
		"TECHBOSS_CLAUDE_BIN": modeltest.ClaudeBin(t),
	}
	for _, x := range extra {
		for k, v := range x {
			env[k] = v
		}
	}
	in := start(t, env)
	ctx := context.Background()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	// Registered after start, so it runs before the server stops: no
	// sandbox a failed script left behind outlives the test.
	t.Cleanup(func() {
		page, err := c.ListSandboxes(context.Background(), client.ListSandboxesOptions{Limit: 200, States: []string{"running", "creating"}})
		if err != nil {
			t.Errorf("list sandboxes at cleanup: %v", err)
			return
		}
		for _, sb := range page.Sandboxes {
			_, _ = c.TerminateSandbox(context.Background(), sb.ID)
		}
	})
	return in, c, env
}

// TestCLI runs the techboss CLI's scripts (testdata/cli/*.txtar) against a
// real server: real sandboxes, and the real Claude Code CLI against a
// scripted model that always answers with the same text.
func TestCLI(t *testing.T) {
	bin := buildCLI(t)
	model := modeltest.New(t, modeltest.Text("Hello from the scripted model.\nSecond line."))
	in, _, env := cliServer(t, model)
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/cli",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
			e.Setenv("TECHBOSS_URL", in.url)
			e.Setenv("XDG_CONFIG_HOME", filepath.Join(e.WorkDir, ".config"))
			e.Setenv("HOME", filepath.Join(e.WorkDir, "home"))
			e.Setenv("ADMIN_EMAIL", env["TECHBOSS_ADMIN_EMAIL"])
			return os.WriteFile(filepath.Join(e.WorkDir, "password"), []byte(env["TECHBOSS_ADMIN_PASSWORD"]+"\n"), 0o600)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"json": cmdJSON,
		},
	})
}

// cmdJSON reads stdout as JSON: `json PATH VALUE` checks the value at a
// dotted path (array indices are numbers, len() is a length) is VALUE,
// `json PATH -> VAR` sets VAR to it, `json PATH ~ REGEXP` matches it.
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: json PATH VALUE | json PATH -> VAR | json PATH ~ REGEXP")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile("stdout")), &v); err != nil {
		ts.Fatalf("stdout is not JSON: %v", err)
	}
	for _, k := range strings.Split(strings.Trim(args[0], "."), ".") {
		if k == "" {
			continue
		}
		switch x := v.(type) {
		case []any:
			if k == "len()" {
				v = float64(len(x))
				continue
			}
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				ts.Fatalf("%s: no element %q in an array of %d", args[0], k, len(x))
			}
			v = x[i]
		case map[string]any:
			if k == "len()" {
				v = float64(len(x))
				continue
			}
			var ok bool
			if v, ok = x[k]; !ok {
				ts.Fatalf("%s: no key %q", args[0], k)
			}
		default:
			ts.Fatalf("%s: %q is not in a scalar", args[0], k)
		}
	}
	got := fmt.Sprint(v)
	if _, ok := v.(string); !ok {
		b, _ := json.Marshal(v)
		got = string(b)
	}
	switch {
	case len(args) == 3 && args[1] == "->":
		ts.Setenv(args[2], got)
	case len(args) == 3 && args[1] == "~":
		m, err := regexp.MatchString(args[2], got)
		ts.Check(err)
		if m == neg {
			ts.Fatalf("%s = %q; match %q: %v", args[0], got, args[2], m)
		}
	case len(args) == 2:
		if (got == args[1]) == neg {
			ts.Fatalf("%s = %q, want %s%q", args[0], got, map[bool]string{true: "not ", false: ""}[neg], args[1])
		}
	default:
		ts.Fatalf("usage: json PATH VALUE | json PATH -> VAR | json PATH ~ REGEXP")
	}
}

// TestCLIClaudeInterrupt: Ctrl-C (SIGINT) during `techboss claude` cancels
// the run on the server, not only the stream, and exits 130.
func TestCLIClaudeInterrupt(t *testing.T) {
	bin := buildCLI(t)
	model := modeltest.New(t, modeltest.Hang("thinking forever"))
	in, c, _ := cliServer(t, model)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tok, err := c.CreateToken(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host"})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "claude", sb.SandboxID, "never ends")
	cmd.Env = append(os.Environ(), "TECHBOSS_URL="+in.url, "TECHBOSS_TOKEN="+tok.Token, "XDG_CONFIG_HOME="+t.TempDir())
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The model has the request (the run is underway): interrupt.
	if err := model.AwaitMessageRequests(ctx, 1); err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("the run never reached the model: %v\n%s", err, stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("techboss claude after SIGINT: %v, want exit 130\nstderr: %s", err, stderr.String())
	}
	first, _, _ := strings.Cut(stderr.String(), "\n")
	runID := strings.TrimPrefix(first, "run ")
	if !strings.Contains(stderr.String(), "cancelled run "+runID) {
		t.Fatalf("stderr = %q, want the run and its cancellation", stderr.String())
	}
	st, err := c.RunEvents(ctx, runID, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done, err := st.Wait()
	if err != nil || done.Status != "cancelled" {
		t.Fatalf("run %s ended %+v, %v; want cancelled", runID, done, err)
	}
}

// syncBuffer is a bytes buffer safe for a process's writes and a test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDocsCLI runs docs/cli.md's quick start block as written (bash, the
// built techboss on PATH, the server's address for localhost:8080): a new
// user reaches a streamed agent answer from the CLI.
func TestDocsCLI(t *testing.T) {
	bin := buildCLI(t)
	const answer = "src/main.py prints 42."
	model := modeltest.New(t, modeltest.Text(answer))
	in, _, _ := cliServer(t, model, map[string]string{"TECHBOSS_ADMIN_PASSWORD": "a long password"})
	src, err := os.ReadFile(filepath.Join(repoRoot, "docs", "cli.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := parseDoc("docs/cli.md", string(src))
	var quick string
	for _, b := range blocks {
		if b.lang == "sh" && strings.Contains(b.text, "techboss login") {
			quick = b.text
			break
		}
	}
	if quick == "" {
		t.Fatal("docs/cli.md has no sh block with techboss login")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.ReplaceAll(quick, "localhost:8080", strings.TrimPrefix(in.url, "http://")))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, ".config"), "TECHBOSS_URL=", "TECHBOSS_TOKEN=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the quick start failed: %v\n%s", err, out)
	}
	for _, want := range []string{"Logged in to " + in.url + " as admin@example.com", "copied 1 files", "\n42\n", answer + "\n", "terminated"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the quick start's output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "src-after", "main.py")); err != nil || string(b) != "print(6 * 7)\n" {
		t.Errorf("src-after/main.py = %q, %v", b, err)
	}
}
