package store_test

import (
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestSandboxesSQLite(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	storetest.Sandboxes(t, db)
}

func TestSandboxesPostgres(t *testing.T) {
	url := os.Getenv("TECHBOSS_TEST_POSTGRES_URL")
	if url == "" {
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal("TECHBOSS_TEST_POSTGRES_URL is not set")
		}
		t.Skip("why: TECHBOSS_TEST_POSTGRES_URL is not set")
	}
	ctx := context.Background()
	admin, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := fmt.Sprintf("sbtest_%d", time.Now().UnixNano())
	if _, err := admin.SQL().ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	defer admin.SQL().ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)")
	u, _ := neturl.Parse(url)
	u.Path = "/" + name
	db, err := store.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	storetest.Sandboxes(t, db)
}
