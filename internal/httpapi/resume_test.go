package httpapi

import (
	"bufio"
	"net/http"
	"strconv"
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
