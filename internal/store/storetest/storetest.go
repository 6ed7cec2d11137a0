// Package storetest is the store conformance suite, run against SQLite and
// PostgreSQL, and helpers that give any test a fresh, migrated database.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/store"
)

// PostgresEnv names the variable holding a PostgreSQL superuser URL for tests.
const PostgresEnv = "TECHBOSS_TEST_POSTGRES_URL"

// subtests is the conformance suite. Each domain appends ONE line:
// {"Name", testName}, where testName is in storetest/<domain>.go.
var subtests = []struct {
	name string
	fn   func(t *testing.T, db *store.DB)
}{
	{"Migrate", testMigrate},
	{"Auth", testAuth},
	{"Sandboxes", testSandboxes},
	{"Snapshots", testSnapshots},
	{"Runs", Runs},
	{"Usage", Usage},
	{"Budgets", Budgets},
	{"PreviewLinks", testPreviewLinks},
	{"Webhooks", testWebhooks},
	{"Audit", testAudit},
	{"Teams", testTeams},
}

// Exercise runs every conformance subtest, each on a fresh database from open.
func Exercise(t *testing.T, open func(t *testing.T) *store.DB) {
	for _, st := range subtests {
		t.Run(st.name, func(t *testing.T) {
			st.fn(t, open(t))
		})
	}
}

// OpenSQLite returns a migrated SQLite database in t.TempDir(), closed at cleanup.
func OpenSQLite(t testing.TB) *store.DB {
	t.Helper()
	return openMigrated(t, filepath.Join(t.TempDir(), "techboss.db"))
}

// OpenPostgres returns a migrated, freshly created PostgreSQL database, dropped
// at cleanup. Without TECHBOSS_TEST_POSTGRES_URL the test skips, or fails
// when TECHBOSS_REQUIRE_ALL=1.
func OpenPostgres(t testing.TB) *store.DB {
	t.Helper()
	return openMigrated(t, PostgresURL(t))
}

// Open returns a migrated database of the named dialect ("sqlite" or "postgres").
func Open(t testing.TB, d store.Dialect) *store.DB {
	t.Helper()
	if d == store.Postgres {
		return OpenPostgres(t)
	}
	return OpenSQLite(t)
}

func openMigrated(t testing.TB, url string) *store.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// RequireAll reports whether missing test dependencies must fail tests.
func RequireAll() bool { return os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" }

// PostgresURL creates an empty database with a random name on the server at
// TECHBOSS_TEST_POSTGRES_URL and returns its URL; it is dropped at cleanup.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		if RequireAll() {
			t.Fatalf("%s is not set (TECHBOSS_REQUIRE_ALL=1): PostgreSQL tests need a server", PostgresEnv)
		}
		t.Skipf("skipping: %s is not set (no PostgreSQL server for tests)", PostgresEnv)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open postgres admin connection: %v", err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "techboss_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

func testMigrate(t *testing.T, db *store.DB) {
	ctx := context.Background()
	// Migrating an up-to-date database is a no-op.
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	var n int
	if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM users").Scan(&n); err != nil {
		t.Fatalf("users table after migrate: %v", err)
	}
	if got := string(db.Dialect()); got != "sqlite" && got != "postgres" {
		t.Fatalf("dialect = %q", got)
	}
	// The login throttle lives in memory; its old table is dropped (00010).
	if _, err := db.SQL().ExecContext(ctx, "SELECT 1 FROM login_throttle"); err == nil {
		t.Fatalf("login_throttle still exists after migrate")
	}
}
