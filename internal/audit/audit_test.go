package audit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/pgserver"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

func openPG(t *testing.T, url string) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestEntrySurvivesDatabaseOutage records entries while PostgreSQL is
// stopped: Record does not block, and once the database is back every
// entry is stored, once.
func TestEntrySurvivesDatabaseOutage(t *testing.T) {
	pg := pgserver.Start(t)
	db := openPG(t, pg.URL)
	l := audit.New(audit.Options{Repo: db})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = l.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	l.Record(audit.Entry{Action: "before", UserID: "u1"})
	fctx, fcancel := context.WithTimeout(context.Background(), time.Minute)
	defer fcancel()
	if err := l.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	pg.Stop()
	for range 3 {
		l.Record(audit.Entry{Action: "during", UserID: "u1"})
	}
	if l.Backlog() == 0 {
		t.Fatal("nothing queued while the database is down")
	}
	pg.Start()
	if err := l.Flush(fctx); err != nil {
		t.Fatalf("flush after the outage: %v (backlog %d)", err, l.Backlog())
	}
	es, err := db.ListAudit(fctx, audit.Filter{Action: "during"})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Errorf("%d entries recorded during the outage stored, want 3", len(es))
	}
}

// TestRunDrainsOnStop: entries queued when Run's context ends are still
// written before Run returns.
func TestRunDrainsOnStop(t *testing.T) {
	db := storetest.OpenSQLite(t)
	l := audit.New(audit.Options{Repo: db})
	ctx, cancel := context.WithCancel(context.Background())
	for range 450 {
		l.Record(audit.Entry{Action: "x"})
	}
	cancel()
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := db.ListAudit(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 450 {
		t.Errorf("%d entries stored, want 450", len(es))
	}
}

// TestSweep deletes entries older than Keep, and nothing when Keep is 0.
func TestSweep(t *testing.T) {
	db := storetest.OpenSQLite(t)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	if err := db.AppendAudit(context.Background(), []audit.Entry{
		{ID: "old", At: now.Add(-91 * 24 * time.Hour), Action: "x"},
		{ID: "new", At: now.Add(-89 * 24 * time.Hour), Action: "x"},
	}); err != nil {
		t.Fatal(err)
	}
	audit.New(audit.Options{Repo: db, Clock: clock}).Sweep(context.Background())
	if es, _ := db.ListAudit(context.Background(), audit.Filter{}); len(es) != 2 {
		t.Errorf("Keep 0 swept: %d entries left, want 2", len(es))
	}
	audit.New(audit.Options{Repo: db, Clock: clock, Keep: 90 * 24 * time.Hour}).Sweep(context.Background())
	es, _ := db.ListAudit(context.Background(), audit.Filter{})
	if len(es) != 1 || es[0].ID != "new" {
		t.Errorf("after the sweep: %+v, want only \"new\"", es)
	}
}

// BenchmarkRecord is the cost a request pays to record its entry (the
// write happens in the background): queueing only.
func BenchmarkRecord(b *testing.B) {
	l := audit.New(audit.Options{Repo: storetest.OpenSQLite(b)})
	e := audit.Entry{UserID: "u", Email: "u@example.com", Auth: "token", TokenID: "t", IP: "192.0.2.1",
		Action: "exec", Method: "POST", Route: "/sandbox/{id}/exec", Resource: "sandbox:sb_1", Status: 200}
	b.ReportAllocs()
	for b.Loop() {
		l.Record(e)
	}
}
