package httpapi

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSSEFraming(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := newSSE(w, r)
		if err != nil {
			t.Errorf("newSSE: %v", err)
			return
		}
		_ = st.Event("1", "text", []byte("hello"))
		_ = st.Event("2", "", []byte("line one\nline two\r\nline three\rend"))
		_ = st.Event("", "done", []byte(""))
		_ = st.Comment("ping\nwith newline")
		if err := st.Event("3\n", "x", nil); err == nil {
			t.Errorf("id with newline accepted")
		}
	}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	for k, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	b, _ := io.ReadAll(res.Body)
	want := "id: 1\nevent: text\ndata: hello\n\n" +
		"id: 2\ndata: line one\ndata: line two\ndata: line three\ndata: end\n\n" +
		"event: done\ndata: \n\n" +
		": ping with newline\n\n"
	if string(b) != want {
		t.Fatalf("stream:\n%q\nwant:\n%q", b, want)
	}
}

// TestSSEHeartbeatAndFlush checks events reach the client before the
// handler returns (flushed) and that Heartbeat pings while the loop waits.
func TestSSEHeartbeatAndFlush(t *testing.T) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := newSSE(w, r)
		if err != nil {
			t.Errorf("newSSE: %v", err)
			return
		}
		if err := st.Event("1", "first", []byte("x")); err != nil {
			t.Errorf("event: %v", err)
		}
		ctx, cancel := context.WithCancel(r.Context())
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = st.Heartbeat(ctx, time.Millisecond)
		}()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		cancel()
		wg.Wait()
		_ = st.Event("2", "last", []byte("y"))
	}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	var lines []string
	pings := 0
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		if line == ": ping" {
			pings++
			if pings == 2 {
				close(release) // the first event and two pings arrived while the handler waited
			}
		}
	}
	got := strings.Join(lines, "\n")
	if !strings.HasPrefix(got, "id: 1\nevent: first\ndata: x\n") || !strings.HasSuffix(got, "id: 2\nevent: last\ndata: y\n") {
		t.Fatalf("stream = %q", got)
	}
	if pings < 2 {
		t.Fatalf("pings = %d, want >= 2", pings)
	}
}

func TestSSEThroughMiddlewareFlushes(t *testing.T) {
	// The statusWriter wrapper must not hide Flush from the ResponseController.
	h := newHarness(t)
	s := newServer(Deps{Logger: h.logger()})
	got := make(chan string, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(requestID(s.observe(s.api(func(w http.ResponseWriter, r *http.Request) error {
		st, err := newSSE(w, r)
		if err != nil {
			return err
		}
		if err := st.Event("1", "e", []byte("early")); err != nil {
			return err
		}
		<-release
		return nil
	}))))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	go func() {
		r := bufio.NewReader(res.Body)
		var sb strings.Builder
		for range 3 {
			l, _ := r.ReadString('\n')
			sb.WriteString(l)
		}
		got <- sb.String()
	}()
	// Reading completes only if the event was flushed while the handler still blocks.
	if s := <-got; s != "id: 1\nevent: e\ndata: early\n" {
		t.Fatalf("got %q", s)
	}
	close(release)
}
