package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
)

// TestWebhookSurvivesRestart: a delivery that is still pending when the
// server stops (its receiver answered 503) is sent by the next server on
// the same database, with the same delivery id.
func TestWebhookSurvivesRestart(t *testing.T) {
	var mu sync.Mutex
	status := http.StatusServiceUnavailable
	type got struct {
		id     string
		status int
	}
	hits := make(chan got, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		s := status
		mu.Unlock()
		w.WriteHeader(s)
		hits <- got{r.Header.Get("X-Techboss-Delivery"), s}
	}))
	defer recv.Close()
	next := func() got {
		t.Helper()
		select {
		case g := <-hits:
			return g
		case <-time.After(60 * time.Second):
			t.Fatal("no delivery within 60s")
			return got{}
		}
	}

	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "a long password",
		"TECHBOSS_WEBHOOK_ALLOW": "127.0.0.1/32",
		// The retry after the 503 comes due only after the restart.
		"TECHBOSS_WEBHOOK_RETRY": "2s",
	}
	ctx := context.Background()
	in := start(t, env)
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	h, err := c.CreateWebhook(ctx, recv.URL+"/hook", "run.finished", "sandbox.failed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateWebhook(ctx, "http://10.0.0.1/hook", "run.finished"); err == nil || !strings.Contains(err.Error(), "url") {
		t.Errorf("a private address: %v, want a 422 naming url", err)
	}
	if err := c.TestWebhook(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	first := next()
	if first.status != http.StatusServiceUnavailable || first.id == "" {
		t.Fatalf("first attempt %+v", first)
	}
	ds, err := c.WebhookDeliveries(ctx, h.ID)
	for err == nil && (len(ds) != 1 || ds[0].Attempts != 1) { // the 503 is recorded after the receiver answered
		ds, err = c.WebhookDeliveries(ctx, h.ID)
	}
	if err != nil || ds[0].State != "pending" || ds[0].ResponseStatus != 503 {
		t.Fatalf("before the restart: %+v, %v; want pending after one 503", ds, err)
	}
	logs := in.stop()
	if strings.Contains(logs, h.Secret) {
		t.Error("the hook's secret is in the server log")
	}

	mu.Lock()
	status = http.StatusOK
	mu.Unlock()
	in = start(t, env)
	c, _ = client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	second := next()
	for second.status != http.StatusOK { // a retry the first server sent while stopping
		second = next()
	}
	if second.id != first.id || second.status != http.StatusOK {
		t.Errorf("after the restart got %+v, want delivery %s answered 200", second, first.id)
	}
	hooks, err := c.Webhooks(ctx)
	if err != nil || len(hooks) != 1 || hooks[0].ID != h.ID {
		t.Fatalf("Webhooks = %+v, %v", hooks, err)
	}
	if err := c.DeleteWebhook(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WebhookDeliveries(ctx, h.ID); err == nil {
		t.Error("deliveries of a deleted hook: want 404")
	}
	in.stop()
}
