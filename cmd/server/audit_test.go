package main

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/store"
)

// TestAuditWired: the server records into the audit log, an admin reads
// it through the Go client, and what was recorded is written by the time
// run returns.
func TestAuditWired(t *testing.T) {
	dir := t.TempDir()
	in := start(t, map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": dir,
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
	})
	ctx := context.Background()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, "admin@example.com", "wrong-password-123"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if _, err := c.Login(ctx, "admin@example.com", "bootstrap-password-1"); err != nil {
		t.Fatal(err)
	}
	// Entries are written in the background: wait for the second.
	deadline := time.Now().Add(30 * time.Second)
	for {
		page, err := c.Audit(ctx, client.AuditOptions{User: "admin@example.com", Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) == 1 && page.NextCursor != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /audit?limit=1: %+v, want one entry and a next cursor", page)
		}
		runtime.Gosched()
	}
	in.stop()
	db, err := store.Open(ctx, filepath.Join(dir, "techboss.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, action := range []string{"login", "login.failed"} {
		es, err := db.ListAudit(ctx, audit.Filter{Action: action})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 || es[0].Email != "admin@example.com" || es[0].IP != "127.0.0.1" {
			t.Errorf("%s entries %+v, want one by admin@example.com from 127.0.0.1", action, es)
		}
	}
}
