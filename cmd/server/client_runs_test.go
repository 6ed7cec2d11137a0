package main

import (
	"context"
	"errors"
	"io"
	"net"
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
