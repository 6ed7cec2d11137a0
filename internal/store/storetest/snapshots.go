package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store"
)

func testSnapshots(t *testing.T, db *store.DB) {
	ctx := context.Background()
	t0 := time.Date(2027, 3, 4, 5, 6, 7, 8_000_000, time.UTC)
	recs := []snapshot.Record{
		{ID: "snap_1", SandboxID: "sb_1", OwnerID: "alice", Bucket: "bkt", Prefix: "users/alice/ws", Name: "20270304T050607.008Z",
			Trigger: snapshot.TriggerRun, RunID: "run_1", Files: 10_000, Bytes: 1 << 33, UploadedBytes: 1 << 20, CreatedAt: t0},
		{ID: "snap_2", SandboxID: "sb_1", OwnerID: "alice", Bucket: "bkt", Prefix: "users/alice/ws", Name: "20270304T050608.000Z",
			Trigger: snapshot.TriggerManual, Files: 3, Bytes: 30, CreatedAt: t0.Add(time.Second)},
		{ID: "snap_3", SandboxID: "sb_2", OwnerID: "bob", Prefix: "users/bob", Name: "20270304T050608.000Z",
			Trigger: snapshot.TriggerTerminate, CreatedAt: t0.Add(time.Second)},
	}
	for _, r := range recs {
		if err := db.InsertSnapshot(ctx, r); err != nil {
			t.Fatalf("InsertSnapshot(%s): %v", r.ID, err)
		}
	}
	dup := recs[0]
	dup.ID = "snap_dup"
	if err := db.InsertSnapshot(ctx, dup); errs.KindOf(err) != errs.Conflict {
		t.Errorf("InsertSnapshot(same location and name) = %v, want conflict", err)
	}

	locs, err := db.SnapshotLocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]store.BucketPrefix{{Bucket: "bkt", Prefix: "users/alice/ws"}}, locs); d != "" {
		t.Errorf("SnapshotLocations (-want +got):\n%s", d)
	}

	got, err := db.GetSnapshot(ctx, "snap_1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(recs[0], got); d != "" {
		t.Errorf("GetSnapshot (-want +got):\n%s", d)
	}
	if _, err := db.GetSnapshot(ctx, "nope"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("GetSnapshot(nope) = %v, want not found", err)
	}

	list, err := db.ListSnapshots(ctx, "sb_1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]snapshot.Record{recs[1], recs[0]}, list); d != "" {
		t.Errorf("ListSnapshots newest first (-want +got):\n%s", d)
	}
	if list, _ := db.ListSnapshots(ctx, "sb_1", 1); len(list) != 1 || list[0].ID != "snap_2" {
		t.Errorf("ListSnapshots limit 1 = %+v", list)
	}
	if latest, err := db.LatestSnapshot(ctx, "sb_2"); err != nil || latest.ID != "snap_3" {
		t.Errorf("LatestSnapshot(sb_2) = %+v, %v", latest, err)
	}
	if _, err := db.LatestSnapshot(ctx, "sb_none"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("LatestSnapshot(none) = %v, want not found", err)
	}
	if empty, err := db.ListSnapshots(ctx, "sb_none", 0); err != nil || empty == nil || len(empty) != 0 {
		t.Errorf("ListSnapshots(none) = %#v, %v; want an empty, non-nil list", empty, err)
	}

	at, err := db.ListSnapshotsAt(ctx, "bkt", "users/alice/ws")
	if err != nil || len(at) != 2 || at[0].ID != "snap_1" {
		t.Errorf("ListSnapshotsAt = %+v, %v", at, err)
	}
	if err := db.DeleteSnapshotsByName(ctx, "bkt", "users/alice/ws", []string{"20270304T050607.008Z", "missing"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetSnapshot(ctx, "snap_1"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("after delete GetSnapshot(snap_1) = %v, want not found", err)
	}
	if _, err := db.GetSnapshot(ctx, "snap_3"); err != nil {
		t.Errorf("delete at one location removed another's: %v", err)
	}
}
