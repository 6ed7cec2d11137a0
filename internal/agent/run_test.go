package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image"
	pngenc "image/png"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
)

// TestRunScenarios drives the real Claude CLI in a real local sandbox
// through the gateway against the scripted model, one fixture scenario
// after another in the same sandbox (each with a new session).
func TestRunScenarios(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	fresh := agent.Options{NewSession: true}

	t.Run("text", func(t *testing.T) {
		e.model.Reset(modeltest.Text("Hello from the scripted model.\nSecond line."))
		r, evs := e.do("alice", sb.ID, "say hello", fresh)
		checkSeqs(t, evs)
		// The gateway's usage events arrive when the answer has streamed,
		// so where they fall among the CLI's lines is a race: compare the
		// CLI's sequence, and count the usage events.
		var got []string
		usage := 0
		for _, typ := range types(evs) {
			if typ == "usage" {
				usage++
				continue
			}
			// Token deltas (how many depends on coalescing) and the
			// model stream's framing lines, passed through as raw.
			if typ == agent.TypeTextDelta || typ == agent.TypeRaw {
				continue
			}
			got = append(got, typ)
		}
		want := []string{"run.started", "text", "result", "done"}
		if d := cmp.Diff(want, got); d != "" || usage != 2 {
			t.Errorf("events (-want +got):\n%s\nusage events: got %d, want 2", d, usage)
		}
		if r.Status != agent.Succeeded || r.SessionID == "" || r.ExitCode == nil || *r.ExitCode != 0 || r.NumTurns != 1 {
			t.Errorf("run = %+v", r)
		}
		if txt := decode[agent.TextData](t, find(evs, agent.TypeText)[0]); txt.Text != "Hello from the scripted model.\nSecond line." {
			t.Errorf("text = %q", txt.Text)
		}
		st := decode[agent.StartedData](t, evs[0])
		if st.SessionID != r.SessionID || st.Cwd != "/workspace" {
			t.Errorf("run.started = %+v", st)
		}
	})

	t.Run("bash tool runs in the sandbox", func(t *testing.T) {
		e.model.Reset(modeltest.Bash("echo bash-ran-here > /workspace/bash-proof.txt; hostname; id -u"), modeltest.Text("Done."))
		r, evs := e.do("alice", sb.ID, "run a command", fresh)
		if r.Status != agent.Succeeded {
			t.Fatalf("run = %+v", r)
		}
		uses, results := find(evs, agent.TypeToolUse), find(evs, agent.TypeToolResult)
		if len(uses) != 1 || len(results) != 1 {
			t.Fatalf("events %v", types(evs))
		}
		if u := decode[agent.ToolUseData](t, uses[0]); u.Name != "Bash" || !strings.Contains(string(u.Input), "bash-proof") {
			t.Errorf("tool_use = %+v", u)
		}
		res := decode[agent.ToolResultData](t, results[0])
		if res.IsError || !strings.Contains(res.Content, "sandbox") {
			t.Errorf("tool_result = %+v; want the sandbox's hostname", res)
		}
		if got, err := e.readFile("alice", sb.ID, "/workspace/bash-proof.txt"); err != nil || got != "bash-ran-here\n" {
			t.Errorf("bash-proof.txt = %q, %v", got, err)
		}
	})

	t.Run("write tool", func(t *testing.T) {
		e.model.Reset(modeltest.Write("/workspace/hello.txt", "written by the agent\n"), modeltest.Text("Wrote it."))
		r, evs := e.do("alice", sb.ID, "write a file", fresh)
		if r.Status != agent.Succeeded {
			t.Fatalf("run = %+v", r)
		}
		if u := decode[agent.ToolUseData](t, find(evs, agent.TypeToolUse)[0]); u.Name != "Write" {
			t.Errorf("tool_use = %+v", u)
		}
		if got, err := e.readFile("alice", sb.ID, "/workspace/hello.txt"); err != nil || got != "written by the agent\n" {
			t.Errorf("hello.txt = %q, %v", got, err)
		}
	})

	for _, status := range []int{500, 529} {
		t.Run("http "+http(status), func(t *testing.T) {
			e.model.Reset(modeltest.HTTPError(status).Times(3), modeltest.Text("unused"))
			r, evs := e.do("alice", sb.ID, "fail please", fresh)
			retries := find(evs, agent.TypeRetry)
			if len(retries) != 2 {
				t.Errorf("got %d retry events, want 2 (CLAUDE_CODE_MAX_RETRIES=2): %v", len(retries), types(evs))
			}
			for i, ev := range retries {
				if d := decode[agent.RetryData](t, ev); d.Attempt != i+1 || d.ErrorStatus != status {
					t.Errorf("retry %d = %+v", i, d)
				}
			}
			res := decode[agent.ResultData](t, find(evs, agent.TypeResult)[0])
			if !res.IsError || len(find(evs, agent.TypeError)) != 1 {
				t.Errorf("result = %+v, events %v", res, types(evs))
			}
			if r.Status != agent.Failed || r.ExitCode == nil || *r.ExitCode != 1 || !strings.Contains(r.Error, "API Error") {
				t.Errorf("run = %+v", r)
			}
		})
	}

	t.Run("mid-stream error falls back", func(t *testing.T) {
		e.model.Reset(modeltest.MidstreamError().Times(3), modeltest.Text("Recovered through the fallback."))
		before := len(e.model.MessageRequests())
		r, evs := e.do("alice", sb.ID, "stream then fail", fresh)
		if r.Status != agent.Succeeded {
			t.Fatalf("run = %+v events %v", r, types(evs))
		}
		if txt := decode[agent.TextData](t, find(evs, agent.TypeText)[0]); txt.Text != "Recovered through the fallback." {
			t.Errorf("text = %q", txt.Text)
		}
		reqs := e.model.MessageRequests()[before:]
		if last := reqs[len(reqs)-1]; last.Stream {
			t.Errorf("the last request was streaming; want the non-streaming fallback")
		}
	})

	t.Run("max turns", func(t *testing.T) {
		e.model.Reset(modeltest.Bash("true"), modeltest.Text("never reached"))
		r, evs := e.do("alice", sb.ID, "loop", agent.Options{NewSession: true, MaxTurns: 1})
		res := decode[agent.ResultData](t, find(evs, agent.TypeResult)[0])
		if res.Subtype != "error_max_turns" || !res.IsError || r.Status != agent.Failed {
			t.Errorf("result %+v, run %+v", res, r)
		}
	})
}

func http(code int) string { return map[int]string{500: "500", 529: "529"}[code] }

// TestResumeAndSession: the next prompt resumes the sandbox's session (the
// model sees the first turn); new_session starts over; a session the CLI
// cannot find fails the run with the CLI's message.
func TestResumeAndSession(t *testing.T) {
	e := newEnv(t, envOpts{}, modeltest.Text("The secret word is PELICAN."), modeltest.Text("You asked about the secret word."))
	sb := e.sandbox("alice")
	r1, _ := e.do("alice", sb.ID, "remember the secret", agent.Options{})
	if r1.Status != agent.Succeeded || r1.ResumedFrom != "" {
		t.Fatalf("first run %+v", r1)
	}
	// Closing the sandbox's gateway listener (as on terminate) is safe: the
	// next run opens a new one.
	e.svc.ReleaseSandbox(sb.ID)
	r2, _ := e.do("alice", sb.ID, "what did I ask?", agent.Options{})
	if r2.Status != agent.Succeeded || r2.ResumedFrom != r1.SessionID || r2.SessionID != r1.SessionID {
		t.Fatalf("second run %+v, want resumed session %s", r2, r1.SessionID)
	}
	reqs := e.model.MessageRequests()
	last := reqs[len(reqs)-1].Text()
	for _, want := range []string{"remember the secret", "PELICAN", "what did I ask?"} {
		if !strings.Contains(last, want) {
			t.Errorf("resumed request lacks %q", want)
		}
	}

	e.model.Script(modeltest.Text("fresh"))
	r3, _ := e.do("alice", sb.ID, "new topic", agent.Options{NewSession: true})
	if r3.ResumedFrom != "" || r3.SessionID == r1.SessionID || r3.Status != agent.Succeeded {
		t.Errorf("new_session run %+v", r3)
	}

	// The session file is gone (e.g. someone cleaned the workspace): the
	// CLI reports an unknown session and the run fails with its message.
	e.exec("alice", sb.ID, "rm", "-rf", "/workspace/.techboss/claude/projects")
	r4, evs := e.do("alice", sb.ID, "continue", agent.Options{})
	if r4.Status != agent.Failed || !strings.Contains(r4.Error, "No conversation found") {
		t.Errorf("unknown session run %+v events %v", r4, types(evs))
	}
}

// TestCancel: SIGINT makes the CLI write its final result; the run ends
// cancelled with that result kept. A second run is refused while one is
// active.
func TestCancel(t *testing.T) {
	e := newEnv(t, envOpts{grace: 30 * time.Second}, modeltest.Hang("Working on it"))
	sb := e.sandbox("alice")
	r := e.start("alice", sb.ID, "take your time", agent.Options{})

	_, err := e.svc.Start(context.Background(), "alice", sb.ID, "another", agent.Options{})
	if pe, ok := errs.Public(err); !ok || pe.Kind != errs.Conflict || !strings.Contains(pe.Message, r.ID) {
		t.Errorf("second start = %v, want conflict naming %s", err, r.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.model.AwaitMessageRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, "bob", r.ID); errs.KindOf(err) != errs.NotFound {
		t.Errorf("cancel by another user = %v, want not found", err)
	}
	if _, err := e.svc.Cancel(ctx, "alice", r.ID); err != nil {
		t.Fatal(err)
	}
	got, evs := e.wait("alice", r.ID)
	if got.Status != agent.Cancelled {
		t.Fatalf("run %+v events %v", got, types(evs))
	}
	// The CLI answers a SIGINT that lands mid-answer with a final result
	// (fixture g-SIGINT), which is kept; one that lands before the CLI has
	// read any of the answer ends it without a result line. Which one
	// happens is the CLI's timing, so either is accepted, but a result
	// that was written must be kept and be the aborted one.
	res := find(evs, agent.TypeResult)
	if len(res) > 1 {
		t.Fatalf("%d results: %v", len(res), types(evs))
	}
	if len(res) == 1 {
		if d := decode[agent.ResultData](t, res[0]); d.Subtype != "error_during_execution" {
			t.Errorf("result %+v", d)
		}
	} else {
		t.Logf("the CLI was interrupted before it read the answer and wrote no result: %v", types(evs))
	}
	if len(res) == 1 && (got.ExitCode == nil || *got.ExitCode != 0) {
		t.Errorf("exit code %v, want 0 (the CLI exits cleanly on SIGINT mid-answer)", got.ExitCode)
	}
	if _, err := e.svc.Cancel(ctx, "alice", r.ID); errs.KindOf(err) != errs.Conflict {
		t.Errorf("cancel after end = %v, want conflict", err)
	}
}

// TestTakenForDeadStopsItsRuns: a replica cut off from the database for
// longer than ReplicaTimeout is taken for dead by another, which interrupts
// its runs. When it renews itself again it learns so and stops those runs'
// CLIs, and their ended records stay as the other replica wrote them.
func TestTakenForDeadStopsItsRuns(t *testing.T) {
	e := newEnv(t, envOpts{grace: 30 * time.Second, replicaTimeout: 400 * time.Millisecond}, modeltest.Hang("Working on it"))
	sb := e.sandbox("alice")
	r := e.start("alice", sb.ID, "take your time", agent.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.model.AwaitMessageRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Another replica takes this one for dead: its sweep interrupts the run
	// and forgets the replica, in one transaction.
	marked, err := e.db.InterruptOrphanedRuns(ctx, "rep_other", time.Now().Add(time.Hour), time.Now(), "replica gone")
	if err != nil || len(marked) != 1 || marked[0].ID != r.ID {
		t.Fatalf("the other replica's sweep = %v, %v", marked, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.svc.Hub().Live(r.ID) {
		if time.Now().After(deadline) {
			t.Fatal("the run of a replica taken for dead is still going")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := e.db.GetRun(ctx, r.ID)
	if err != nil || got.Status != agent.Interrupted || got.Error != "replica gone" {
		t.Fatalf("run = %+v, %v; want interrupted as the other replica wrote it", got, err)
	}
}

// TestDirectCredentials: in direct mode the CLI gets the upstream key and
// URL itself (so the sandbox needs network to reach it); the run's usage
// comes from the CLI's own result.
func TestDirectCredentials(t *testing.T) {
	e := newEnv(t, envOpts{credentials: agent.CredentialsDirect},
		modeltest.Bash("env | tee /workspace/env.txt"), modeltest.Text("done"))
	sb := e.sandboxWith("alice", sandbox.Spec{ImageBase: "host", Network: sandbox.Network{Mode: "full"}})
	e.forwardModel(sb)
	r, evs := e.do("alice", sb.ID, "show env", agent.Options{})
	if r.Status != agent.Succeeded {
		t.Fatalf("run %+v events %v", r, types(evs))
	}
	env, err := e.readFile("alice", sb.ID, "/workspace/env.txt")
	if err != nil || !strings.Contains(env, "ANTHROPIC_API_KEY=sk-direct") || !strings.Contains(env, "ANTHROPIC_BASE_URL=http://"+directModelAddr) {
		t.Errorf("direct env lacks the key or URL (%v):\n%s", err, env)
	}
	// The key the tool printed is redacted from the event log.
	res := decode[agent.ToolResultData](t, find(evs, agent.TypeToolResult)[0])
	if strings.Contains(res.Content, "sk-direct") || !strings.Contains(res.Content, "ANTHROPIC_API_KEY=[REDACTED]") {
		t.Errorf("tool_result leaks or lacks the redacted key:\n%s", res.Content)
	}
	stored, _ := e.db.RunEvents(context.Background(), r.ID, 0, 0)
	for _, ev := range stored {
		if strings.Contains(ev.Raw, "sk-direct") || strings.Contains(string(ev.Data), "sk-direct") {
			t.Errorf("event %d stores the key", ev.Seq)
		}
	}
	if got := e.model.MessageRequests()[0].Header.Get("x-api-key"); got != "sk-direct" {
		t.Errorf("model got key %q", got)
	}
	if r.Usage != (agent.Usage{InputTokens: 200, OutputTokens: 40}) || r.CostNanoUSD == 0 {
		t.Errorf("run usage %+v cost %d, want the CLI's totals", r.Usage, r.CostNanoUSD)
	}
}

// TestTextStreamsBeforeTheMessageEnds: the model's first tokens reach a
// follower while the model is still answering (the scripted model holds
// the rest of its answer until the test has seen them), and the deltas,
// put together at their offsets, are the text the message ends with.
func TestTextStreamsBeforeTheMessageEnds(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	gate := make(chan struct{})
	const answer = "Streaming, one token at a time.\nSecond line of the answer."
	e.model.Reset(modeltest.Gated(answer, gate))
	r := e.start("alice", sb.ID, "stream please", agent.Options{NewSession: true})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var evs []agent.Event
	for len(find(evs, agent.TypeTextDelta)) == 0 {
		more, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("no text_delta while the model holds its answer: %v (events %v)", err, types(evs))
		}
		evs = append(evs, more...)
	}
	sub.Close()
	if n := len(find(evs, agent.TypeText)); n != 0 {
		t.Fatalf("the whole text arrived before the model finished: %v", types(evs))
	}
	first := decode[agent.DeltaData](t, find(evs, agent.TypeTextDelta)[0])
	if first.Offset != 0 || !strings.HasPrefix(answer, first.Text) || first.MessageID == "" {
		t.Errorf("first delta = %+v", first)
	}
	close(gate)

	run, all := e.wait("alice", r.ID)
	if run.Status != agent.Succeeded {
		t.Fatalf("run = %+v", run)
	}
	checkSeqs(t, all)
	built := ""
	for _, ev := range find(all, agent.TypeTextDelta) {
		d := decode[agent.DeltaData](t, ev)
		if d.Offset != len(built) {
			t.Fatalf("delta at offset %d after %d bytes", d.Offset, len(built))
		}
		built += d.Text
	}
	texts := find(all, agent.TypeText)
	if len(texts) != 1 {
		t.Fatalf("text events: %d, want 1 (%v)", len(texts), types(all))
	}
	if txt := decode[agent.TextData](t, texts[0]); built != answer || txt.Text != answer || !txt.Streamed {
		t.Errorf("deltas %q, text %+v; want both %q", built, txt, answer)
	}

	// Coalescing: a long answer streamed at once (500 chunks of 12 bytes
	// in the model's stream, one CLI line each) is a handful of delta
	// events that still hold every byte, in order.
	long := strings.Repeat("0123456789a\n", 500)
	e.model.Reset(modeltest.Text(long))
	run, all = e.do("alice", sb.ID, "a long answer", agent.Options{NewSession: true})
	if run.Status != agent.Succeeded {
		t.Fatalf("run = %+v", run)
	}
	deltas := find(all, agent.TypeTextDelta)
	built = ""
	for _, ev := range deltas {
		d := decode[agent.DeltaData](t, ev)
		if d.Offset != len(built) {
			t.Fatalf("delta at offset %d after %d bytes", d.Offset, len(built))
		}
		built += d.Text
	}
	if built != long {
		t.Errorf("deltas rebuild %d of %d bytes", len(built), len(long))
	}
	if len(deltas) > 100 {
		t.Errorf("%d text_delta events for 500 streamed chunks: not coalesced", len(deltas))
	}
	t.Logf("500 chunks -> %d text_delta events", len(deltas))
}

// TestUpstreamDownFailsFast: with the model API unreachable, the gateway
// answers the CLI at once, the CLI retries as configured (one retry event
// each), and the run fails with the real cause — the upstream the operator
// configured and the network error — not the gateway's address in the
// sandbox.
func TestUpstreamDownFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	e := newEnv(t, envOpts{upstream: "http://" + down})
	sb := e.sandbox("alice")
	start := time.Now()
	r, evs := e.do("alice", sb.ID, "anyone there?", agent.Options{NewSession: true})
	t.Logf("run failed after %v with %q", time.Since(start).Round(time.Millisecond), r.Error)
	if r.Status != agent.Failed {
		t.Fatalf("run = %+v", r)
	}
	if n := len(find(evs, agent.TypeRetry)); n != 2 {
		t.Errorf("%d retry events, want 2 (CLAUDE_CODE_MAX_RETRIES=2): %v", n, types(evs))
	}
	for _, want := range []string{down, "connection refused", "anthropic"} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("run error %q does not name %q", r.Error, want)
		}
	}
	if strings.Contains(r.Error, "/llm/anthropic") || strings.Contains(r.Error, "sk-upstream-secret-key") {
		t.Errorf("run error names the gateway or its key: %q", r.Error)
	}
	// No address but the upstream's: the gateway's listener in the
	// sandbox is a loopback address too, on another port.
	for _, ev := range append(find(evs, agent.TypeError), find(evs, agent.TypeResult)...) {
		for _, addr := range regexp.MustCompile(`127\.0\.0\.1:\d+`).FindAllString(string(ev.Data)+r.Error, -1) {
			if addr != down {
				t.Errorf("%s event or run error names %s, not the upstream %s: %s", ev.Type, addr, down, ev.Data)
			}
		}
	}
}

// TestEveryHeadlessOption: each run option reaches the real CLI, read back
// from what the CLI sent the model (system prompt, tools, model), from the
// sandbox (env, cwd, settings), and from the sessions it resumes.
func TestEveryHeadlessOption(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	e.exec("alice", sb.ID, "mkdir", "-p", "/workspace/sub/dir")

	const secretValue = "s3cr3t-value-of-the-run"
	e.model.Reset(modeltest.Bash("echo \"$RUN_VAR $SETTINGS_VAR\" > proof.txt; pwd >> proof.txt; echo "+secretValue+"; echo $SETTINGS_VAR"), modeltest.Text("ok"))
	r, evs := e.do("alice", sb.ID, "first", agent.Options{
		NewSession:      true,
		Model:           "claude-test-model",
		FallbackModel:   "claude-test-fallback",
		SystemPrompt:    "You are the options test.",
		DisallowedTools: []string{"WebFetch", "WebSearch"},
		MaxTurns:        5,
		Cwd:             "sub/dir",
		Env:             map[string]string{"RUN_VAR": secretValue},
		Settings:        json.RawMessage(`{"env":{"SETTINGS_VAR":"from-settings"}}`),
	})
	if r.Status != agent.Succeeded {
		t.Fatalf("run = %+v (events %v)", r, types(evs))
	}
	got, err := e.readFile("alice", sb.ID, "/workspace/sub/dir/proof.txt")
	if err != nil || got != secretValue+" from-settings\n/workspace/sub/dir\n" {
		t.Errorf("proof.txt = %q, %v; want env, settings env and cwd", got, err)
	}
	if st := decode[agent.StartedData](t, find(evs, agent.TypeStarted)[0]); st.Cwd != "/workspace/sub/dir" {
		t.Errorf("run.started cwd %q", st.Cwd)
	}
	req := e.model.MessageRequests()[0]
	var body struct {
		Model  string          `json:"model"`
		System json.RawMessage `json:"system"`
		Tools  []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Model != "claude-test-model" || !strings.Contains(string(body.System), "You are the options test.") {
		t.Errorf("model %q, system %.300s", body.Model, body.System)
	}
	var names []string
	for _, tl := range body.Tools {
		names = append(names, tl.Name)
	}
	if slices.Contains(names, "WebFetch") || slices.Contains(names, "WebSearch") || !slices.Contains(names, "Bash") {
		t.Errorf("tools sent to the model: %v; want Bash without WebFetch and WebSearch", names)
	}
	// The env value is a secret: neither in the events nor in the record.
	for _, ev := range evs {
		if strings.Contains(string(ev.Data), secretValue) || strings.Contains(ev.Raw, secretValue) {
			t.Errorf("%s event holds the run's env value", ev.Type)
		}
		if strings.Contains(string(ev.Data), "from-settings") || strings.Contains(ev.Raw, "from-settings") {
			t.Errorf("%s event holds a value the run's settings set", ev.Type)
		}
	}
	stored, err := e.svc.Get(context.Background(), "alice", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(stored); strings.Contains(string(b), secretValue) || !slices.Equal(stored.Options.EnvKeys, []string{"RUN_VAR"}) {
		t.Errorf("stored run %s", b)
	}

	// Sessions: a second, new session; then session_id resumes the first
	// (same cwd), and fork_session resumes it under a new id.
	e.model.Reset(modeltest.Text("second session"))
	r2, _ := e.do("alice", sb.ID, "another topic", agent.Options{NewSession: true, Cwd: "/workspace/sub/dir"})
	if r2.SessionID == "" || r2.SessionID == r.SessionID {
		t.Fatalf("second run %+v", r2)
	}
	e.model.Reset(modeltest.Text("resumed"))
	r3, _ := e.do("alice", sb.ID, "back to the first", agent.Options{SessionID: r.SessionID, Cwd: "sub/dir"})
	if r3.Status != agent.Succeeded || r3.SessionID != r.SessionID || r3.ResumedFrom != r.SessionID {
		t.Fatalf("resumed run %+v, want session %s", r3, r.SessionID)
	}
	if last := e.model.MessageRequests(); !strings.Contains(last[len(last)-1].Text(), "first") || strings.Contains(last[len(last)-1].Text(), "another topic") {
		t.Errorf("the resumed request is not the first session's")
	}
	e.model.Reset(modeltest.Text("forked"))
	r4, _ := e.do("alice", sb.ID, "fork it", agent.Options{SessionID: r.SessionID, ForkSession: true, Cwd: "sub/dir"})
	if r4.Status != agent.Succeeded || r4.SessionID == r.SessionID || r4.SessionID == "" || r4.ResumedFrom != r.SessionID {
		t.Errorf("forked run %+v, want a new session from %s", r4, r.SessionID)
	}

	// fallback_model: the model the CLI switches to when the first one
	// stays overloaded.
	e.model.Reset(modeltest.HTTPError(529).Times(3), modeltest.Text("from the fallback"))
	before := len(e.model.MessageRequests())
	r5, _ := e.do("alice", sb.ID, "overloaded", agent.Options{NewSession: true, Model: "claude-test-primary", FallbackModel: "claude-test-fallback"})
	reqs := e.model.MessageRequests()[before:]
	if r5.Status != agent.Succeeded || len(reqs) < 2 || reqs[0].Model != "claude-test-primary" || reqs[len(reqs)-1].Model != "claude-test-fallback" {
		var models []string
		for _, q := range reqs {
			models = append(models, q.Model+":"+q.Answer)
		}
		t.Errorf("fallback run %s; model requests %v", r5.Status, models)
	}

	// Bad options: each a field-named error before anything runs.
	for field, o := range map[string]agent.Options{
		"session_id":            {SessionID: "not-a-uuid"},
		"cwd":                   {Cwd: "../../etc"},
		"env.ANTHROPIC_API_KEY": {Env: map[string]string{"ANTHROPIC_API_KEY": "x"}},
		"env.1BAD":              {Env: map[string]string{"1BAD": "x"}},
		"settings":              {Settings: json.RawMessage(`[1]`)},
		"disallowed_tools[0]":   {DisallowedTools: []string{"a,b"}},
		"fork_session":          {ForkSession: true, NewSession: true},
	} {
		_, err := e.svc.Start(context.Background(), "alice", sb.ID, "x", o)
		var fe *errs.Error
		if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != field {
			t.Errorf("options %+v: err %v, want a field error naming %s", o, err, field)
		}
	}
	_, err = e.svc.Start(context.Background(), "alice", sb.ID, "x", agent.Options{SessionID: "00000000-0000-4000-8000-000000000000"})
	if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), "session_id") {
		t.Errorf("unknown session: %v", err)
	}
}

// TestAttachments: an uploaded image and a text file of the sandbox reach
// the model with the prompt, through the real CLI's stream-json input.
func TestAttachments(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	e.exec("alice", sb.ID, "sh", "-c", "printf 'notes from the workspace\\n' > /workspace/notes.txt")
	var png bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	if err := pngenc.Encode(&png, img); err != nil {
		t.Fatal(err)
	}
	data := base64.StdEncoding.EncodeToString(png.Bytes())
	e.model.Reset(modeltest.Text("I see a picture and your notes."))
	r, evs := e.do("alice", sb.ID, "describe these", agent.Options{NewSession: true, Attachments: []agent.Attachment{
		{Data: data, MediaType: "image/png", Name: "pic.png"},
		{Path: "notes.txt"},
	}})
	if r.Status != agent.Succeeded {
		t.Fatalf("run %+v: %v", r, types(evs))
	}
	reqs := e.model.MessageRequests()
	body := string(reqs[len(reqs)-1].Body)
	for _, want := range []string{`"type":"image"`, data, "describe these", "Attached file notes.txt:", "notes from the workspace"} {
		if !strings.Contains(body, want) {
			t.Errorf("the model's request lacks %.60q", want)
		}
	}
	if got := r.Options.AttachmentNames; !slices.Equal(got, []string{"pic.png", "notes.txt"}) {
		t.Errorf("attachment names %v", got)
	}
	for field, a := range map[string]agent.Attachment{
		"attachments[0]":            {},
		"attachments[0].path":       {Path: "/etc/passwd"},
		"attachments[0].media_type": {Data: data},
		"attachments[0].data":       {Data: "!!", MediaType: "image/png"},
	} {
		_, err := e.svc.Start(context.Background(), "alice", sb.ID, "x", agent.Options{Attachments: []agent.Attachment{a}})
		var fe *errs.Error
		if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != field {
			t.Errorf("%+v: %v, want a field error naming %s", a, err, field)
		}
	}
	// A missing file, and a binary that is not an image, PDF or text.
	e.exec("alice", sb.ID, "sh", "-c", "printf '\\377\\376binary' > /workspace/blob.bin")
	for _, p := range []string{"missing.txt", "blob.bin"} {
		_, err := e.svc.Start(context.Background(), "alice", sb.ID, "x", agent.Options{Attachments: []agent.Attachment{{Path: p}}})
		if !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%s: %v, want a 422", p, err)
		}
	}
}
