package httpapi

import (
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
)

// TestPprofAdminOnly: admins get the profiles; a member gets the same 404
// as an unknown route; no credentials is 401.
func TestPprofAdminOnly(t *testing.T) {
	h := newHarness(t)
	h.createUser("admin@example.com", auth.RoleAdmin)
	h.createUser("member@example.com", auth.RoleMember)
	admin := h.mustLogin("admin@example.com")
	member := h.mustLogin("member@example.com")

	r := h.do(admin, "GET", "/debug/pprof/", nil)
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), "goroutine") || !strings.Contains(string(r.body), "heap") {
		t.Fatalf("index does not list the profiles:\n%.500s", r.body)
	}
	r = h.do(admin, "GET", "/debug/pprof/goroutine?debug=1", nil)
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), "goroutine profile:") {
		t.Fatalf("goroutine profile:\n%.300s", r.body)
	}
	r = h.do(admin, "GET", "/debug/pprof/heap", nil)
	wantStatus(t, r, 200)
	if len(r.body) == 0 {
		t.Fatal("empty heap profile")
	}
	r = h.do(admin, "GET", "/debug/pprof/cmdline", nil)
	wantStatus(t, r, 200)

	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1"} {
		r = h.do(member, "GET", p, nil)
		wantStatus(t, r, 404)
		if e := r.errBody(t); e.Code != "not_found" {
			t.Fatalf("member %s: code %q", p, e.Code)
		}
		r = h.do(h.client(), "GET", p, nil)
		wantStatus(t, r, 401)
	}
}
