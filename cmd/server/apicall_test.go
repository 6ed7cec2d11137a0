package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bearerCaller returns a function that sends one request to base with a
// bearer token (and header pairs), fails the test on another status than
// want or when the answer shows secret, and returns the body.
func bearerCaller(t *testing.T, ctx context.Context, base, secret string) func(tok, method, path, body string, want int, hdr ...string) string {
	return func(tok, method, path, body string, want int, hdr ...string) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("%s %s: got %d, want %d: %s", method, path, res.StatusCode, want, b)
		}
		if strings.Contains(string(b), secret) {
			t.Fatalf("%s %s: the answer shows the secret: %s", method, path, b)
		}
		return string(b)
	}
}

// errorField is the first field an error answer names, or "".
func errorField(body string) string {
	var e struct {
		Error struct {
			Fields []struct{ Field string }
		}
	}
	_ = json.Unmarshal([]byte(body), &e)
	if len(e.Error.Fields) == 0 {
		return ""
	}
	return e.Error.Fields[0].Field
}
