package httpapi

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
)

func TestBadInput(t *testing.T) {
	h := newHarness(t)
	h.createUser("ivy@example.com", auth.RoleMember)
	c := h.mustLogin("ivy@example.com")
	big := `{"name":"` + strings.Repeat("a", defaultMaxJSONBody) + `"}`
	for _, tc := range []struct {
		name, path, body string
		ctype            string
		status           int
		code, field      string
	}{
		{"malformed", "/auth/tokens", `{"name": "x"`, "", 400, "malformed", ""},
		{"syntax", "/auth/tokens", `{"name" "x"}`, "", 400, "malformed", ""},
		{"empty body", "/auth/tokens", ``, "", 400, "malformed", ""},
		{"two values", "/auth/tokens", `{"name":"a"} {"name":"b"}`, "", 400, "malformed", ""},
		{"trailing garbage", "/auth/tokens", `{"name":"a"} x`, "", 400, "malformed", ""},
		{"wrong type", "/auth/tokens", `{"name": 42}`, "", 422, "invalid", "name"},
		{"wrong top-level type", "/auth/tokens", `["name"]`, "", 422, "invalid", ""},
		{"unknown field", "/auth/tokens", `{"name":"a","nmae":"b"}`, "", 422, "invalid", "nmae"},
		{"missing field", "/auth/tokens", `{}`, "", 422, "invalid", "name"},
		{"too large", "/auth/tokens", big, "", 413, "too_large", ""},
		{"wrong content type", "/auth/tokens", `{"name":"a"}`, "application/xml", 400, "malformed", ""},
		{"login wrong type", "/auth/login", `{"email":"a@b.c","password":12345678}`, "", 422, "invalid", "password"},
		{"login unknown field", "/auth/login", `{"email":"a@b.c","password":"x","admin":true}`, "", 422, "invalid", "admin"},
		{"login missing password", "/auth/login", `{"email":"a@b.c"}`, "", 422, "invalid", "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{}
			if tc.ctype != "" {
				hdr = []string{"Content-Type", tc.ctype}
			}
			r := h.do(c, "POST", tc.path, tc.body, hdr...)
			wantStatus(t, r, tc.status)
			e := r.errBody(t)
			if e.Code != tc.code {
				t.Fatalf("code = %q, want %q (%+v)", e.Code, tc.code, e)
			}
			if tc.field != "" && (len(e.Fields) == 0 || e.Fields[0].Field != tc.field || e.Fields[0].Reason == "") {
				t.Fatalf("fields = %+v, want field %q with a reason", e.Fields, tc.field)
			}
			if tc.field != "" && !strings.Contains(e.Message, tc.field) {
				t.Fatalf("message %q does not name field %q", e.Message, tc.field)
			}
		})
	}
}

// curl -d sends application/x-www-form-urlencoded: JSON is the only body
// format, so that is read as JSON, except from a browser on another site.
func TestJSONBodyWithoutJSONContentType(t *testing.T) {
	h := newHarness(t)
	h.createUser("jay@example.com", auth.RoleMember)
	c := h.mustLogin("jay@example.com")
	tok := h.newToken(c, "curl").Token
	bearer := h.client()
	for _, ct := range []string{"", "application/x-www-form-urlencoded", "text/plain; charset=utf-8"} {
		hdr := []string{"Authorization", "Bearer " + tok}
		if ct != "" {
			hdr = append(hdr, "Content-Type", ct)
		}
		wantStatus(t, h.do(bearer, "POST", "/auth/tokens", `{"name":"from curl"}`, hdr...), http.StatusCreated)
	}
	// A page on another site may post a form with a JSON-shaped body
	// without a preflight: refused (by the cross-origin check in front of
	// login, and by checkJSONType behind it).
	r := h.do(h.client(), "POST", "/auth/login", `{"email":"jay@example.com","password":"x"}`,
		"Content-Type", "text/plain", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
	wantStatus(t, r, http.StatusForbidden)
}

func TestInternalErrorIsOpaqueAndLoggedOnce(t *testing.T) {
	h := newHarness(t)
	s := newServer(Deps{Logger: h.logger(), Auth: h.auth})
	handler := requestID(s.observe(s.api(func(w http.ResponseWriter, r *http.Request) error {
		return fmt.Errorf("query: %w", errors.New("disk on fire at /secret/path"))
	})))
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "disk on fire") {
		t.Fatalf("body leaks the cause: %s", rec.Body)
	}
	var e struct{ Error errorBody }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message != "internal error" || e.Error.RequestID == "" {
		t.Fatalf("body = %s (%v)", rec.Body, err)
	}
	if n := strings.Count(h.logs.String(), "disk on fire"); n != 1 {
		t.Fatalf("cause logged %d times, want once:\n%s", n, h.logs)
	}
	if !strings.Contains(h.logs.String(), e.Error.RequestID) {
		t.Fatalf("log lacks request id %s", e.Error.RequestID)
	}
}

func TestErrorKindMapping(t *testing.T) {
	s := newServer(Deps{})
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{errs.E(errs.NotFound, "sandbox not found"), 404, "not_found"},
		{fmt.Errorf("wrapped: %w", errs.E(errs.Conflict, "busy")), 409, "conflict"},
		{errs.Field("cpu", "too big"), 422, "invalid"},
		{errs.E(errs.Malformed, "bad"), 400, "malformed"},
		{errs.E(errs.Unauthenticated, "who"), 401, "unauthenticated"},
		{errs.E(errs.Forbidden, "no"), 403, "forbidden"},
		{errs.E(errs.TooLarge, "big"), 413, "too_large"},
		{&errs.Error{Kind: errs.TooMany, Message: "slow down", RetryAfter: 7}, 429, "too_many_requests"},
		{errs.E(errs.PaymentRequired, "budget"), 402, "payment_required"},
		{errs.E(errs.Dependency, "bucket"), 424, "failed_dependency"},
		{errs.E(errs.BadGateway, "upstream"), 502, "bad_gateway"},
		{errs.E(errs.Unavailable, "later"), 503, "unavailable"},
		{errs.E(errs.Internal, "not public"), 500, "internal"},
		{sql.ErrNoRows, 500, "internal"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.api(func(http.ResponseWriter, *http.Request) error { return tc.err })(rec, httptest.NewRequest("GET", "/", nil))
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d", rec.Code, tc.status)
			}
			var e struct{ Error errorBody }
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if e.Error.Code != tc.code {
				t.Fatalf("code = %q, want %q", e.Error.Code, tc.code)
			}
			if tc.status == 429 && rec.Header().Get("Retry-After") != "7" {
				t.Fatalf("Retry-After = %q, want 7", rec.Header().Get("Retry-After"))
			}
		})
	}
}

func TestErrorAfterHeadersOnlyLogs(t *testing.T) {
	h := newHarness(t)
	s := newServer(Deps{Logger: h.logger()})
	rec := httptest.NewRecorder()
	s.api(func(w http.ResponseWriter, r *http.Request) error {
		if err := writeJSON(w, 200, "partial"); err != nil {
			return err
		}
		return errors.New("stream broke")
	})(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "error") {
		t.Fatalf("got %d %s; want the original 200 body only", rec.Code, rec.Body)
	}
	if !strings.Contains(h.logs.String(), "stream broke") {
		t.Fatalf("error not logged: %s", h.logs)
	}
}

func TestPanicRecovered(t *testing.T) {
	h := newHarness(t)
	s := newServer(Deps{Logger: h.logger()})
	handler := requestID(s.observe(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })))
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "internal error") {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(h.logs.String(), `"panic":"boom"`) {
		t.Fatalf("panic not logged: %s", h.logs)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	h := newHarness(t)
	r := h.do(h.client(), "GET", "/no/such/route", nil)
	wantStatus(t, r, 404)
	if e := r.errBody(t); e.Code != "not_found" {
		t.Fatalf("code = %q", e.Code)
	}
	r = h.do(h.client(), "PATCH", "/healthz", nil)
	wantStatus(t, r, 405)
	if e := r.errBody(t); e.Code != "method_not_allowed" {
		t.Fatalf("code = %q", e.Code)
	}
}

func TestRequestID(t *testing.T) {
	h := newHarness(t)
	r := h.do(h.client(), "GET", "/healthz", nil, requestIDHeader, "abc-123")
	if got := r.header.Get(requestIDHeader); got != "abc-123" {
		t.Fatalf("echoed id = %q, want abc-123", got)
	}
	r = h.do(h.client(), "GET", "/healthz", nil, requestIDHeader, "bad id\"with<junk>")
	if got := r.header.Get(requestIDHeader); got == "" || strings.ContainsAny(got, " \"<") {
		t.Fatalf("unsafe id not replaced: %q", got)
	}
}

func TestHealthReady(t *testing.T) {
	h := newHarness(t)
	wantStatus(t, h.do(h.client(), "GET", "/healthz", nil), 200)
	wantStatus(t, h.do(h.client(), "GET", "/readyz", nil), 200)
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	r := h.do(h.client(), "GET", "/readyz", nil)
	wantStatus(t, r, 503)
}

// FuzzDecodeJSON: any body yields nil or a client error, never a panic or a 500.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"email":"a@b.c","password":"x"}`, `{`, `[]`, `{"email":1}`, `{"x":1}`, `null`, `{} {}`, "\xff", `{"password":{"a":[1,2]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
		var v loginRequest
		err := decodeJSONLimit(r, &v, 1024)
		if err == nil {
			return
		}
		switch errs.KindOf(err) {
		case errs.Malformed, errs.Invalid, errs.TooLarge:
		default:
			t.Fatalf("body %q: error %v of kind %v, want a client error", body, err, errs.KindOf(err))
		}
	})
}
