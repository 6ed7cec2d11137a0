package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestSQLite(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) *store.DB { return storetest.OpenSQLite(t) })
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) *store.DB { return storetest.OpenPostgres(t) })
}

// TestSQLiteCheckpointsInBackground: commits never checkpoint (so never
// wait for the checkpoint's fsync); the background checkpointer copies the
// WAL into the database file on its own, and Close leaves no WAL behind.
func TestSQLiteCheckpointsInBackground(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ckpt.db")
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var auto int
	if err := db.SQL().QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("wal_autocheckpoint = %d, %v; want 0", auto, err)
	}
	if _, err := db.SQL().ExecContext(ctx, "CREATE TABLE blobs (b BLOB)"); err != nil {
		t.Fatal(err)
	}
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	before := size(path)
	blob := make([]byte, 4096)
	for range 1500 { // > SQLite's 1,000-page automatic checkpoint
		if _, err := db.SQL().ExecContext(ctx, "INSERT INTO blobs (b) VALUES (?)", blob); err != nil {
			t.Fatal(err)
		}
	}
	if size(path+"-wal") < 1000*4096 {
		t.Fatalf("WAL is %d bytes after 1,500 commits of 4 KiB: something checkpointed inside a commit", size(path+"-wal"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for size(path) < before+1000*4096 {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes (WAL %d): no background checkpoint", size(path), size(path+"-wal"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := size(path + "-wal"); n != 0 {
		t.Fatalf("WAL left at close: %d bytes", n)
	}
}
