package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func newService(t testing.TB, opts ...func(*auth.Options)) *auth.Service {
	o := auth.Options{Store: storetest.OpenSQLite(t), Hash: auth.TestHashParams}
	for _, f := range opts {
		f(&o)
	}
	return auth.New(o)
}

func TestSecretRedacts(t *testing.T) {
	s := auth.Secret("p4ssw0rd-value")
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "s", s, "group", slog.GroupValue(slog.Any("nested", s)))
	j, _ := json.Marshal(struct{ P auth.Secret }{s})
	out := b.String() + fmt.Sprintf("%v %s %+v %#v %q", s, s, struct{ P auth.Secret }{s}, s, s) + string(j)
	if strings.Contains(out, "p4ssw0rd") {
		t.Fatalf("secret leaked: %s", out)
	}
	if s.Reveal() != "p4ssw0rd-value" {
		t.Fatal("Reveal lost the value")
	}
	// Decoding still works (request bodies carry passwords).
	var in struct{ P auth.Secret }
	if err := json.Unmarshal([]byte(`{"P":"abc"}`), &in); err != nil || in.P.Reveal() != "abc" {
		t.Fatalf("unmarshal: %v %q", err, in.P.Reveal())
	}
}

func TestPasswordHashing(t *testing.T) {
	ctx := context.Background()
	svc := newService(t)
	u, err := svc.CreateUser(ctx, " Mixed@Example.COM ", "long enough password", "")
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "mixed@example.com" || u.Role != auth.RoleMember {
		t.Fatalf("user = %+v", u)
	}
	if _, err := svc.Login(ctx, "mixed@example.com", "long enough password", "192.0.2.1"); err != nil {
		t.Fatalf("login: %v", err)
	}
	if _, err := svc.Login(ctx, "mixed@example.com", "long enough passworD", "192.0.2.1"); errs.KindOf(err) != errs.Unauthenticated {
		t.Fatalf("wrong password: %v", err)
	}
	if err := svc.SetPassword(ctx, u.ID, "a brand new password"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Login(ctx, "mixed@example.com", "a brand new password", ""); err != nil {
		t.Fatalf("login after SetPassword: %v", err)
	}
	// Two hashes of one password differ (salted) and use argon2id.
	h1, _ := auth.TestHashParams.Hash("same")
	h2, _ := auth.TestHashParams.Hash("same")
	if h1 == h2 || !strings.HasPrefix(h1, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("hashes %q %q", h1, h2)
	}
}

func TestCreateUserValidation(t *testing.T) {
	svc := newService(t)
	for _, tc := range []struct {
		email, pw string
		role      auth.Role
		field     string
	}{
		{"", "long enough pw", "", "email"},
		{"not-an-email", "long enough pw", "", "email"},
		{"Name <a@b.c>", "long enough pw", "", "email"},
		{"a@b.c", "short", "", "password"},
		{"a@b.c", strings.Repeat("x", 2000), "", "password"},
		{"a@b.c", "long enough pw", "owner", "role"},
	} {
		_, err := svc.CreateUser(context.Background(), tc.email, auth.Secret(tc.pw), tc.role)
		e, ok := errs.Public(err)
		if !ok || e.Kind != errs.Invalid || len(e.Fields) == 0 || e.Fields[0].Field != tc.field {
			t.Errorf("CreateUser(%q, %q): %v, want Invalid on %s", tc.email, tc.role, err, tc.field)
		}
	}
}

func TestBootstrapAdminOnlyOnce(t *testing.T) {
	ctx := context.Background()
	svc := newService(t)
	created, err := svc.BootstrapAdmin(ctx, "first@example.com", "first-password")
	if err != nil || !created {
		t.Fatalf("first bootstrap: %v %v", created, err)
	}
	created, err = svc.BootstrapAdmin(ctx, "second@example.com", "second-password")
	if err != nil || created {
		t.Fatalf("second bootstrap: %v %v, want no-op", created, err)
	}
	u, err := svc.UserByEmail(ctx, "first@example.com")
	if err != nil || !u.IsAdmin() {
		t.Fatalf("first admin = %+v %v", u, err)
	}
	if _, err := svc.UserByEmail(ctx, "second@example.com"); errs.KindOf(err) != errs.NotFound {
		t.Fatalf("second user exists: %v", err)
	}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	svc := newService(t, func(o *auth.Options) { o.Clock = func() time.Time { return now } })
	u, _ := svc.CreateUser(ctx, "t@example.com", "token-owner-pw", auth.RoleMember)
	if _, _, err := svc.CreateToken(ctx, u.ID, "  "); errs.KindOf(err) != errs.Invalid {
		t.Fatalf("blank name: %v", err)
	}
	if _, _, err := svc.CreateToken(ctx, u.ID, strings.Repeat("n", 101)); errs.KindOf(err) != errs.Invalid {
		t.Fatalf("long name: %v", err)
	}
	tok, sec, err := svc.CreateToken(ctx, u.ID, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sec.Reveal(), auth.TokenPrefix) || len(sec.Reveal()) < 40 {
		t.Fatalf("token %d chars", len(sec.Reveal()))
	}
	got, err := svc.Authenticate(ctx, sec.Reveal())
	if err != nil || got.ID != u.ID {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	// A near miss fails.
	mangled := sec.Reveal()[:len(sec.Reveal())-1] + "A"
	if mangled == sec.Reveal() {
		mangled = sec.Reveal()[:len(sec.Reveal())-1] + "B"
	}
	if _, err := svc.Authenticate(ctx, mangled); errs.KindOf(err) != errs.Unauthenticated {
		t.Fatalf("mangled token: %v", err)
	}
	if err := svc.RevokeToken(ctx, "someone-else", tok.ID); errs.KindOf(err) != errs.NotFound {
		t.Fatalf("revoke by other: %v", err)
	}
	if err := svc.RevokeToken(ctx, u.ID, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, sec.Reveal()); errs.KindOf(err) != errs.Unauthenticated {
		t.Fatalf("revoked token: %v", err)
	}
}

// FuzzAuthenticate: any bearer value is rejected cleanly (never a panic,
// never anything but Unauthenticated).
func FuzzAuthenticate(f *testing.F) {
	svc := newService(f)
	for _, s := range []string{"", "tbk_", "tbk_" + strings.Repeat("A", 43), "Bearer x", "\x00", "tbk_' OR 1=1 --", strings.Repeat("tbk_", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		u, err := svc.Authenticate(context.Background(), tok)
		if err == nil || u != nil || errs.KindOf(err) != errs.Unauthenticated {
			t.Fatalf("Authenticate(%q) = %v, %v", tok, u, err)
		}
	})
}
