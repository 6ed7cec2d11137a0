package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
)

// cutProxy forwards TCP connections to a server; cut closes the ones open.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	cuts  int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cuts++
}

// TestClientRunStreamResume: the Go client's run stream survives its
// connection being cut twice mid-run (before and while the model
// answers): it reconnects with Last-Event-ID, and the events it returns
// are exactly the run's, in order, none lost or repeated.
func TestClientRunStreamResume(t *testing.T) {
	gate := make(chan struct{})
	model := modeltest.New(t, modeltest.Gated("The first words, then the rest of a longer answer.\nAnd a second line.", gate))
	in, admin, _ := cliServer(t, model)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tok, err := admin.CreateToken(ctx, "resume")
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, strings.TrimPrefix(in.url, "http://"))
	c, _ := client.New(proxy.url(), client.WithToken(tok.Token))
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Claude(ctx, sb.SandboxID, client.ClaudeRequest{Prompt: "answer slowly"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []client.RunEvent
	deltas := 0
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Next after %d events: %v", len(got), err)
		}
		got = append(got, *ev)
		if ev.Type == "text_delta" {
			deltas++
			switch deltas {
			case 1: // the model holds the rest: cut, then let it go on
				proxy.cut()
				close(gate)
			case 2: // the rest streams: cut again mid-answer
				proxy.cut()
			}
		}
	}
	if st.Reconnects < 2 || proxy.cuts < 2 {
		t.Fatalf("reconnects = %d after %d cuts, want 2 or more", st.Reconnects, proxy.cuts)
	}
	// The whole log, replayed in one piece, is what the stream returned.
	replay, err := c.RunEvents(ctx, st.RunID, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want []client.RunEvent
	for {
		ev, err := replay.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, *ev)
	}
	if len(got) != len(want) {
		t.Fatalf("streamed %d events, the run has %d", len(got), len(want))
	}
	var text strings.Builder
	for i := range want {
		if got[i].Seq != want[i].Seq || got[i].Type != want[i].Type || string(got[i].Data) != string(want[i].Data) {
			t.Fatalf("event %d: streamed %d %s, the run's is %d %s", i, got[i].Seq, got[i].Type, want[i].Seq, want[i].Type)
		}
		if i > 0 && got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("seq %d follows %d", got[i].Seq, got[i-1].Seq)
		}
		if got[i].Type == "text_delta" {
			text.WriteString(got[i].Text())
		}
	}
	if last := got[len(got)-1]; last.Type != "done" || !strings.Contains(text.String(), "And a second line.") {
		t.Fatalf("last event %s, text %q", last.Type, text.String())
	}
	r, err := c.Run(ctx, st.RunID)
	if err != nil || r.Status != "succeeded" || r.LastSeq != got[len(got)-1].Seq {
		t.Fatalf("Run = %+v, %v", r, err)
	}
	runs, err := c.Runs(ctx, sb.SandboxID)
	if err != nil || len(runs) != 1 || runs[0].ID != st.RunID {
		t.Fatalf("Runs = %+v, %v", runs, err)
	}
	if _, err := c.Cancel(ctx, st.RunID); err == nil {
		t.Fatal("cancelling an ended run succeeded")
	}
}

// TestClientApprovalsAndAccount: a run that asks before its Bash call is
// answered with AnswerPermission and goes on; then the account calls
// (secrets, usage, budgets, users) against the same server.
func TestClientApprovalsAndAccount(t *testing.T) {
	model := modeltest.New(t,
		modeltest.Bash("echo approved > /workspace/ok.txt"),
		modeltest.Text("Done after approval."),
	)
	_, c, _ := cliServer(t, model)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Claude(ctx, sb.SandboxID, client.ClaudeRequest{Prompt: "write ok.txt, asking first", PermissionMode: "ask"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var decided *client.PermissionDecision
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "permission_request" {
			var req client.PermissionRequest
			if err := json.Unmarshal(ev.Data, &req); err != nil || req.ToolName != "Bash" || req.RequestID == "" {
				t.Fatalf("permission_request %s: %v", ev.Data, err)
			}
			if decided, err = c.AnswerPermission(ctx, st.RunID, req.RequestID, client.Decision{Behavior: "allow"}); err != nil {
				t.Fatal(err)
			}
			var ae *client.Error
			if _, err := c.AnswerPermission(ctx, st.RunID, req.RequestID, client.Decision{Behavior: "deny"}); !errors.As(err, &ae) || ae.StatusCode != 409 {
				t.Fatalf("a second answer: %v, want 409", err)
			}
		}
		if ev.Type == "done" {
			if d := ev.Data; !strings.Contains(string(d), `"succeeded"`) {
				t.Fatalf("done %s", d)
			}
		}
	}
	if decided == nil || decided.Behavior != "allow" || decided.Source != "user" {
		t.Fatalf("decision = %+v", decided)
	}
	var file strings.Builder
	if _, err := c.ReadFile(ctx, sb.SandboxID, "ok.txt", &file); err != nil || file.String() != "approved\n" {
		t.Fatalf("ok.txt = %q, %v", file.String(), err)
	}

	// Secrets: write-only, listed by name.
	if err := c.PutSecret(ctx, "gh_token", "ghp_not_a_real_token"); err != nil {
		t.Fatal(err)
	}
	secs, err := c.ListSecrets(ctx)
	if err != nil || len(secs) != 1 || secs[0].Name != "gh_token" {
		t.Fatalf("ListSecrets = %+v, %v", secs, err)
	}
	if err := c.DeleteSecret(ctx, "gh_token"); err != nil {
		t.Fatal(err)
	}
	if secs, err := c.ListSecrets(ctx); err != nil || len(secs) != 0 {
		t.Fatalf("ListSecrets after delete = %+v, %v", secs, err)
	}
	// Usage: the run's two model calls, metered.
	rep, err := c.Usage(ctx, client.UsageOptions{GroupBy: "sandbox"})
	if err != nil || rep.Total.Requests != 2 || len(rep.Groups) != 1 || rep.Groups[0].Key != sb.SandboxID || rep.Total.CostUSD <= 0 {
		t.Fatalf("Usage = %+v, %v", rep, err)
	}
	var ae *client.Error
	if _, err := c.Usage(ctx, client.UsageOptions{GroupBy: "week"}); !errors.As(err, &ae) || ae.StatusCode != 422 || ae.Fields[0].Field != "group_by" {
		t.Fatalf("Usage by week: %v", err)
	}
	// Budgets and users.
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := c.GetUser(ctx, me.ID); err != nil || u.Email != me.Email {
		t.Fatalf("GetUser = %+v, %v", u, err)
	}
	b, err := c.SetBudget(ctx, me.ID, client.BudgetLimits{MonthlyUSD: 12.5, RequestsPerMinute: 30})
	if err != nil || !b.Override || b.MonthlyUSD != 12.5 {
		t.Fatalf("SetBudget = %+v, %v", b, err)
	}
	if b, err := c.MyBudget(ctx); err != nil || b.RequestsPerMinute != 30 || b.SpentUSD <= 0 {
		t.Fatalf("MyBudget = %+v, %v", b, err)
	}
	if b, err := c.ResetBudget(ctx, me.ID); err != nil || b.Override {
		t.Fatalf("ResetBudget = %+v, %v", b, err)
	}
}

// TestClientChatModelsLogs: /v1/chat whole and streamed, /v1/models, and
// a sandbox's build log followed to its status.
func TestClientChatModelsLogs(t *testing.T) {
	model := modeltest.New(t, modeltest.Text("Four."))
	_, c, _ := cliServer(t, model, map[string]string{
		"TECHBOSS_LLM_PROVIDERS": `{"providers": [{"name": "anthropic", "type": "anthropic", "base_url": "` + model.URL + `",
			"models": [{"id": "claude-sonnet-4-5", "input_per_mtok": 3, "output_per_mtok": 15}], "any_model": true}],
			"default_provider": "anthropic"}`,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	provs, models, err := c.Models(ctx)
	if err != nil || len(provs) != 1 || provs[0].Name != "anthropic" || len(models) != 1 || models[0].Price == nil || models[0].Price.OutputPerMTok != 15 {
		t.Fatalf("Models = %+v %+v, %v", provs, models, err)
	}
	req := client.ChatRequest{Model: "claude-sonnet-4-5", Messages: []client.ChatMessage{{Role: "user", Content: "2+2?"}}}
	res, err := c.Chat(ctx, req)
	if err != nil || res.Text != "Four." || res.Usage.OutputTokens == 0 || res.CostUSD <= 0 {
		t.Fatalf("Chat = %+v, %v", res, err)
	}
	var text strings.Builder
	var types []string
	err = c.ChatStream(ctx, req, func(ev client.ChatEvent) error {
		types = append(types, ev.Type)
		text.WriteString(ev.Text)
		return nil
	})
	if err != nil || text.String() != "Four." || types[len(types)-1] != "done" || !slices.Contains(types, "usage") {
		t.Fatalf("ChatStream: %q %v, %v", text.String(), types, err)
	}
	var ae *client.Error
	if err := c.ChatStream(ctx, client.ChatRequest{Model: "claude-sonnet-4-5"}, func(client.ChatEvent) error { return nil }); !errors.As(err, &ae) || ae.StatusCode != 422 {
		t.Fatalf("ChatStream without messages: %v", err)
	}

	// A sandbox whose image is built: its log streams, then its status.
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", DockerfileCommands: []string{"RUN echo building-the-image"}})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	status, _, err := c.FollowSandboxLogs(ctx, sb.SandboxID, &log)
	if err != nil || status != "running" {
		t.Fatalf("FollowSandboxLogs = %q, %v; log %q", status, err, log.String())
	}
	whole, err := c.SandboxLogs(ctx, sb.SandboxID)
	if err != nil || log.String() != whole {
		t.Fatalf("followed log %q, whole log %q, %v", log.String(), whole, err)
	}
}
