package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
)

// liveSSE reads an event stream in the background; the channel closes at
// its end.
func (h *sbHarness) liveSSE(c *http.Client, path string) (<-chan sseEvent, context.CancelFunc) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+path, nil)
	res, err := c.Do(req)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		res.Body.Close()
		h.t.Fatalf("GET %s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		defer res.Body.Close()
		var cur sseEvent
		var data []string
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.event != "" || data != nil {
					cur.data = strings.Join(data, "\n")
					out <- cur
				}
				cur, data = sseEvent{}, nil
			case strings.HasPrefix(line, "event: "):
				cur.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	h.t.Cleanup(cancel)
	return out, cancel
}

// waitEvent reads evs until one of type typ whose data contains want.
func waitEvent(t *testing.T, evs <-chan sseEvent, typ, want string) {
	t.Helper()
	var seen []sseEvent
	tm := time.NewTimer(2 * time.Minute)
	defer tm.Stop()
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatalf("stream ended before %s %s; saw %+v", typ, want, seen)
			}
			if ev.event == typ && strings.Contains(ev.data, want) {
				return
			}
			seen = append(seen, ev)
		case <-tm.C:
			t.Fatalf("no %s %s; saw %+v", typ, want, seen)
		}
	}
}

func collect(evs <-chan sseEvent) []sseEvent {
	var out []sseEvent
	for ev := range evs {
		out = append(out, ev)
	}
	return out
}

func TestProcessesHTTP(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	base := "/sandbox/" + id + "/processes"

	r := h.do(h.alice, "POST", base, map[string]any{"name": "echo", "command": []string{"cat"}, "env": map[string]string{"A": "1"}, "workdir": "/workspace"})
	wantStatus(t, r, http.StatusCreated)
	var p sandbox.Process
	r.data(t, &p)
	if p.PID <= 1 || !p.Managed || p.Name != "echo" || p.State != "running" {
		t.Fatalf("started %+v", p)
	}
	pid := strconv.Itoa(p.PID)

	var list processList
	h.do(h.alice, "GET", base, nil).data(t, &list)
	found := false
	for _, q := range list.Processes {
		found = found || (q.PID == p.PID && q.Managed && q.Name == "echo")
	}
	if !found {
		t.Fatalf("list %+v lacks %d", list, p.PID)
	}

	evs, _ := h.liveSSE(h.alice, base+"/"+pid+"/logs?follow=true")
	wantStatus(t, h.do(h.alice, "POST", base+"/"+pid+"/stdin", "hi\n"), http.StatusNoContent)
	waitEvent(t, evs, "stdout", `"hi\n"`)
	wantStatus(t, h.do(h.alice, "POST", base+"/"+pid+"/stdin?eof=true", "bye\n"), http.StatusNoContent)
	rest := collect(evs)
	if out, _ := outputOf(t, rest, "stdout"); string(out) != "bye\n" || len(rest) == 0 || rest[len(rest)-1].event != "exit" || rest[len(rest)-1].data != `{"exit_code":0}` {
		t.Fatalf("follow after eof: got %+v", rest)
	}
	// Replay: the whole log, then exit.
	replay, _ := h.liveSSE(h.alice, base+"/"+pid+"/logs")
	all := collect(replay)
	if out, _ := outputOf(t, all, "stdout"); string(out) != "hi\nbye\n" || all[len(all)-1].event != "exit" {
		t.Fatalf("replay: got %+v", all)
	}
	wantStatus(t, h.do(h.alice, "POST", base+"/"+pid+"/stdin", "late"), http.StatusConflict)

	// A background job of an exec is listed (not managed) and can be signalled.
	h.execSSE(h.alice, id, map[string]any{"command": []string{"sh", "-c", `timeout 60 tail -f /dev/null >/dev/null 2>&1 & until [ "$(cat /proc/$!/comm)" = timeout ]; do :; done`}})
	h.do(h.alice, "GET", base, nil).data(t, &list)
	bg := 0
	for _, q := range list.Processes {
		if strings.Join(q.Command, " ") == "timeout 60 tail -f /dev/null" && !q.Managed && q.State == "running" {
			bg = q.PID
		}
		if q.PID == p.PID && (q.State != "exited" || q.ExitCode == nil || *q.ExitCode != 0) {
			t.Errorf("exited cat listed as %+v", q)
		}
	}
	if bg == 0 {
		t.Fatalf("exec's background job not in %+v", list)
	}
	wantStatus(t, h.do(h.alice, "GET", fmt.Sprintf("%s/%d/logs", base, bg), nil), http.StatusNotFound)
	wantStatus(t, h.do(h.alice, "POST", fmt.Sprintf("%s/%d/signal", base, bg), map[string]any{"signal": "SIGKILL"}), http.StatusNoContent)

	// Bad input names its field.
	wantField(t, h.do(h.alice, "POST", fmt.Sprintf("%s/%d/signal", base, bg), map[string]any{"signal": "SIGNOPE"}), http.StatusUnprocessableEntity, "signal")
	wantField(t, h.do(h.alice, "POST", base+"/abc/signal", map[string]any{"signal": "SIGTERM"}), http.StatusUnprocessableEntity, "pid")
	wantField(t, h.do(h.alice, "POST", base, map[string]any{"command": []string{}}), http.StatusUnprocessableEntity, "command")
	wantField(t, h.do(h.alice, "POST", base, map[string]any{"command": []string{"true"}, "workdir": "/no/such"}), http.StatusUnprocessableEntity, "workdir")
	wantStatus(t, h.do(h.alice, "POST", base+"/"+pid+"/stdin", strings.Repeat("x", sandbox.MaxStdinWrite+1)), http.StatusRequestEntityTooLarge)

	// Someone else's sandbox is not there.
	for _, c := range []struct{ method, path string }{
		{"GET", base}, {"POST", base}, {"GET", base + "/" + pid + "/logs"},
		{"POST", base + "/" + pid + "/stdin"}, {"POST", base + "/" + pid + "/signal"}, {"GET", "/sandbox/" + id + "/watch"},
	} {
		var body any
		switch {
		case strings.HasSuffix(c.path, "/signal"):
			body = map[string]any{"signal": "SIGKILL"}
		case c.method == "POST" && strings.HasSuffix(c.path, "/processes"):
			body = map[string]any{"command": []string{"true"}}
		}
		wantStatus(t, h.do(h.bob, c.method, c.path, body), http.StatusNotFound)
	}
}

func TestWatchHTTP(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})

	evs, _ := h.liveSSE(h.alice, "/sandbox/"+id+"/watch?path=/workspace&recursive=true")
	// Through the files API, which writes a temporary file and renames it.
	wantStatus(t, h.do(h.alice, "PUT", "/sandbox/"+id+"/files/api.txt", "hello"), http.StatusOK)
	waitEvent(t, evs, "rename", `"path":"/workspace/api.txt","type":"file","from":"/workspace/.api.txt`)
	wantStatus(t, h.do(h.alice, "PUT", "/sandbox/"+id+"/files/api.txt", "again"), http.StatusOK)
	waitEvent(t, evs, "rename", `"path":"/workspace/api.txt","type":"file","from":"/workspace/.api.txt`)
	// Through exec, in a new subdirectory, renamed, removed.
	h.execSSE(h.alice, id, map[string]any{"command": []string{"mkdir", "/workspace/src"}})
	waitEvent(t, evs, "create", `"path":"/workspace/src","type":"dir"`)
	// Once the new directory is watched (its create event comes after).
	h.execSSE(h.alice, id, map[string]any{"command": []string{"sh", "-c", "echo x > /workspace/src/main.go && mv /workspace/src/main.go /workspace/src/app.go && rm /workspace/api.txt"}})
	waitEvent(t, evs, "rename", `"path":"/workspace/src/app.go","type":"file","from":"/workspace/src/main.go"`)
	waitEvent(t, evs, "remove", `"path":"/workspace/api.txt"`)

	// Paths that do not exist, climb out, or go through a link are refused.
	h.execSSE(h.alice, id, map[string]any{"command": []string{"ln", "-s", "/etc", "/workspace/etc"}})
	wantField(t, h.do(h.alice, "GET", "/sandbox/"+id+"/watch?path=/workspace/nope", nil), http.StatusNotFound, "path")
	wantField(t, h.do(h.alice, "GET", "/sandbox/"+id+"/watch?path=/workspace/../etc", nil), http.StatusUnprocessableEntity, "path")
	wantField(t, h.do(h.alice, "GET", "/sandbox/"+id+"/watch?path=/workspace/etc", nil), http.StatusUnprocessableEntity, "path")
	// A relative path is under /workspace.
	rel, _ := h.liveSSE(h.alice, "/sandbox/"+id+"/watch?path=src")
	h.execSSE(h.alice, id, map[string]any{"command": []string{"touch", "/workspace/src/rel"}})
	waitEvent(t, rel, "create", `"path":"/workspace/src/rel"`)
}
