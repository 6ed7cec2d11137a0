package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store"
)

// TestSharedRunTwoUsers runs a shared sandbox's agent run with two people
// at it, on both databases: alice owns the sandbox and shares it with bob
// as operator and carol as viewer. Alice prompts with permission_mode
// "ask" and bob approves the tool call, then the other way round (bob
// prompts on alice's sandbox, alice approves). Every stream of the run
// (the prompter's, the approver's and the viewer's) receives every stored
// event exactly once, in order; the permission_decision names the
// approver, the run names the prompter; the viewer follows but may not
// answer (403).
func TestSharedRunTwoUsers(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			testSharedRunTwoUsers(t, d)
		})
	}
}

func testSharedRunTwoUsers(t *testing.T, d store.Dialect) {
	h := newRunHarnessDB(t, d)
	h.createUser("carol@example.com", auth.RoleMember)
	carol := h.mustLogin("carol@example.com")
	sb := h.newSandbox(h.alice)
	for email, role := range map[string]string{"bob@example.com": "operator", "carol@example.com": "viewer"} {
		wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/shares", map[string]any{"user": email, "role": role}), http.StatusCreated)
	}
	type person struct {
		name, email string
		c           *http.Client
	}
	alice := person{"alice", "alice@example.com", h.alice}
	bob := person{"bob", "bob@example.com", h.bob}
	for i, c := range []struct{ prompter, approver person }{{alice, bob}, {bob, alice}} {
		t.Run(c.prompter.name+" prompts, "+c.approver.name+" approves", func(t *testing.T) {
			file := fmt.Sprintf("/workspace/shared-%d.txt", i)
			h.model.Reset(modeltest.Bash("echo ok > "+file), modeltest.Text("done"))
			resp := h.open(c.prompter.c, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "ask first", "permission_mode": "ask"})
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s starting a run: %d", c.prompter.name, resp.StatusCode)
			}
			runID := resp.Header.Get("X-Run-ID")

			// Each stream reads up to the pending approval.
			type stream struct {
				who  string
				br   *bufio.Reader
				body func() error
				evs  []typedEvent
			}
			untilAsked := func(s *stream) string {
				t.Helper()
				var reqID string
				s.evs = append(s.evs, readTyped(t, s.br, func(ev typedEvent) bool {
					if ev.event != "permission_request" {
						return false
					}
					var d struct {
						RequestID string `json:"request_id"`
					}
					_ = json.Unmarshal([]byte(ev.data), &d)
					reqID = d.RequestID
					return true
				})...)
				if reqID == "" {
					t.Fatalf("%s's stream ended without the permission request: %+v", s.who, s.evs)
				}
				return reqID
			}
			streams := []*stream{{who: c.prompter.name + " (prompter)", br: bufio.NewReader(resp.Body), body: resp.Body.Close}}
			reqID := untilAsked(streams[0])
			for _, f := range []person{c.approver, {"carol", "carol@example.com", carol}} {
				r := h.open(f.c, "GET", "/runs/"+runID+"/events", nil)
				defer r.Body.Close()
				if r.StatusCode != http.StatusOK {
					t.Fatalf("%s following the run: %d", f.name, r.StatusCode)
				}
				s := &stream{who: f.name, br: bufio.NewReader(r.Body), body: r.Body.Close}
				if id := untilAsked(s); id != reqID {
					t.Fatalf("%s saw request %s, the prompter %s", f.name, id, reqID)
				}
				streams = append(streams, s)
			}

			// The viewer may not answer; the operator (or owner) may; the
			// first answer wins.
			path := "/runs/" + runID + "/permissions/" + reqID
			wantStatus(t, h.do(carol, "POST", path, map[string]any{"behavior": "deny", "message": "no"}), http.StatusForbidden)
			wantStatus(t, h.do(c.approver.c, "POST", path, map[string]any{"behavior": "allow"}), http.StatusOK)
			wantStatus(t, h.do(c.prompter.c, "POST", path, map[string]any{"behavior": "deny", "message": "late"}), http.StatusConflict)

			for _, s := range streams {
				s.evs = append(s.evs, readTyped(t, s.br, func(ev typedEvent) bool { return ev.event == "done" })...)
				_ = s.body()
			}

			// Every stream got every stored event once, in order.
			var want []string
			for _, ev := range h.storedEvents(runID) {
				want = append(want, fmt.Sprintf("%d %s", ev.Seq, ev.Type))
				if ev.Type == "done" {
					break
				}
			}
			if len(want) == 0 || !strings.HasSuffix(want[len(want)-1], " done") {
				t.Fatalf("stored events of the run: %v", want)
			}
			for _, s := range streams {
				var got []string
				var decision string
				for _, ev := range s.evs {
					if ev.event == "presence" {
						if ev.id != 0 {
							t.Errorf("%s: presence event with id %d", s.who, ev.id)
						}
						continue
					}
					got = append(got, fmt.Sprintf("%d %s", ev.id, ev.event))
					if ev.event == "permission_decision" {
						decision = ev.data
					}
				}
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("%s's stream:\n got %v\nwant %v", s.who, got, want)
				}
				var dd struct {
					Behavior       string `json:"behavior"`
					DecidedBy      string `json:"decided_by"`
					DecidedByEmail string `json:"decided_by_email"`
				}
				if err := json.Unmarshal([]byte(decision), &dd); err != nil || dd.DecidedByEmail != c.approver.email || dd.Behavior != "allow" || dd.DecidedBy == "" {
					t.Errorf("%s's permission_decision %s: want allow by %s", s.who, decision, c.approver.email)
				}
			}

			var run struct {
				Status  string `json:"status"`
				Options struct {
					StartedBy      string `json:"started_by"`
					StartedByEmail string `json:"started_by_email"`
				} `json:"options"`
			}
			h.do(carol, "GET", "/runs/"+runID, nil).data(t, &run)
			if run.Options.StartedByEmail != c.prompter.email || run.Options.StartedBy == "" {
				t.Errorf("run options %+v, want started_by %s", run.Options, c.prompter.email)
			}
			// The approved command ran.
			r := h.do(carol, "GET", "/sandbox/"+sb+"/files/"+strings.TrimPrefix(file, "/workspace/"), nil)
			if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "ok" {
				t.Errorf("%s after the approval: %d %q", file, r.status, r.body)
			}
		})
	}
}
