package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
)

func testPreviewLinks(t *testing.T, db *store.DB) {
	ctx := context.Background()
	base := time.UnixMilli(1_800_000_000_000).UTC()
	sb := &sandbox.Sandbox{ID: "sb_p", OwnerID: "alice", State: sandbox.Running, Driver: "local", CreatedAt: base, UpdatedAt: base, LastActiveAt: base}
	if err := db.CreateSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	mk := func(id string, port int, created time.Time, ttl time.Duration) *sandbox.PreviewLink {
		l := &sandbox.PreviewLink{ID: id, SandboxID: "sb_p", OwnerID: "alice", Port: port, TokenHash: "h-" + id, CreatedAt: created, ExpiresAt: created.Add(ttl)}
		if err := db.CreatePreviewLink(ctx, l); err != nil {
			t.Fatalf("CreatePreviewLink(%s): %v", id, err)
		}
		return l
	}
	l1 := mk("pl_1", 8000, base, time.Hour)
	l2 := mk("pl_2", 8000, base.Add(time.Second), time.Minute)
	mk("pl_3", 3000, base, time.Hour)
	got, err := db.GetPreviewLink(ctx, "pl_1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(l1, got); d != "" {
		t.Errorf("GetPreviewLink round trip (-want +got):\n%s", d)
	}
	if _, err := db.GetPreviewLink(ctx, "pl_nope"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("GetPreviewLink(missing) = %v, want not found", err)
	}
	list, err := db.ListPreviewLinks(ctx, "sb_p", 8000, base.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]*sandbox.PreviewLink{l2, l1}, list); d != "" {
		t.Errorf("ListPreviewLinks (-want +got):\n%s", d)
	}
	// pl_2 expired two minutes in: not listed, then swept.
	later := base.Add(2 * time.Minute)
	if list, _ := db.ListPreviewLinks(ctx, "sb_p", 8000, later); len(list) != 1 || list[0].ID != "pl_1" {
		t.Errorf("after pl_2 expired: %+v, want only pl_1", list)
	}
	if err := db.DeleteExpiredPreviewLinks(ctx, later); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetPreviewLink(ctx, "pl_2"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("expired link after the sweep: %v, want not found", err)
	}
	if err := db.DeletePreviewLink(ctx, "sb_other", "pl_1"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("DeletePreviewLink of another sandbox's link: %v, want not found", err)
	}
	if err := db.DeletePreviewLink(ctx, "sb_p", "pl_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetPreviewLink(ctx, "pl_1"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("revoked link: %v, want not found", err)
	}
}
