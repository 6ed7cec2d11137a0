package secrets_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// A sealed value opens only as the row it was written to: copied to
// another user's or another name's row, it does not open; under another
// key it does not open either.
func TestSealedValuesAreBound(t *testing.T) {
	ctx := context.Background()
	db := storetest.OpenSQLite(t)
	for _, id := range []string{"u1", "u2"} {
		if err := db.CreateUser(ctx, auth.User{ID: id, Email: id + "@example.com", Role: auth.RoleMember}, "x"); err != nil {
			t.Fatal(err)
		}
	}
	key := make([]byte, 32)
	s, err := secrets.New(db, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "u1", "tok", "value-one"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Reveal(ctx, "u1", "tok"); err != nil || v != "value-one" {
		t.Fatalf("reveal: %q %v", v, err)
	}
	sealed, err := db.SealedSecret(ctx, "u1", "tok")
	if err != nil || strings.Contains(sealed, "value-one") {
		t.Fatalf("sealed %q %v", sealed, err)
	}
	for _, row := range [][2]string{{"u2", "tok"}, {"u1", "other"}} {
		if err := db.PutSecret(ctx, row[0], row[1], sealed, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Reveal(ctx, row[0], row[1]); err == nil {
			t.Errorf("a value copied to %v opened", row)
		}
	}
	other, _ := secrets.New(db, []byte(strings.Repeat("k", 32)))
	if _, err := other.Reveal(ctx, "u1", "tok"); err == nil || !strings.Contains(err.Error(), "TECHBOSS_SECRET_KEY") {
		t.Errorf("another key: %v", err)
	}
}

// Without TECHBOSS_SECRET_KEY the key is made once, private to the server.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := secrets.LoadKey("", dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := secrets.LoadKey("", dir)
	if err != nil || string(k1) != string(k2) || len(k1) != 32 {
		t.Fatalf("second load: %x vs %x, %v", k1, k2, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "secret.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v", fi.Mode(), err)
	}
	if _, err := secrets.LoadKey("too-short", dir); err == nil || !strings.Contains(err.Error(), "TECHBOSS_SECRET_KEY") {
		t.Errorf("bad configured key: %v", err)
	}
}
