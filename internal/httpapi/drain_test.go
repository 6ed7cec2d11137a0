package httpapi

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRunStreamDrainsOnStop: when the server begins to stop, a follower
// of a run gets the run's done event if the run ends within StreamDrain
// (shutdown interrupts runs), and otherwise a final "restarting" event
// (no id) telling it to resume with Last-Event-ID — never a bare cut.
func TestRunStreamDrainsOnStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drain   time.Duration
		endRun  bool
		want    string
		wantNot string
	}{
		{"run ends during the drain", time.Minute, true, "event: done\n", "event: restarting\n"},
		{"run goes on", 100 * time.Millisecond, false, "event: restarting\n", "event: done\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, deps := newAPIEnv(t, greetCLI{})
			ctx := context.Background()
			stopping, stop := context.WithCancel(ctx)
			deps.Stopping, deps.StreamDrain = stopping, tc.drain
			api := NewServer(deps)
			srv := httptest.NewServer(api)
			t.Cleanup(func() {
				stop()
				srv.Close()
			})
			run := startGreetRun(t, e)
			req, _ := http.NewRequest("GET", srv.URL+"/runs/"+run.ID+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("stream ended before the text event: %v", err)
				}
				if strings.Contains(line, `"text":"hello"`) {
					break
				}
			}
			stop()
			if tc.endRun {
				if _, err := e.runs.Cancel(ctx, e.user.ID, run.ID); err != nil {
					t.Fatal(err)
				}
			}
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("stream after stop: %v (want a clean end)", err)
			}
			got := string(rest)
			if !strings.Contains(got, tc.want) || strings.Contains(got, tc.wantNot) {
				t.Fatalf("after stop the stream sent %q; want %q and not %q", got, tc.want, tc.wantNot)
			}
			if !tc.endRun && (!strings.Contains(got, `"last_event_id":`) || strings.Contains(strings.SplitN(got, "event: restarting", 2)[1], "id: ")) {
				t.Errorf("restarting event %q: want last_event_id and no id line", got)
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := api.WaitStreams(wctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
