package httpapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/sandbox"
)

// greetCLI is an agent program that writes one assistant line and then
// waits to be cancelled, so its run stays live.
type greetCLI struct{}

func (greetCLI) Command(agent.CommandRequest) ([]string, map[string]string) {
	return []string{"sh", "-c", `echo '{"type":"assistant","message":{"id":"m","content":[{"type":"text","text":"hello"}]}}'; exec sleep 3600`}, nil
}

func (greetCLI) NewParser() agent.Parser { return &claude.Parser{} }

// TestRunStreamTransports: over HTTP/1.1 a run's event stream takes its
// connection over (one chunk per event; the stream ends as soon as the
// client leaves or the server stops, and the server can wait for it); over
// HTTP/2 the same events come through net/http.
func TestRunStreamTransports(t *testing.T) {
	e, deps := newAPIEnv(t, greetCLI{})
	ctx := context.Background()
	stopping, stop := context.WithCancel(ctx)
	deps.Stopping, deps.Heartbeat = stopping, 50*time.Millisecond
	api := NewServer(deps)
	h1 := httptest.NewServer(api)
	h2 := httptest.NewUnstartedServer(api)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(func() {
		stop()
		h1.Close()
		h2.Close()
	})
	run := startGreetRun(t, e)
	waitStreams := func(what string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := api.WaitStreams(wctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// open follows the run and returns the response once its text event
	// arrived.
	open := func(srv *httptest.Server, c *http.Client) (*http.Response, *bufio.Reader) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/runs/"+run.ID+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") ||
			res.Header.Get("X-Request-Id") == "" || res.Header.Get("Cache-Control") != "no-cache" || res.Header.Get("Date") == "" {
			t.Fatalf("status %d, headers %v", res.StatusCode, res.Header)
		}
		br := bufio.NewReader(res.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended before the text event: %v", err)
			}
			if strings.Contains(line, `"text":"hello"`) {
				return res, br
			}
		}
	}

	// HTTP/1.1: chunked, the connection closes with the stream.
	res, br := open(h1, h1.Client())
	if res.ProtoMajor != 1 || len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" || !res.Close {
		t.Fatalf("HTTP/1.1 stream: proto %s, transfer-encoding %v, close %v", res.Proto, res.TransferEncoding, res.Close)
	}
	// An idle stream gets heartbeats, again and again (within 10 s, or the
	// body is closed and the reads below fail).
	giveUp := time.AfterFunc(10*time.Second, func() { res.Body.Close() })
	if line, err := br.ReadString('\n'); err != nil || line != "\n" {
		t.Fatalf("end of the text event: %q, %v", line, err)
	}
	for range 2 {
		if line, err := br.ReadString('\n'); err != nil || line != ": ping\n" {
			t.Fatalf("idle stream: %q, %v; want a heartbeat", line, err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != "\n" {
			t.Fatalf("after a heartbeat: %q, %v", line, err)
		}
	}
	giveUp.Stop()
	// The client leaving ends the stream at once, not at the next write.
	res.Body.Close()
	waitStreams("after the HTTP/1.1 client left")

	// HTTP/2: through the ResponseWriter.
	h2c := h2.Client()
	h2c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	res, _ = open(h2, h2c)
	if res.ProtoMajor != 2 {
		t.Fatalf("TLS stream over %s, want HTTP/2", res.Proto)
	}
	res.Body.Close()
	waitStreams("after the HTTP/2 client left")

	// The server stopping ends an HTTP/1.1 stream cleanly (the last chunk
	// is sent: the client sees the end of the body, not a cut), and the
	// server can wait for it.
	res, br = open(h1, h1.Client())
	defer res.Body.Close()
	stop()
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("stream after stop: %v (want a clean end)", err)
	}
	waitStreams("after stop")
}

// TestRunStreamDirectDelivery: with more subscribers than agent's
// directMin, the hub's writers write events straight to idle streams'
// connections. 300 HTTP/1.1 followers of a run, one of them reading late
// through a small socket buffer (so direct writes meet a full socket and
// leave the rest to its stream), each get every event once and in order,
// then the done event.
func TestRunStreamDirectDelivery(t *testing.T) {
	e, deps := newAPIEnv(t, greetCLI{})
	ctx := context.Background()
	srv := httptest.NewUnstartedServer(NewServer(deps))
	// Small server socket buffers, so a follower that does not read fills
	// its socket and direct writes leave bytes for its stream to send.
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	run := startGreetRun(t, e)
	const subs, events = 300, 40
	payload := `{"text":"` + strings.Repeat("x", 8<<10) + `"}`
	slowGo := make(chan struct{})
	type result struct {
		ids  []int
		done bool
		err  error
	}
	results := make(chan result, subs)
	connected := make(chan struct{}, subs)
	for i := range subs {
		slow := i == 0
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		go func() {
			var r result
			defer func() { results <- r }()
			req, _ := http.NewRequest("GET", srv.URL+"/runs/"+run.ID+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			res, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				r.err = err
				connected <- struct{}{}
				return
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			first := true
			for {
				line, err := br.ReadString('\n')
				if err == io.EOF {
					return
				}
				if err != nil {
					r.err = err
					return
				}
				if v, ok := strings.CutPrefix(line, "id: "); ok {
					n, _ := strconv.Atoi(strings.TrimSpace(v))
					r.ids = append(r.ids, n)
				}
				if line == "event: text\n" && first {
					first = false
					connected <- struct{}{}
					if slow {
						<-slowGo
					}
				}
				if line == "event: done\n" {
					r.done = true
				}
			}
		}()
	}
	for range subs {
		<-connected
	}
	for range events {
		if _, err := e.runs.Hub().Append(ctx, run.ID, agent.Event{Type: "text", Data: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.runs.Cancel(ctx, e.user.ID, run.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the slow reader's socket is full by now
	close(slowGo)
	for range subs {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !r.done || len(r.ids) < events+2 {
			t.Fatalf("a follower got %d events (done %v), want the run's %d and more", len(r.ids), r.done, events)
		}
		for j, id := range r.ids {
			if id != j+1 {
				t.Fatalf("a follower's event %d has id %d: %v", j, id, r.ids)
			}
		}
	}
}

// smallSendBuffers gives accepted connections a 32 KiB send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(32 << 10)
	}
	return c, err
}

// startGreetRun starts a run of greetCLI in a new sandbox of e's user.
func startGreetRun(t *testing.T, e *perfEnv) agent.Run {
	t.Helper()
	ctx := context.Background()
	sb, err := e.m.Create(ctx, e.user.ID, sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := e.runs.Start(ctx, e.user.ID, sb.ID, "hi", agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return run
}
