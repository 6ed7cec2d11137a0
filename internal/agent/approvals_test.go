package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// nextOf follows sub until an event of type typ and returns it.
func nextOf(t *testing.T, ctx context.Context, sub *agent.Subscription, typ string, seen *[]agent.Event) agent.Event {
	t.Helper()
	for {
		for _, ev := range *seen {
			if ev.Type == typ {
				*seen = slicesDelete(*seen, ev.Seq)
				return ev
			}
		}
		more, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		*seen = append(*seen, more...)
	}
}

func slicesDelete(evs []agent.Event, seq int64) []agent.Event {
	out := evs[:0]
	for _, ev := range evs {
		if ev.Seq > seq {
			out = append(out, ev)
		}
	}
	return out
}

// TestApprovals drives the real CLI through tool approvals: a call
// allowed, denied with a message, allowed with edited input, timed out,
// settled by policy, and remembered for the run; the first answer wins.
func TestApprovals(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// start runs prompt with o and returns the run and a subscription.
	start := func(o agent.Options, replies ...modeltest.Reply) (agent.Run, *agent.Subscription, *[]agent.Event) {
		t.Helper()
		e.model.Reset(replies...)
		o.NewSession = true
		r := e.start("alice", sb.ID, "do it", o)
		sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Close)
		return r, sub, &[]agent.Event{}
	}
	ask := agent.Options{PermissionMode: "ask"}

	t.Run("allowed", func(t *testing.T) {
		r, sub, seen := start(ask, modeltest.Bash("echo approved > /workspace/allowed.txt"), modeltest.Text("done"))
		req := decode[agent.PermissionRequestData](t, nextOf(t, ctx, sub, agent.TypePermissionRequest, seen))
		if req.ToolName != "Bash" || !strings.Contains(req.Summary, "$ echo approved > /workspace/allowed.txt") || req.RequestID == "" {
			t.Fatalf("request %+v", req)
		}
		// Nothing ran before the answer.
		if _, err := e.readFile("alice", sb.ID, "/workspace/allowed.txt"); err == nil {
			t.Fatal("the command ran before it was allowed")
		}
		// Another user cannot answer; the owner can, once.
		if _, _, err := e.svc.Decide(ctx, "bob", r.ID, req.RequestID, agent.Decision{Behavior: "allow"}); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("bob's answer: %v, want not found", err)
		}
		if _, _, err := e.svc.Decide(ctx, "alice", r.ID, req.RequestID, agent.Decision{Behavior: "allow"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.svc.Decide(ctx, "alice", r.ID, req.RequestID, agent.Decision{Behavior: "deny"}); !errors.Is(err, errs.ErrConflict) {
			t.Errorf("second answer: %v, want conflict", err)
		}
		dec := decode[agent.PermissionDecisionData](t, nextOf(t, ctx, sub, agent.TypePermissionDecision, seen))
		if dec.Behavior != "allow" || dec.Source != "user" || dec.DecidedBy != "alice" || dec.RequestID != req.RequestID {
			t.Errorf("decision %+v", dec)
		}
		run, _ := e.wait("alice", r.ID)
		if got, err := e.readFile("alice", sb.ID, "/workspace/allowed.txt"); run.Status != agent.Succeeded || err != nil || got != "approved\n" {
			t.Errorf("run %s, allowed.txt %q %v", run.Status, got, err)
		}
	})

	t.Run("denied with a message", func(t *testing.T) {
		r, sub, seen := start(ask, modeltest.Write("/workspace/denied.txt", "nope\n"), modeltest.Text("ok, not writing"))
		req := decode[agent.PermissionRequestData](t, nextOf(t, ctx, sub, agent.TypePermissionRequest, seen))
		if req.ToolName != "Write" || !strings.Contains(req.Summary, "write /workspace/denied.txt") || !strings.Contains(req.Summary, "+ nope") {
			t.Fatalf("request %+v", req)
		}
		if _, _, err := e.svc.Decide(ctx, "alice", r.ID, req.RequestID, agent.Decision{Behavior: "deny", Message: "not that file"}); err != nil {
			t.Fatal(err)
		}
		run, evs := e.wait("alice", r.ID)
		if _, err := e.readFile("alice", sb.ID, "/workspace/denied.txt"); err == nil {
			t.Error("the denied file was written")
		}
		res := find(evs, agent.TypeToolResult)
		if run.Status != agent.Succeeded || len(res) != 1 || !strings.Contains(decode[agent.ToolResultData](t, res[0]).Content, "not that file") {
			t.Errorf("run %s; the agent did not read the denial: %v", run.Status, types(evs))
		}
	})

	t.Run("allowed with edited input", func(t *testing.T) {
		r, sub, seen := start(ask, modeltest.Bash("echo original > /workspace/edited.txt"), modeltest.Text("done"))
		req := decode[agent.PermissionRequestData](t, nextOf(t, ctx, sub, agent.TypePermissionRequest, seen))
		edited := json.RawMessage(`{"command":"echo edited > /workspace/edited.txt","description":"edited by the reviewer"}`)
		if _, _, err := e.svc.Decide(ctx, "alice", r.ID, req.RequestID, agent.Decision{Behavior: "allow", UpdatedInput: edited}); err != nil {
			t.Fatal(err)
		}
		e.wait("alice", r.ID)
		if got, err := e.readFile("alice", sb.ID, "/workspace/edited.txt"); err != nil || got != "edited\n" {
			t.Errorf("edited.txt %q %v, want the edited command's output", got, err)
		}
	})

	t.Run("timed out", func(t *testing.T) {
		o := agent.Options{Permissions: &agent.PermissionPolicy{TimeoutSeconds: 1}}
		r, sub, seen := start(o, modeltest.Bash("echo late > /workspace/late.txt"), modeltest.Text("gave up"))
		nextOf(t, ctx, sub, agent.TypePermissionRequest, seen)
		dec := decode[agent.PermissionDecisionData](t, nextOf(t, ctx, sub, agent.TypePermissionDecision, seen))
		if dec.Behavior != "deny" || dec.Source != "timeout" || !strings.Contains(dec.Message, "no answer within 1s") {
			t.Errorf("decision %+v", dec)
		}
		e.wait("alice", r.ID)
		if _, err := e.readFile("alice", sb.ID, "/workspace/late.txt"); err == nil {
			t.Error("a timed-out call ran")
		}
	})

	t.Run("policy and remembered", func(t *testing.T) {
		o := agent.Options{Permissions: &agent.PermissionPolicy{Allow: []string{"Bash"}, Deny: []string{"Write"}}}
		r, _, _ := start(o, modeltest.Bash("echo by-policy > /workspace/policy.txt"), modeltest.Write("/workspace/never.txt", "x"), modeltest.Text("done"))
		_, evs := e.wait("alice", r.ID)
		if n := len(find(evs, agent.TypePermissionRequest)); n != 0 {
			t.Errorf("%d requests under a policy that settles every call", n)
		}
		var srcs []string
		for _, ev := range find(evs, agent.TypePermissionDecision) {
			d := decode[agent.PermissionDecisionData](t, ev)
			srcs = append(srcs, d.ToolName+":"+d.Behavior+":"+d.Source)
		}
		if strings.Join(srcs, " ") != "Bash:allow:policy Write:deny:policy" {
			t.Errorf("decisions %v", srcs)
		}
		if got, _ := e.readFile("alice", sb.ID, "/workspace/policy.txt"); got != "by-policy\n" {
			t.Errorf("policy.txt %q", got)
		}
		if _, err := e.readFile("alice", sb.ID, "/workspace/never.txt"); err == nil {
			t.Error("a denied Write ran")
		}

		// Remember "run": the second Bash call is not asked about.
		r, sub, seen := start(ask, modeltest.Bash("echo one >> /workspace/twice.txt"), modeltest.Bash("echo two >> /workspace/twice.txt"), modeltest.Text("done"))
		req := decode[agent.PermissionRequestData](t, nextOf(t, ctx, sub, agent.TypePermissionRequest, seen))
		if _, _, err := e.svc.Decide(ctx, "alice", r.ID, req.RequestID, agent.Decision{Behavior: "allow", Remember: "run"}); err != nil {
			t.Fatal(err)
		}
		_, evs = e.wait("alice", r.ID)
		decs := find(evs, agent.TypePermissionDecision)
		if len(find(evs, agent.TypePermissionRequest)) != 1 || len(decs) != 2 || decode[agent.PermissionDecisionData](t, decs[1]).Source != "remembered" {
			t.Errorf("events %v", types(evs))
		}
		if got, _ := e.readFile("alice", sb.ID, "/workspace/twice.txt"); got != "one\ntwo\n" {
			t.Errorf("twice.txt %q", got)
		}
	})

	t.Run("bad answers", func(t *testing.T) {
		for field, d := range map[string]agent.Decision{
			"behavior":      {Behavior: "maybe"},
			"updated_input": {Behavior: "deny", UpdatedInput: json.RawMessage(`{}`)},
			"remember":      {Behavior: "allow", Remember: "forever"},
		} {
			_, _, err := e.svc.Decide(ctx, "alice", "run_x", "perm_x", d)
			var fe *errs.Error
			if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != field {
				t.Errorf("%+v: %v, want a field error naming %s", d, err, field)
			}
		}
	})
}

// TestApprovalOnAnotherReplica: with two replicas on one PostgreSQL, an
// answer sent to the replica that does not run the run reaches the one
// that does (through the feed), and the tool call goes on.
func TestApprovalOnAnotherReplica(t *testing.T) {
	url := storetest.PostgresURL(t)
	e := newEnv(t, envOpts{pgURL: url, feed: true, replicaTimeout: 10 * time.Second})
	sb := e.sandbox("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db2 := openPG(t, url)
	other, err := agent.NewService(agent.Config{ReplicaTimeout: 10 * time.Second},
		agent.Deps{Store: db2, CLI: claude.New(claude.Config{}), Sandboxes: newManager(t, db2), Feed: db2.RunFeed()})
	if err != nil {
		t.Fatal(err)
	}
	runReady(t, other)

	e.model.Reset(modeltest.Bash("echo from-the-other-replica > /workspace/replica.txt"), modeltest.Text("done"))
	r := e.start("alice", sb.ID, "do it", agent.Options{NewSession: true, PermissionMode: "ask"})
	sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var seen []agent.Event
	req := decode[agent.PermissionRequestData](t, nextOf(t, ctx, sub, agent.TypePermissionRequest, &seen))
	out, forwarded, err := other.Decide(ctx, "alice", r.ID, req.RequestID, agent.Decision{Behavior: "allow"})
	if err != nil || !forwarded || out.Behavior != "allow" {
		t.Fatalf("answer on the other replica: %+v forwarded=%v err=%v", out, forwarded, err)
	}
	dec := decode[agent.PermissionDecisionData](t, nextOf(t, ctx, sub, agent.TypePermissionDecision, &seen))
	if dec.Source != "user" || dec.DecidedBy != "alice" || dec.Behavior != "allow" {
		t.Errorf("decision %+v", dec)
	}
	run, _ := e.wait("alice", r.ID)
	if got, err := e.readFile("alice", sb.ID, "/workspace/replica.txt"); run.Status != agent.Succeeded || err != nil || got != "from-the-other-replica\n" {
		t.Errorf("run %s, replica.txt %q %v", run.Status, got, err)
	}
}

// TestApprovalFloodFromTheSandbox: the approval server is reachable from
// inside the sandbox with the run's token, so code there can ask too; it
// cannot flood the owner: past 16 waiting requests the next is denied at
// once, without an event.
func TestApprovalFloodFromTheSandbox(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	// The agent's one tool call lists the gateway's address and token
	// (the CLI's env) and posts 20 approval requests from the sandbox.
	flood := `for i in $(seq 1 20); do
  curl -s -m 30 -X POST "${ANTHROPIC_BASE_URL%/llm/anthropic}/llm/mcp" -H "Authorization: Bearer $ANTHROPIC_API_KEY" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"approve","arguments":{"tool_name":"Fake","input":{},"tool_use_id":"fake"}}}' > /tmp/flood.$i &
done; wait; grep -l 'more than 16' /tmp/flood.* | wc -l`
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("why: curl (run from the host image inside the sandbox) is not installed")
	}
	e.model.Reset(modeltest.Bash(flood), modeltest.Text("done"))
	r := e.start("alice", sb.ID, "flood", agent.Options{NewSession: true, Permissions: &agent.PermissionPolicy{Allow: []string{"Bash"}, TimeoutSeconds: 5}})
	run, evs := e.wait("alice", r.ID)
	asked := len(find(evs, agent.TypePermissionRequest))
	if asked > 16 {
		t.Errorf("%d permission requests reached the owner, want at most 16", asked)
	}
	res := find(evs, agent.TypeToolResult)
	if run.Status != agent.Succeeded || len(res) != 1 {
		t.Fatalf("run %s, tool results %v", run.Status, res)
	}
	// Each of the 20 was either asked (and timed out) or refused at once.
	refused, err := strconv.Atoi(strings.TrimSpace(decode[agent.ToolResultData](t, res[0]).Content))
	if err != nil || refused < 1 || asked+refused != 20 {
		t.Errorf("%d asked, %v refused at once (%v): want at most 16 asked and the rest refused", asked, refused, err)
	}
}

// TestApprovalServerOnlyForRunsThatAsk: in a run that does not ask, code
// in the sandbox cannot put a permission request in front of the owner.
func TestApprovalServerOnlyForRunsThatAsk(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("why: curl (run from the host image inside the sandbox) is not installed")
	}
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	call := `curl -s -m 10 -o /dev/null -w '%{http_code}' -X POST "${ANTHROPIC_BASE_URL%/llm/anthropic}/llm/mcp" -H "Authorization: Bearer $ANTHROPIC_API_KEY" \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"approve","arguments":{"tool_name":"Fake","input":{},"tool_use_id":"fake"}}}'`
	e.model.Reset(modeltest.Bash(call), modeltest.Text("done"))
	_, evs := e.do("alice", sb.ID, "ask anyway", agent.Options{NewSession: true})
	if n := len(find(evs, agent.TypePermissionRequest)) + len(find(evs, agent.TypePermissionDecision)); n != 0 {
		t.Errorf("%d approval events in a run that does not ask", n)
	}
	// The call did reach the server (the MCP transport answers 200 with
	// the tool's error inside).
	if res := find(evs, agent.TypeToolResult); len(res) != 1 || !strings.Contains(decode[agent.ToolResultData](t, res[0]).Content, "200") {
		t.Errorf("tool results %v: want the request answered", res)
	}
}
