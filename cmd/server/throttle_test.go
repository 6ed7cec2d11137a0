package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRunTrustedProxies: TECHBOSS_TRUSTED_PROXIES reaches the HTTP layer,
// so behind a proxy the guesser's forwarded address is throttled and the
// admin's is not; a bad value stops the server at start, naming it.
func TestRunTrustedProxies(t *testing.T) {
	in := start(t, map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"TECHBOSS_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
	})
	login := func(password, xff string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", in.url+"/auth/login",
			strings.NewReader(`{"email":"admin@example.com","password":"`+password+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", xff)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	// Five free failures, then a wait that doubles with every failure: on a
	// slow machine an attempt may land after a wait, so keep guessing.
	throttled := false
	for i := 0; i < 12 && !throttled; i++ {
		switch res := login("wrong-password", "198.51.100.7, 10.0.0.2"); res.StatusCode {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			if i < 5 || res.Header.Get("Retry-After") == "" {
				t.Fatalf("attempt %d: 429 (Retry-After %q) before 5 failures or without Retry-After", i+1, res.Header.Get("Retry-After"))
			}
			throttled = true
		default:
			t.Fatalf("attempt %d: status %d", i+1, res.StatusCode)
		}
	}
	if !throttled {
		t.Fatal("the guesser behind the proxy was never throttled")
	}
	if res := login("bootstrap-password-1", "203.0.113.9, 10.0.0.2"); res.StatusCode != http.StatusOK {
		t.Fatalf("admin behind the same proxy: status %d, want 200", res.StatusCode)
	}
	in.stop()

	err := run(context.Background(), nil, func(k string) string {
		return map[string]string{"TECHBOSS_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}[k]
	}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "TECHBOSS_TRUSTED_PROXIES") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line naming TECHBOSS_TRUSTED_PROXIES", err)
	}
}
