package claude_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/modeltest"
)

// TestPinnedCLIScenarios runs every recorded scenario against the pinned
// Claude Code CLI (TECHBOSS_CLAUDE_BIN, the version scripts/deps.sh
// installs) and the scripted model, parses its output with the adapter's
// argv and parser, and compares the events to testdata/cli-scenarios
// (regenerate with -update). A CLI bump that changes what clients see —
// an event type, order, a field, its version — fails here, line by line.
func TestPinnedCLIScenarios(t *testing.T) {
	bin := modeltest.ClaudeBin(t)
	scenarios := []struct {
		name    string
		replies func(dir string) []modeltest.Reply
		opts    agent.Options
	}{
		{"text", func(string) []modeltest.Reply {
			return []modeltest.Reply{modeltest.Text("Hello from the scripted model.\nSecond line.")}
		}, agent.Options{}},
		{"tool-bash", func(string) []modeltest.Reply {
			return []modeltest.Reply{modeltest.Bash("echo bash-ran"), modeltest.Text("Done.")}
		}, agent.Options{}},
		{"tool-write", func(dir string) []modeltest.Reply {
			return []modeltest.Reply{modeltest.Write(filepath.Join(dir, "hello.txt"), "written\n"), modeltest.Text("Wrote it.")}
		}, agent.Options{}},
		{"http-500", func(string) []modeltest.Reply { return []modeltest.Reply{modeltest.HTTPError(500).Times(3)} }, agent.Options{}},
		{"http-529", func(string) []modeltest.Reply { return []modeltest.Reply{modeltest.HTTPError(529).Times(3)} }, agent.Options{}},
		{"http-401", func(string) []modeltest.Reply { return []modeltest.Reply{modeltest.HTTPError(401).Times(3)} }, agent.Options{}},
		{"midstream-fallback", func(string) []modeltest.Reply {
			return []modeltest.Reply{modeltest.MidstreamError().Times(3), modeltest.Text("Recovered.")}
		}, agent.Options{}},
		{"max-turns", func(string) []modeltest.Reply {
			return []modeltest.Reply{modeltest.Bash("echo one"), modeltest.Bash("echo two"), modeltest.Text("never")}
		}, agent.Options{MaxTurns: 1}},
	}
	cli := claude.New(claude.Config{Bin: bin, Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2"}})
	// The same work directory every time (the model's tool input names it,
	// and deltas cut it anywhere), held under a lock against another
	// process running this test.
	root := filepath.Join(os.TempDir(), "techboss-cli-scenarios")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(root, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			dir := t.TempDir()
			work := filepath.Join(root, "work")
			if err := os.RemoveAll(work); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(work, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(work) })
			model := modeltest.New(t, sc.replies(work)...)
			argv, env := cli.Command(agent.CommandRequest{Prompt: "scenario " + sc.name, Options: sc.opts,
				BaseURL: model.URL, APIKey: "sk-scenario", Root: os.Geteuid() == 0})
			env["CLAUDE_CONFIG_DIR"], env["HOME"] = filepath.Join(dir, "config"), filepath.Join(dir, "home")
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = work
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, _ := cmd.Output() // failures exit 1: their output is the scenario
			p := cli.NewParser()
			var got []string
			lines := bufio.NewScanner(bytes.NewReader(out))
			lines.Buffer(nil, 16<<20)
			for lines.Scan() {
				for _, ev := range p.Parse(lines.Bytes()) {
					got = append(got, ev.Type+" "+normalize(string(ev.Data), work))
				}
			}
			path := filepath.Join("testdata", "cli-scenarios", sc.name+".txt")
			text := strings.Join(got, "\n") + "\n"
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read %s (run with -update): %v", path, err)
			}
			if d := cmp.Diff(string(want), text); d != "" {
				t.Errorf("the pinned CLI's %s scenario differs from %s (-want +got):\n%s", sc.name, path, d)
			}
		})
	}
}

// Values that change from run to run: ids, times, durations, costs, paths.
var volatile = regexp.MustCompile(`"(session_id|uuid|id|tool_use_id|message_id|duration_ms|duration_api_ms|ttft_ms|request_id|total_cost_usd|cost_usd|retry_delay_ms|timestamp)":("[^"]*"|[0-9.e+-]+)`)

var loopback = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

func normalize(data, work string) string {
	data = strings.ReplaceAll(data, work, "$WORK")
	data = loopback.ReplaceAllString(data, "127.0.0.1:PORT")
	data = volatile.ReplaceAllString(data, `"$1":"…"`)
	var v any
	if json.Unmarshal([]byte(data), &v) == nil {
		b, _ := json.Marshal(v) // sorted keys
		return string(b)
	}
	return data
}
