package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
)

func testWebhooks(t *testing.T, db *store.DB) {
	ctx := context.Background()
	base := time.UnixMilli(1_800_000_000_000).UTC()
	h := &store.Webhook{ID: "wh_1", UserID: "alice", URL: "https://example.com/h", Events: []string{"run.finished", "run.failed"}, SecretSealed: "v1:x", CreatedAt: base}
	if err := db.CreateWebhook(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateWebhook(ctx, &store.Webhook{ID: "wh_2", UserID: "bob", URL: "https://example.com/b", Events: []string{"run.finished"}, SecretSealed: "v1:y", CreatedAt: base}); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetWebhook(ctx, "alice", "wh_1")
	if err != nil || got.URL != h.URL || len(got.Events) != 2 || got.SecretSealed != "v1:x" || !got.CreatedAt.Equal(base) {
		t.Fatalf("GetWebhook = %+v, %v; want %+v", got, err, h)
	}
	if _, err := db.GetWebhook(ctx, "bob", "wh_1"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("GetWebhook(other user) = %v, want not found", err)
	}
	n := 0
	newID := func() string { n++; return fmt.Sprintf("whd_%d", n) }
	if c, err := db.EnqueueWebhookEvent(ctx, "alice", "", "run.failed", `{"a":1}`, base, newID); err != nil || c != 1 {
		t.Fatalf("Enqueue(run.failed) = %d, %v; want 1", c, err)
	}
	if c, err := db.EnqueueWebhookEvent(ctx, "alice", "", "sandbox.failed", `{}`, base, newID); err != nil || c != 0 {
		t.Fatalf("Enqueue(unsubscribed) = %d, %v; want 0", c, err)
	}
	if c, err := db.EnqueueWebhookEvent(ctx, "alice", "wh_1", "ping", `{}`, base.Add(time.Second), newID); err != nil || c != 1 {
		t.Fatalf("Enqueue(ping) = %d, %v; want 1", c, err)
	}
	claimed, err := db.ClaimWebhookDeliveries(ctx, base, time.Minute, 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != "whd_1" || claimed[0].Data != `{"a":1}` {
		t.Fatalf("Claim at base = %+v, %v; want whd_1 only", claimed, err)
	}
	// Leased: a second claim gets only the other one.
	again, err := db.ClaimWebhookDeliveries(ctx, base.Add(time.Second), time.Minute, 10)
	if err != nil || len(again) != 1 || again[0].ID != "whd_2" {
		t.Fatalf("second Claim = %+v, %v; want whd_2", again, err)
	}
	x := claimed[0]
	x.State, x.Attempts, x.ResponseStatus, x.LastError, x.NextAttemptAt, x.UpdatedAt = store.DeliveryPending, 1, 500, "HTTP 500", base.Add(time.Hour), base
	if err := db.RecordWebhookAttempt(ctx, x); err != nil {
		t.Fatal(err)
	}
	if c, _ := db.ClaimWebhookDeliveries(ctx, base.Add(2*time.Second), time.Minute, 10); len(c) != 0 {
		t.Errorf("claim before next attempt = %d rows, want 0", len(c))
	}
	// At base+1h whd_1 is due again and whd_2's lease has run out.
	c, _ := db.ClaimWebhookDeliveries(ctx, base.Add(time.Hour), time.Minute, 10)
	var first *store.WebhookDelivery
	for _, x := range c {
		if x.ID == "whd_1" {
			first = x
		}
	}
	if len(c) != 2 || first == nil || first.Attempts != 1 || first.ResponseStatus != 500 {
		t.Errorf("claim after next attempt = %d rows, want whd_1 (1 attempt, 500) and whd_2", len(c))
	}
	list, err := db.ListWebhookDeliveries(ctx, "wh_1", 10)
	if err != nil || len(list) != 2 || list[0].ID != "whd_2" {
		t.Fatalf("ListWebhookDeliveries = %+v, %v; want 2, newest first", list, err)
	}
	if err := db.DeleteWebhook(ctx, "bob", "wh_1"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("DeleteWebhook(other user) = %v, want not found", err)
	}
	if err := db.DeleteWebhook(ctx, "alice", "wh_1"); err != nil {
		t.Fatal(err)
	}
	if list, _ := db.ListWebhookDeliveries(ctx, "wh_1", 10); len(list) != 0 {
		t.Errorf("deliveries after delete = %d, want 0", len(list))
	}
	if hs, _ := db.ListWebhooks(ctx, "bob"); len(hs) != 1 {
		t.Errorf("bob's hooks = %d, want 1", len(hs))
	}
}
