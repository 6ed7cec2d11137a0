package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/techbossai/techboss/internal/openapitest"
)

// The OpenAPI document as kin-openapi loads it.
var (
	specOnce sync.Once
	specV    *openapitest.Validator
	specErr  error
)

func loadSpec() (*openapitest.Validator, error) {
	specOnce.Do(func() {
		b, err := json.Marshal(openAPIDoc("test"))
		if err != nil {
			specErr = err
			return
		}
		specV, specErr = openapitest.New(b)
	})
	return specV, specErr
}

// TestOpenAPIDocumentLoads: kin-openapi loads and validates the document.
func TestOpenAPIDocumentLoads(t *testing.T) {
	if _, err := loadSpec(); err != nil {
		t.Fatal(err)
	}
}

// validateResponses wraps h so that every JSON answer it gives is checked
// against the OpenAPI document (status, content type, body schema);
// mismatches fail t when the test ends. Streams, files and WebSocket
// upgrades pass through unchecked.
func validateResponses(t testing.TB, h http.Handler) http.Handler {
	var mu sync.Mutex
	var problems []string
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("OpenAPI: %s", p)
		}
	})
	return checkResponses(t, h, func(p string) {
		mu.Lock()
		problems = append(problems, p)
		mu.Unlock()
	})
}

// checkResponses is validateResponses reporting each mismatch to report.
func checkResponses(t testing.TB, h http.Handler, report func(string)) http.Handler {
	v, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(rw, r)
		if !rw.json || rw.hijacked {
			return
		}
		if err := v.Check(r, rw.status, rw.Header(), rw.body.Bytes()); err != nil {
			report(err.Error())
		}
	})
}

// teeWriter copies a JSON answer aside while it is written.
type teeWriter struct {
	http.ResponseWriter
	status   int
	json     bool
	hijacked bool
	body     bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.json = openapitest.IsJSON(w.Header().Get("Content-Type"))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.json {
		w.body.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *teeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *teeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("not a hijacker")
	}
	w.hijacked = true
	return hj.Hijack()
}

func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The validator catches an answer that breaks the document: a field of
// the wrong type, a missing required field, an undocumented status.
func TestOpenAPIValidatorCatches(t *testing.T) {
	var got []string
	bad := map[string]string{
		"/auth/me":     `{"data":{"id":5,"email":"a@b.c","role":"member","created_at":"2026-01-01T00:00:00Z"}}`,
		"/auth/tokens": `{"data":[{"name":"x"}]}`,
		"/healthz":     `{"data":{"version":"x"}}`,
	}
	h := checkResponses(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusTeapot)
		}
		_, _ = io.WriteString(w, bad[r.URL.Path])
	}), func(p string) { got = append(got, p) })
	for _, path := range []string{"/auth/me", "/auth/tokens", "/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://example.com"+path, nil))
	}
	if len(got) != 4 {
		t.Fatalf("the validator reported %d problems, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
}
