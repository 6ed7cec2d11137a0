package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestNonPublicRoutesRequireAuth sends every operation the OpenAPI document
// marks as authenticated without credentials: each must answer 401, so a
// route mounted outside the authenticated group cannot go unnoticed.
func TestNonPublicRoutesRequireAuth(t *testing.T) {
	h := newServer(Deps{}).routes()
	for _, ops := range apiOps() {
		for _, op := range ops {
			if op.Public {
				continue
			}
			path := strings.NewReplacer("{id}", "x", "{name}", "x", "*", "x").Replace(openAPIPath(op.Path))
			path = strings.ReplaceAll(path, "{path}", "x")
			for strings.Contains(path, "{") { // any other parameter name
				i, j := strings.IndexByte(path, '{'), strings.IndexByte(path, '}')
				path = path[:i] + "x" + path[j+1:]
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(op.Method, path, strings.NewReader("{}")))
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s %s without credentials: status %d, want 401", op.Method, op.Path, rec.Code)
			}
		}
	}
}

func TestSecureCookie(t *testing.T) {
	db := storetest.OpenSQLite(t)
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams})
	if _, err := svc.CreateUser(t.Context(), "sec@example.com", "secure-password", auth.RoleMember); err != nil {
		t.Fatal(err)
	}
	body := `{"email":"sec@example.com","password":"secure-password"}`
	for _, tc := range []struct {
		name   string
		secure bool
		url    string
		want   bool
	}{
		{"plain http", false, "http://tb.example/auth/login", false},
		{"configured", true, "http://tb.example/auth/login", true},
		{"tls", false, "https://tb.example/auth/login", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewServer(Deps{Store: db, Auth: svc, SecureCookies: tc.secure})
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", tc.url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var c *http.Cookie
			for _, ck := range rec.Result().Cookies() {
				if ck.Name == sessionCookie {
					c = ck
				}
			}
			if c == nil || c.Secure != tc.want || !c.HttpOnly {
				t.Fatalf("cookie = %+v, want Secure=%v HttpOnly", c, tc.want)
			}
		})
	}
}
