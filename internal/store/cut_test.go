package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/pgserver"
)

// TestPostgresCutMidWrite stops PostgreSQL the hard way (pg_ctl -m
// immediate: every connection is cut) while writers store usage records
// in transactions, five times. Every failure must be Unavailable, the
// kind callers queue and retry (a usage record whose write failed
// otherwise is dropped after its usage event went out), and every write
// that answered nil must be there once the server is back. A pooled
// connection the server cut used to fail a BEGIN or COMMIT with pgx's
// "conn closed", a kind of its own.
func TestPostgresCutMidWrite(t *testing.T) {
	pg := pgserver.Start(t)
	ctx := context.Background()
	db, err := store.Open(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		stored []string
		calls  int
	)
	// Writes in flight when the connections are cut.
	pg.CutUnderLoad(5, 8, func(round, w, i int) {
		id := fmt.Sprintf("use_%d_%d_%d", round, w, i)
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		err := db.StoreUsage(actx, agent.UsageRecord{ID: id, Time: time.Now(), UserID: "alice", RunID: "run_cut",
			Provider: "anthropic", Model: "claude-test", Status: 200})
		cancel()
		mu.Lock()
		calls++
		if err == nil {
			stored = append(stored, id)
		}
		mu.Unlock()
		if err != nil {
			if errs.KindOf(err) != errs.Unavailable {
				t.Errorf("store usage %s while the database is cut: %v (%T), want an Unavailable error", id, err, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}, nil)
	var n int
	if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM usage_records").Scan(&n); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, id := range stored {
		var one int
		if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM usage_records WHERE id = $1", id).Scan(&one); err != nil {
			t.Fatal(err)
		}
		if one != 1 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d usage records whose write answered nil are missing", missing, len(stored))
	}
	t.Logf("%d writes, %d answered nil, %d rows", calls, len(stored), n)
}
