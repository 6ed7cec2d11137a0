package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/presence"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestPresenceBoard: rows per replica and sandbox; Others leaves out the
// asking replica and rows older than expire, and answers for more
// sandboxes than one query asks about; Renew stamps a replica's rows,
// counts them and deletes anyone's expired ones; an empty Publish and
// Clear delete. SQLite has no board.
func TestPresenceBoard(t *testing.T) {
	t.Parallel()
	if b := storetest.OpenSQLite(t).PresenceBoard(); b != nil {
		t.Fatalf("SQLite has a presence board %T, want none (one replica)", b)
	}
	db := storetest.OpenPostgres(t)
	b := db.PresenceBoard()
	ctx := t.Context()
	since := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	v := func(user string) []presence.Viewer {
		return []presence.Viewer{{UserID: user, Email: user + "@x", Since: since, Streams: 1, Kinds: []string{"run"}, Runs: []string{"run_1"}}}
	}
	var ids []string
	for i := range 1200 { // more than one query's worth
		id := fmt.Sprintf("sb_%04d", i)
		ids = append(ids, id)
		if err := b.Publish(ctx, "r_a", id, v("u_a")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, "r_b", "sb_0000", v("u_b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "r_b", "sb_0000", v("u_b2")); err != nil { // replaces
		t.Fatal(err)
	}
	got, err := b.Others(ctx, "r_b", ids, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1200 || !cmp.Equal(got["sb_1199"], [][]presence.Viewer{v("u_a")}) {
		t.Fatalf("r_b reads %d sandboxes, sb_1199: %v; want 1200, u_a", len(got), got["sb_1199"])
	}
	got, err = b.Others(ctx, "r_a", []string{"sb_0000", "sb_0001"}, time.Minute)
	if err != nil || !cmp.Equal(got, map[string][][]presence.Viewer{"sb_0000": {v("u_b2")}}) {
		t.Fatalf("r_a reads %v, %v; want only r_b's u_b2", got, err)
	}

	// r_a's rows grow old: they stop counting, and a renewal elsewhere deletes them.
	if _, err := db.SQL().ExecContext(ctx, `UPDATE presence SET seen_at = seen_at - 120000 WHERE replica_id = 'r_a'`); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Others(ctx, "r_b", ids[:3], time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("expired rows read %v, %v; want none", got, err)
	}
	if got, err := b.Others(ctx, "r_b", ids[:3], time.Hour); err != nil || len(got) != 3 {
		t.Fatalf("rows within an hour %d, %v; want 3", len(got), err)
	}
	if n, err := b.Renew(ctx, "r_b", time.Minute); err != nil || n != 1 {
		t.Fatalf("renew r_b: %d, %v; want 1 row", n, err)
	}
	if got, err := b.Others(ctx, "r_b", ids[:3], time.Hour); err != nil || len(got) != 0 {
		t.Fatalf("after renew, r_a's expired rows: %v, %v; want deleted", got, err)
	}
	if n, err := b.Renew(ctx, "r_a", time.Minute); err != nil || n != 0 {
		t.Fatalf("renew r_a: %d, %v; want 0 rows (its rows expired)", n, err)
	}

	if err := b.Publish(ctx, "r_b", "sb_0001", v("u_b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "r_b", "sb_0000", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Others(ctx, "r_a", ids[:3], time.Minute); err != nil || len(got) != 1 || got["sb_0001"] == nil {
		t.Fatalf("after an empty publish: %v, %v; want only sb_0001", got, err)
	}
	if err := b.Clear(ctx, "r_b"); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Others(ctx, "r_a", ids[:3], time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("after clear: %v, %v; want none", got, err)
	}
}
