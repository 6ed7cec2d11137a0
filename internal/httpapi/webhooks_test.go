package httpapi

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/webhooks"
)

// hookDelivery is one request a test receiver got.
type hookDelivery struct {
	header http.Header
	body   []byte
}

func hookReceiver(t *testing.T) (*httptest.Server, chan hookDelivery) {
	got := make(chan hookDelivery, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- hookDelivery{header: r.Header.Clone(), body: b}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

// TestWebhookRunFinished: a run that finishes is delivered to its owner's
// hook as run.finished, signed with the secret the create showed once;
// another user's hook gets nothing.
func TestWebhookRunFinished(t *testing.T) {
	h := newRunHarness(t, modeltest.Text("all done"))
	aliceRecv, aliceGot := hookReceiver(t)
	bobRecv, bobGot := hookReceiver(t)

	wantField(t, h.do(h.alice, "POST", "/webhooks", map[string]any{"url": aliceRecv.URL, "events": []string{"run.exploded"}}), 422, "events")
	wantField(t, h.do(h.alice, "POST", "/webhooks", map[string]any{"url": "file:///etc/passwd", "events": []string{"run.finished"}}), 422, "url")
	wantField(t, h.do(h.alice, "POST", "/webhooks", map[string]any{"url": "http://169.254.169.254/", "events": []string{"run.finished"}}), 422, "url")

	r := h.do(h.alice, "POST", "/webhooks", map[string]any{"url": aliceRecv.URL + "/in", "events": []string{"run.finished", "run.failed"}})
	wantStatus(t, r, http.StatusCreated)
	var created webhooks.Created
	r.data(t, &created)
	if !strings.HasPrefix(created.Secret, "whsec_") || created.ID == "" {
		t.Fatalf("create answered %+v", created)
	}
	wantStatus(t, h.do(h.bob, "POST", "/webhooks", map[string]any{"url": bobRecv.URL, "events": []string{"run.finished"}}), http.StatusCreated)

	sb := h.newSandbox(h.alice)
	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "finish"})
	runID := resp.Header.Get("X-Run-ID")
	evs := readTyped(t, bufio.NewReader(resp.Body), nil)
	resp.Body.Close()
	if len(evs) == 0 || evs[len(evs)-1].event != "done" {
		t.Fatalf("run stream ended with %+v", evs)
	}

	var d hookDelivery
	select {
	case d = <-aliceGot:
	case <-time.After(60 * time.Second):
		t.Fatal("no run.finished delivery within 60s")
	}
	ts := d.header.Get("X-Techboss-Timestamp")
	m := hmac.New(sha256.New, []byte(created.Secret))
	m.Write([]byte(ts + "."))
	m.Write(d.body)
	if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); d.header.Get("X-Techboss-Signature") != want {
		t.Errorf("signature %q, want %q", d.header.Get("X-Techboss-Signature"), want)
	}
	var body struct {
		ID, Type string
		Data     struct {
			RunID     string `json:"run_id"`
			SandboxID string `json:"sandbox_id"`
			Status    string
		}
	}
	if err := json.Unmarshal(d.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Type != "run.finished" || d.header.Get("X-Techboss-Event") != "run.finished" || body.ID != d.header.Get("X-Techboss-Delivery") ||
		body.Data.RunID != runID || body.Data.SandboxID != sb || body.Data.Status != "succeeded" {
		t.Errorf("delivery %s %s", d.header, d.body)
	}

	// The delivery log, and the secret nowhere but the create's answer.
	var list struct{ Webhooks []webhooks.Hook }
	lr := h.do(h.alice, "GET", "/webhooks", nil)
	lr.data(t, &list)
	if len(list.Webhooks) != 1 || list.Webhooks[0].ID != created.ID {
		t.Errorf("list = %+v", list)
	}
	var log struct{ Deliveries []webhooks.Delivery }
	deadline := time.Now().Add(30 * time.Second)
	for {
		dr := h.do(h.alice, "GET", "/webhooks/"+created.ID+"/deliveries", nil)
		dr.data(t, &log)
		if len(log.Deliveries) == 1 && log.Deliveries[0].State == "delivered" || time.Now().After(deadline) {
			if strings.Contains(string(dr.body)+string(lr.body)+h.logs.String(), created.Secret) {
				t.Error("the hook's secret shows in a list, the delivery log or the server log")
			}
			break
		}
		time.Sleep(20 * time.Millisecond) // the worker records the outcome after the receiver answered
	}
	if len(log.Deliveries) != 1 || log.Deliveries[0].Event != "run.finished" || log.Deliveries[0].ResponseStatus != 200 || log.Deliveries[0].Attempts != 1 {
		t.Errorf("deliveries = %+v", log.Deliveries)
	}
	wantStatus(t, h.do(h.bob, "GET", "/webhooks/"+created.ID+"/deliveries", nil), 404)
	wantStatus(t, h.do(h.bob, "DELETE", "/webhooks/"+created.ID, nil), 404)
	wantStatus(t, h.do(h.bob, "POST", "/webhooks/"+created.ID+"/test", nil), 404)

	// The ping.
	wantStatus(t, h.do(h.alice, "POST", "/webhooks/"+created.ID+"/test", nil), http.StatusAccepted)
	select {
	case p := <-aliceGot:
		if p.header.Get("X-Techboss-Event") != "ping" {
			t.Errorf("test sent %s", p.header.Get("X-Techboss-Event"))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no ping within 30s")
	}
	select {
	case x := <-bobGot:
		t.Errorf("bob's hook got %s", x.body)
	default:
	}
	wantStatus(t, h.do(h.alice, "DELETE", "/webhooks/"+created.ID, nil), http.StatusNoContent)
	wantStatus(t, h.do(h.alice, "GET", "/webhooks/"+created.ID+"/deliveries", nil), 404)
}

// TestWebhookPermissionRequested: a run that asks before a tool call
// sends permission.requested to its owner's hook, with the request id the
// owner answers; the run then ends and sends run.finished.
func TestWebhookPermissionRequested(t *testing.T) {
	h := newRunHarness(t, modeltest.Bash("echo ok > /workspace/asked.txt"), modeltest.Text("done"))
	recv, got := hookReceiver(t)
	r := h.do(h.alice, "POST", "/webhooks", map[string]any{"url": recv.URL, "events": []string{"permission.requested", "run.finished"}})
	wantStatus(t, r, http.StatusCreated)

	sb := h.newSandbox(h.alice)
	resp := h.open(h.alice, "POST", "/sandbox/"+sb+"/claude?format=events", map[string]any{"prompt": "ask first", "permission_mode": "ask"})
	defer resp.Body.Close()
	runID := resp.Header.Get("X-Run-ID")
	next := func() (string, []byte) {
		t.Helper()
		select {
		case d := <-got:
			return d.header.Get("X-Techboss-Event"), d.body
		case <-time.After(60 * time.Second):
			t.Fatal("no delivery within 60s")
			return "", nil
		}
	}
	typ, body := next()
	var req struct {
		Data struct {
			RunID     string `json:"run_id"`
			RequestID string `json:"request_id"`
			ToolName  string `json:"tool_name"`
		}
	}
	if err := json.Unmarshal(body, &req); err != nil || typ != "permission.requested" || req.Data.RunID != runID || req.Data.ToolName != "Bash" || req.Data.RequestID == "" {
		t.Fatalf("first delivery %s %s (%v), want permission.requested of run %s", typ, body, err, runID)
	}
	wantStatus(t, h.do(h.alice, "POST", "/runs/"+runID+"/permissions/"+req.Data.RequestID, map[string]any{"behavior": "allow"}), http.StatusOK)
	if typ, body := next(); typ != "run.finished" || !strings.Contains(string(body), runID) {
		t.Errorf("second delivery %s %s, want run.finished", typ, body)
	}
}
