package httpapi

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// readStream GETs path with headers and reads its typed events to the end.
func (h *sbHarness) readStream(c *http.Client, path string, hdr ...string) []typedEvent {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(h.t.Context(), "GET", h.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		h.t.Fatalf("GET %s: %d", path, res.StatusCode)
	}
	return readTyped(h.t, bufio.NewReader(res.Body), nil)
}

// TestProcessLogsResume: a log stream's event ids are byte offsets, and
// Last-Event-ID (or ?after=) resumes after them.
func TestProcessLogsResume(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	r := h.do(h.alice, "POST", "/sandbox/"+id+"/processes", map[string]any{"command": []string{"cat"}})
	wantStatus(t, r, http.StatusCreated)
	var p struct{ PID int }
	r.data(t, &p)
	logs := "/sandbox/" + id + "/processes/" + strconv.Itoa(p.PID) + "/logs"
	evs, _ := h.liveSSE(h.alice, logs+"?follow=true")
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+id+"/processes/"+strconv.Itoa(p.PID)+"/stdin", "hello\n"), http.StatusNoContent)
	waitEvent(t, evs, "stdout", "hello")
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+id+"/processes/"+strconv.Itoa(p.PID)+"/stdin?eof=true", "world\n"), http.StatusNoContent)
	collect(evs)

	all := h.readStream(h.alice, logs)
	if len(all) != 3 || all[0].id != 6 || all[1].id != 12 || all[2].event != "exit" || all[2].id != 12 {
		t.Fatalf("whole log: %+v, want hello (id 6), world (id 12), exit (id 12)", all)
	}
	for _, tc := range []struct {
		name string
		path string
		hdr  []string
	}{
		{"Last-Event-ID", logs, []string{"Last-Event-ID", "6"}},
		{"after", logs + "?after=6", nil},
	} {
		got := h.readStream(h.alice, tc.path, tc.hdr...)
		if len(got) != 2 || got[0].data != `{"data":"world\n"}` || got[0].id != 12 || got[1].event != "exit" {
			t.Errorf("%s 6: %+v, want world then exit", tc.name, got)
		}
	}
	wantField(t, h.do(h.alice, "GET", logs, nil, "Last-Event-ID", "soon"), http.StatusUnprocessableEntity, "Last-Event-ID")
}

// TestWatchResume: watch events have ids; a client that reconnects with
// Last-Event-ID gets the changes made while it was away, and an id older
// than the ring (or of another watch) gets an overflow event first.
func TestWatchResume(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	watch := "/sandbox/" + id + "/watch?path=/workspace"
	open := func(hdr ...string) (*http.Response, *bufio.Reader) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", h.srv.URL+watch, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := h.alice.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: %d", watch, res.StatusCode)
		}
		br := bufio.NewReader(res.Body)
		readTyped(t, br, func(ev typedEvent) bool { return ev.event == "ready" })
		return res, br
	}
	// rawID reads the id line of the next event named path (readTyped
	// parses ids as numbers; watch ids are "<watch>.<n>").
	nextFor := func(br *bufio.Reader, path string) (string, string) {
		t.Helper()
		var id, event string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended before an event for %s: %v", path, err)
			}
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimSpace(strings.TrimPrefix(line, "id: "))
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimSpace(strings.TrimPrefix(line, "event: "))
			case strings.HasPrefix(line, "data: ") && strings.Contains(line, path):
				return id, event
			}
		}
	}
	touch := func(name string) {
		t.Helper()
		h.execSSE(h.alice, id, map[string]any{"command": []string{"touch", "/workspace/" + name}})
	}

	res, br := open()
	touch("one")
	lastID, ev := nextFor(br, "/workspace/one")
	if ev != "create" || !strings.Contains(lastID, ".") {
		t.Fatalf("first event %s id %q, want create with a watch id", ev, lastID)
	}
	res.Body.Close() // the client drops
	touch("two")     // ... while the shared watch goes on
	res, br = open("Last-Event-ID", lastID)
	if _, ev := nextFor(br, "/workspace/two"); ev != "create" {
		t.Errorf("resumed: %s for two, want its create", ev)
	}
	res.Body.Close()

	// An id of another watch: overflow first, then what this one kept.
	res, br = open("Last-Event-ID", "zz.3")
	line, _ := br.ReadString('\n')
	for strings.HasPrefix(line, "id: ") || line == "\n" {
		line, _ = br.ReadString('\n')
	}
	if line != "event: overflow\n" {
		t.Errorf("after another watch's id: %q, want event: overflow", line)
	}
	res.Body.Close()

	// More changes than the ring keeps: an id from before them gets an
	// overflow first, then the newest kept.
	res, br = open()
	h.execSSE(h.alice, id, map[string]any{"command": []string{"sh", "-c", "for i in $(seq 1100); do : > /workspace/f$i; done; touch /workspace/last"}})
	nextFor(br, "/workspace/last")
	res.Body.Close()
	res, br = open("Last-Event-ID", lastID)
	first, _ := br.ReadString('\n')
	for strings.HasPrefix(first, "id: ") {
		first, _ = br.ReadString('\n')
	}
	if first != "event: overflow\n" {
		t.Errorf("resumed from before 1100 changes: %q first, want event: overflow", first)
	}
	if _, ev := nextFor(br, "/workspace/last"); ev != "create" {
		t.Errorf("after the overflow: %s for last, want its create", ev)
	}
	res.Body.Close()
	wantField(t, h.do(h.alice, "GET", watch, nil, "Last-Event-ID", "nope"), http.StatusUnprocessableEntity, "Last-Event-ID")
}
