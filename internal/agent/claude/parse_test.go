package claude_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fixtureLines reads every line of the recorded real CLI output.
func fixtureLines(t testing.TB) map[string][][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/fixtures/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	out := map[string][][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			out[filepath.Base(f)] = append(out[filepath.Base(f)], bytes.Clone(sc.Bytes()))
		}
	}
	return out
}

type goldenEvent struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	Raw  bool            `json:"has_raw"`
}

// TestGolden parses every fixture and compares the events with
// testdata/golden/<fixture>.json (regenerate with -update).
func TestGolden(t *testing.T) {
	for name, lines := range fixtureLines(t) {
		t.Run(name, func(t *testing.T) {
			p := claude.New(claude.Config{}).NewParser()
			var got []goldenEvent
			for _, l := range lines {
				evs := p.Parse(l)
				if len(evs) == 0 {
					t.Fatalf("line produced no event: %.200s", l)
				}
				if evs[0].Raw != strings.TrimSpace(string(l)) {
					t.Errorf("first event of a line does not keep the raw line")
				}
				for _, ev := range evs {
					var compact bytes.Buffer
					if err := json.Compact(&compact, ev.Data); err != nil {
						t.Fatalf("event data is not JSON: %v", err)
					}
					got = append(got, goldenEvent{ev.Type, compact.Bytes(), ev.Raw != ""})
				}
			}
			gotJSON, _ := json.MarshalIndent(got, "", "  ")
			path := filepath.Join("testdata", "golden", strings.TrimSuffix(name, ".jsonl")+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, append(gotJSON, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update): %v", err)
			}
			if d := cmp.Diff(string(bytes.TrimSpace(want)), string(gotJSON)); d != "" {
				t.Errorf("events differ from %s (-want +got):\n%s", path, d)
			}
		})
	}
}

func types(evs []agent.Event) []string {
	var ts []string
	for _, e := range evs {
		ts = append(ts, e.Type)
	}
	return ts
}

// TestScenarios pins the event sequence of each recorded scenario, so a
// golden regeneration cannot silently change what clients see.
func TestScenarios(t *testing.T) {
	all := fixtureLines(t)
	tests := []struct {
		file string
		want []string
	}{
		{"a-text.jsonl", []string{"run.started", "text", "result", "usage"}},
		{"b-tool-bash.jsonl", []string{"run.started", "text", "tool_use", "tool_result", "text", "result", "usage"}},
		{"b2-tool-write.jsonl", []string{"run.started", "text", "tool_use", "tool_result", "text", "result", "usage"}},
		{"c-http500.jsonl", []string{"run.started", "retry", "retry", "error", "result"}},
		{"c-http529.jsonl", []string{"run.started", "retry", "retry", "error", "result"}},
		{"c-midstream-fallback.jsonl", []string{"run.started", "text", "result", "usage"}},
		{"f-max-turns.jsonl", []string{"run.started", "text", "tool_use", "tool_result", "result", "usage"}},
		{"g-SIGINT.jsonl", []string{"run.started", "raw", "raw", "raw", "result"}},
		{"d-resume-unknown.jsonl", []string{"result"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var p claude.Parser
			var got []agent.Event
			for _, l := range all[tt.file] {
				got = append(got, p.Parse(l)...)
			}
			if d := cmp.Diff(tt.want, types(got)); d != "" {
				t.Errorf("event types (-want +got):\n%s", d)
			}
		})
	}

	t.Run("result fields", func(t *testing.T) {
		var p claude.Parser
		var res agent.ResultData
		for _, l := range all["f-max-turns.jsonl"] {
			for _, ev := range p.Parse(l) {
				if ev.Type == agent.TypeResult {
					if err := json.Unmarshal(ev.Data, &res); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		want := agent.ResultData{Subtype: "error_max_turns", IsError: true, NumTurns: 2, DurationMS: 498, DurationAPIMS: 90,
			TotalCostUSD: 0.00075, Usage: agent.Usage{InputTokens: 100, OutputTokens: 10},
			SessionID: "add3a80c-4d01-4519-8511-5fdc5df95d9c", StopReason: "tool_use", TerminalReason: "max_turns"}
		res.Errors = nil
		if d := cmp.Diff(want, res); d != "" {
			t.Errorf("result (-want +got):\n%s", d)
		}
	})
}

func TestMalformed(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"not json", []string{"raw"}},
		{`{"type":"assistant"`, []string{"raw"}},
		{`[1,2]`, []string{"raw"}},
		{`{"type":"future_thing","x":1}`, []string{"raw"}},
		{`{"type":"system","subtype":"api_retry","attempt":"one"}`, []string{"raw"}},
		{`{"type":"assistant","message":{"content":"plain string"}}`, []string{"text"}},
		{`{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"x"}]}}`, []string{"raw"}},
		{`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"a"},{"type":"image"}]}]}}`, []string{"tool_result"}},
		{"{\"type\":\"assistant\",\"message\":{\"content\":\"\xff\"}}", []string{"text"}}, // invalid UTF-8 is replaced, not fatal,
	}
	for _, tt := range tests {
		var p claude.Parser
		evs := p.Parse([]byte(tt.line))
		if d := cmp.Diff(tt.want, types(evs)); d != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tt.line, d)
		}
		for _, ev := range evs {
			if !json.Valid(ev.Data) {
				t.Errorf("Parse(%q): data %q is not JSON", tt.line, ev.Data)
			}
		}
	}
}

func FuzzStreamJSON(f *testing.F) {
	for _, lines := range fixtureLines(f) {
		for _, l := range lines {
			f.Add(l)
		}
	}
	f.Add([]byte(`{"type":"result","usage":null,"errors":[1]}`))
	f.Add([]byte("\xff{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p claude.Parser
		evs := p.Parse(b)
		if len(bytes.TrimSpace(b)) > 0 && len(evs) == 0 {
			t.Fatalf("non-blank line dropped: %q", b)
		}
		for _, ev := range evs {
			if ev.Type == "" {
				t.Fatal("event without type")
			}
			if !json.Valid(ev.Data) {
				t.Fatalf("data is not JSON: %q", ev.Data)
			}
		}
	})
}

func TestCommand(t *testing.T) {
	c := claude.New(claude.Config{Bin: "/opt/techboss/claude/bin/claude", Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2", "ANTHROPIC_AUTH_TOKEN": "x"}})
	argv, env := c.Command(agent.CommandRequest{
		Prompt: "-rf everything", ResumeSession: "s1", Root: true,
		Options: agent.Options{Model: "m", MaxTurns: 3, AllowedTools: []string{"Bash", "Write"}, AppendSystemPrompt: "be brief"},
		BaseURL: "http://127.0.0.1:1/llm/anthropic", APIKey: "tok",
	})
	wantArgv := []string{"/opt/techboss/claude/bin/claude", "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages",
		"--resume", "s1", "--model", "m", "--max-turns", "3", "--dangerously-skip-permissions",
		"--allowedTools=Bash,Write", "--append-system-prompt", "be brief", "--", "-rf everything"}
	if d := cmp.Diff(wantArgv, argv); d != "" {
		t.Errorf("argv (-want +got):\n%s", d)
	}
	wantEnv := map[string]string{
		"CLAUDE_CONFIG_DIR": "/workspace/.techboss/claude", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
		"HOME": "/workspace/.techboss/home", "IS_SANDBOX": "1", "CLAUDE_CODE_MAX_RETRIES": "2",
		"ANTHROPIC_BASE_URL": "http://127.0.0.1:1/llm/anthropic", "ANTHROPIC_API_KEY": "tok",
	}
	if d := cmp.Diff(wantEnv, env); d != "" {
		t.Errorf("env (-want +got):\n%s", d)
	}
	argv, _ = c.Command(agent.CommandRequest{Prompt: "p"})
	if d := cmp.Diff([]string{"/opt/techboss/claude/bin/claude", "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages", "--dangerously-skip-permissions", "--", "p"}, argv); d != "" {
		t.Errorf("default permissions argv (-want +got):\n%s", d)
	}
	argv, env = c.Command(agent.CommandRequest{Prompt: "p", Options: agent.Options{PermissionMode: "acceptEdits"}})
	if d := cmp.Diff([]string{"/opt/techboss/claude/bin/claude", "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages", "--permission-mode", "acceptEdits", "--", "p"}, argv); d != "" {
		t.Errorf("argv (-want +got):\n%s", d)
	}
	if _, ok := env["IS_SANDBOX"]; ok {
		t.Error("IS_SANDBOX set for a non-root run")
	}
}

// The deltas of a streamed block, appended at their offsets, are the block
// the assistant line carries whole afterwards, text and tool input alike.
func TestDeltasRebuildTheBlocks(t *testing.T) {
	all := fixtureLines(t)
	for _, file := range []string{"e-partial-text.jsonl", "e-partial-tool.jsonl"} {
		t.Run(file, func(t *testing.T) {
			var p claude.Parser
			built := map[string]string{} // message/index -> text so far
			var texts, inputs []string
			var deltaTypes []string
			for _, l := range all[file] {
				for _, ev := range p.Parse(l) {
					switch ev.Type {
					case agent.TypeTextDelta, agent.TypeToolInputDelta:
						var d agent.DeltaData
						if err := json.Unmarshal(ev.Data, &d); err != nil {
							t.Fatal(err)
						}
						if d.MessageID == "" {
							t.Errorf("delta without a message id: %s", ev.Data)
						}
						k := fmt.Sprintf("%s/%d", d.MessageID, d.Index)
						if d.Offset != len(built[k]) {
							t.Fatalf("delta at offset %d, have %d bytes of %s", d.Offset, len(built[k]), k)
						}
						built[k] += d.Text
						if ev.Type == agent.TypeToolInputDelta && (d.ToolUseID == "" || d.Name != "Bash") {
							t.Errorf("tool input delta does not name its call: %s", ev.Data)
						}
						if len(deltaTypes) == 0 || deltaTypes[len(deltaTypes)-1] != ev.Type {
							deltaTypes = append(deltaTypes, ev.Type)
						}
					case agent.TypeText:
						var d agent.TextData
						_ = json.Unmarshal(ev.Data, &d)
						texts = append(texts, d.Text)
					case agent.TypeToolUse:
						var d agent.ToolUseData
						_ = json.Unmarshal(ev.Data, &d)
						inputs = append(inputs, string(d.Input))
					}
				}
			}
			var rebuilt []string
			for _, v := range built {
				rebuilt = append(rebuilt, v)
			}
			for _, want := range texts {
				if !slices.Contains(rebuilt, want) {
					t.Errorf("text %q not rebuilt from deltas (have %q)", want, rebuilt)
				}
			}
			for _, want := range inputs {
				found := false
				for _, r := range rebuilt {
					var a, b any
					if json.Unmarshal([]byte(r), &a) == nil && json.Unmarshal([]byte(want), &b) == nil && cmp.Equal(a, b) {
						found = true
					}
				}
				if !found {
					t.Errorf("tool input %s not rebuilt from deltas (have %q)", want, rebuilt)
				}
			}
			if len(texts) == 0 || (file == "e-partial-tool.jsonl" && len(inputs) == 0) {
				t.Fatalf("fixture has no text or tool call: %v %v", texts, inputs)
			}
		})
	}
}
