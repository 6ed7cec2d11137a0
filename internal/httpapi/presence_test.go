package httpapi

import (
	"bufio"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/presence"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
)

// presenceOf reads GET /sandbox/{id}/presence as (user, streams, kinds).
func presenceOf(t *testing.T, h *harness, c *http.Client, id string) []string {
	t.Helper()
	r := h.do(c, "GET", "/sandbox/"+id+"/presence", nil)
	wantStatus(t, r, http.StatusOK)
	var p presenceResponse
	r.data(t, &p)
	return viewerLines(p.Viewers)
}

func viewerLines(vs []presence.Viewer) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.Email+" "+strconv.Itoa(v.Streams)+" "+strings.Join(v.Kinds, ",")+" "+strings.Join(v.Runs, ","))
	}
	return out
}

// waitPresence polls the presence route until it reads want: a stream's
// handler leaves after its client has gone, not before.
func waitPresence(t *testing.T, h *harness, c *http.Client, id string, want []string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := presenceOf(t, h, c, id)
		if cmp.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence (-want +got):\n%s", cmp.Diff(want, got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPresenceStreams: a watch stream and a followed log stream make their
// user a viewer of the sandbox with those kinds; closing them leaves; a
// stranger sees a 404 and, trying, is no viewer; a watched sandbox is not
// reaped as idle.
func TestPresenceStreams(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, func(l *sandbox.Limits) { l.DefaultIdleTimeout = time.Minute })
	id := h.createSandbox(h.alice, map[string]any{})
	if got := presenceOf(t, h.harness, h.alice, id); len(got) != 0 {
		t.Fatalf("got %v before any stream, want none", got)
	}
	wantStatus(t, h.do(h.bob, "GET", "/sandbox/"+id+"/presence", nil), http.StatusNotFound)
	wantStatus(t, h.do(h.bob, "GET", "/sandbox/"+id+"/watch", nil), http.StatusNotFound)

	watch, stopWatch := h.liveSSE(h.alice, "/sandbox/"+id+"/watch")
	waitEvent(t, watch, "ready", "")
	waitPresence(t, h.harness, h.alice, id, []string{"alice@example.com 1 watch "})
	// Watched: past its idle timeout, the reaper leaves it.
	h.clock.Advance(2 * time.Minute)
	if n, err := h.m.Reap(t.Context()); err != nil || n != 0 {
		t.Fatalf("reap while watched: %d, %v; want 0", n, err)
	}

	r := h.do(h.alice, "POST", "/sandbox/"+id+"/processes", map[string]any{"command": []string{"cat"}})
	wantStatus(t, r, http.StatusCreated)
	var p sandbox.Process
	r.data(t, &p)
	logs, stopLogs := h.liveSSE(h.alice, "/sandbox/"+id+"/processes/"+strconv.Itoa(p.PID)+"/logs?follow=true")
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+id+"/processes/"+strconv.Itoa(p.PID)+"/stdin", "hi\n"), http.StatusNoContent)
	waitEvent(t, logs, "stdout", "hi")
	waitPresence(t, h.harness, h.alice, id, []string{"alice@example.com 2 logs,watch "})

	stopWatch()
	waitPresence(t, h.harness, h.alice, id, []string{"alice@example.com 1 logs "})
	stopLogs()
	waitPresence(t, h.harness, h.alice, id, []string{})
}

// TestPresenceOnRunStream: a run's typed stream gets presence events as a
// second stream of the run joins and leaves; the presence route lists the
// run; the approval event names who answered.
func TestPresenceOnRunStream(t *testing.T) {
	h := newRunHarness(t, modeltest.Bash("echo ok > /workspace/asked.txt"), modeltest.Text("done"))
	sb := h.newSandbox(h.alice)
	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "ask first", "permission_mode": "ask"})
	defer resp.Body.Close()
	runID := resp.Header.Get("X-Run-ID")
	br := bufio.NewReader(resp.Body)
	var reqID string
	readTyped(t, br, func(ev typedEvent) bool {
		if ev.event == "presence" && ev.id != 0 {
			t.Errorf("presence event with id %d: it must not move Last-Event-ID", ev.id)
		}
		if ev.event != "permission_request" {
			return false
		}
		var d struct {
			RequestID string `json:"request_id"`
		}
		_ = json.Unmarshal([]byte(ev.data), &d)
		reqID = d.RequestID
		return true
	})
	if reqID == "" {
		t.Fatal("the run ended without asking")
	}
	// The run says who sent its prompt.
	var run struct {
		Options struct {
			StartedBy      string `json:"started_by"`
			StartedByEmail string `json:"started_by_email"`
		} `json:"options"`
	}
	h.do(h.alice, "GET", "/runs/"+runID, nil).data(t, &run)
	if run.Options.StartedByEmail != "alice@example.com" || run.Options.StartedBy == "" {
		t.Errorf("run options %+v, want started_by alice", run.Options)
	}
	one := "alice@example.com 1 run " + runID
	waitPresence(t, h.harness, h.alice, sb, []string{one})

	// A second stream of the run: the first hears of it, then of its leaving.
	second := h.open(h.alice, "GET", "/runs/"+runID+"/events", nil)
	waitFor := func(want string) {
		t.Helper()
		readTyped(t, br, func(ev typedEvent) bool {
			if ev.event != "presence" {
				return false
			}
			var p presenceResponse
			if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
				t.Fatalf("presence data %s: %v", ev.data, err)
			}
			return strings.Join(viewerLines(p.Viewers), ";") == want
		})
	}
	waitFor("alice@example.com 2 run " + runID)
	second.Body.Close()
	waitFor(one)

	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/permissions/"+reqID, map[string]any{"behavior": "allow"}), http.StatusOK)
	var decision string
	evs := readTyped(t, br, func(ev typedEvent) bool {
		if ev.event == "permission_decision" {
			decision = ev.data
		}
		return ev.event == "done"
	})
	if len(evs) == 0 || evs[len(evs)-1].event != "done" {
		t.Fatalf("run stream ended with %+v", evs)
	}
	if !strings.Contains(decision, `"decided_by_email":"alice@example.com"`) {
		t.Errorf("permission_decision %s does not name alice's email", decision)
	}
	resp.Body.Close()
	waitPresence(t, h.harness, h.alice, sb, []string{})
}

// TestPresenceAcrossReplicas: two API servers on one PostgreSQL database
// (two replicas). A run's stream read through replica B hears of bob
// following the run through replica A (a presence event), alice's
// streams on both count once for her, B's presence route lists them all,
// and bob leaving A reaches B's stream and route. Without the shared
// board B knows only its own stream.
func TestPresenceAcrossReplicas(t *testing.T) {
	h := newRunHarnessDB(t, store.Postgres, modeltest.Bash("echo ok > /workspace/asked.txt"), modeltest.Text("done"))
	other := h.replica()
	tok := h.newToken(h.alice, "replica").Token
	sb := h.newSandbox(h.alice)
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/shares", map[string]any{"user": "bob@example.com", "role": "viewer"}), http.StatusCreated)
	// The run waits for an answer to its permission request: its streams
	// stay open as long as the test needs.
	own := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "ask first", "permission_mode": "ask"})
	defer own.Body.Close()
	runID := own.Header.Get("X-Run-ID")
	readTyped(t, bufio.NewReader(own.Body), func(ev typedEvent) bool { return ev.event == "permission_request" })

	// Alice follows the run through B as well.
	req, _ := http.NewRequest("GET", other+"/runs/"+runID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	throughB, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer throughB.Body.Close()
	if throughB.StatusCode != http.StatusOK {
		t.Fatalf("the run's stream through B: %d", throughB.StatusCode)
	}
	br := bufio.NewReader(throughB.Body)
	waitFor := func(want ...string) {
		t.Helper()
		var last string
		evs := readTyped(t, br, func(ev typedEvent) bool {
			if ev.event != "presence" {
				return false
			}
			var p presenceResponse
			if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
				t.Fatalf("presence data %s: %v", ev.data, err)
			}
			last = strings.Join(slices.Sorted(slices.Values(viewerLines(p.Viewers))), ";")
			return last == strings.Join(want, ";")
		})
		if len(evs) == 0 || evs[len(evs)-1].event != "presence" {
			t.Fatalf("B's stream ended without presence %q (last %q)", want, last)
		}
	}
	routeB := func() []string {
		r := h.do(&http.Client{}, "GET", other+"/sandbox/"+sb+"/presence", nil, "Authorization", "Bearer "+tok)
		wantStatus(t, r, http.StatusOK)
		var p presenceResponse
		r.data(t, &p)
		return slices.Sorted(slices.Values(viewerLines(p.Viewers))) // all joined at the same (fake) time
	}
	waitRouteB := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for got := routeB(); !cmp.Equal(got, want); got = routeB() {
			if time.Now().After(deadline) {
				t.Fatalf("B's presence route (-want +got):\n%s", cmp.Diff(want, got))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	alice := "alice@example.com 2 run " + runID // one stream on A, one on B
	waitFor(alice)
	waitRouteB(alice)

	// Bob follows it through A.
	bob := h.open(h.bob, "GET", "/runs/"+runID+"/events", nil)
	if bob.StatusCode != http.StatusOK {
		t.Fatalf("bob follows the run: %d", bob.StatusCode)
	}
	waitFor(alice, "bob@example.com 1 run "+runID)
	waitRouteB(alice, "bob@example.com 1 run "+runID)
	bob.Body.Close()
	waitFor(alice)
	waitRouteB(alice)
	// A's own route sees B's stream too.
	waitPresence(t, h.harness, h.alice, sb, []string{alice})
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/cancel", nil), http.StatusAccepted)
}
