package auth_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
)

// clock is a settable clock; tests move it instead of sleeping.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const ownerPW = "the owner's password"

// throttled returns a service with a settable clock and one account,
// owner@example.com.
func throttled(t *testing.T, opts ...func(*auth.Options)) (*auth.Service, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	svc := newService(t, append([]func(*auth.Options){func(o *auth.Options) { o.Clock = c.Now }}, opts...)...)
	if _, err := svc.CreateUser(context.Background(), "owner@example.com", ownerPW, auth.RoleMember); err != nil {
		t.Fatal(err)
	}
	return svc, c
}

// attempt logs in and describes the outcome: "ok", "401", or "429 <Retry-After>".
func attempt(t *testing.T, svc *auth.Service, email, pw, ip string) string {
	t.Helper()
	_, err := svc.Login(context.Background(), email, auth.Secret(pw), ip)
	var e *errs.Error
	switch {
	case err == nil:
		return "ok"
	case errs.KindOf(err) == errs.Unauthenticated:
		return "401"
	case errors.As(err, &e) && e.Kind == errs.TooMany:
		return fmt.Sprintf("429 %d", e.RetryAfter)
	}
	t.Fatalf("login %s from %s: %v", email, ip, err)
	return ""
}

func TestLoginBackoffDoublesPerPair(t *testing.T) {
	svc, c := throttled(t) // defaults: 5 free failures, 1 s doubling to 15 min
	const guesser = "198.51.100.7"
	for i := range 5 {
		if got := attempt(t, svc, "owner@example.com", "guess", guesser); got != "401" {
			t.Fatalf("failure %d: got %s, want 401", i+1, got)
		}
	}
	// The 5th failure starts a 1 s wait; each failure after it doubles it,
	// until 15 minutes.
	want := []int{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900}
	for _, wait := range want {
		if got := attempt(t, svc, "owner@example.com", ownerPW, guesser); got != fmt.Sprintf("429 %d", wait) {
			t.Fatalf("right password while waiting: got %s, want 429 %d", got, wait)
		}
		c.Advance(time.Duration(wait)*time.Second - time.Millisecond)
		if got := attempt(t, svc, "owner@example.com", "guess", guesser); got != "429 1" {
			t.Fatalf("1 ms before the wait ends: got %s, want 429 1", got)
		}
		c.Advance(time.Millisecond)
		if got := attempt(t, svc, "owner@example.com", "guess", guesser); got != "401" {
			t.Fatalf("after waiting %d s: got %s, want 401", wait, got)
		}
	}
	// The owner elsewhere is not slowed at all, by the pair or the account.
	if got := attempt(t, svc, "owner@example.com", ownerPW, "203.0.113.5"); got != "ok" {
		t.Fatalf("owner from another address: got %s, want ok", got)
	}
}

func TestLoginSuccessResetsPair(t *testing.T) {
	svc, c := throttled(t)
	const ip = "192.0.2.10"
	for range 5 {
		attempt(t, svc, "owner@example.com", "typo", ip)
	}
	if got := attempt(t, svc, "owner@example.com", ownerPW, ip); got != "429 1" {
		t.Fatalf("right after the 5th typo: got %s, want 429 1", got)
	}
	c.Advance(time.Second)
	if got := attempt(t, svc, "owner@example.com", ownerPW, ip); got != "ok" {
		t.Fatalf("after the wait: got %s, want ok", got)
	}
	// A fresh start: five more free failures, then 1 s again (not 2 s).
	for i := range 5 {
		if got := attempt(t, svc, "owner@example.com", "typo", ip); got != "401" {
			t.Fatalf("failure %d after success: got %s, want 401", i+1, got)
		}
	}
	if got := attempt(t, svc, "owner@example.com", ownerPW, ip); got != "429 1" {
		t.Fatalf("got %s, want 429 1", got)
	}
}

func TestLoginFailuresDecay(t *testing.T) {
	svc, c := throttled(t, func(o *auth.Options) { o.ThrottleWindow = time.Hour })
	const ip = "192.0.2.11"
	for range 5 {
		attempt(t, svc, "owner@example.com", "typo", ip)
	}
	// Two quiet hours forgive two failures: two free failures, then 1 s.
	c.Advance(2 * time.Hour)
	for i := range 2 {
		if got := attempt(t, svc, "owner@example.com", "typo", ip); got != "401" {
			t.Fatalf("failure %d after 2 h: got %s, want 401", i+1, got)
		}
	}
	if got := attempt(t, svc, "owner@example.com", "typo", ip); got != "429 1" {
		t.Fatalf("got %s, want 429 1", got)
	}
}

func TestLoginSprayFromOneAddress(t *testing.T) {
	svc, _ := throttled(t, func(o *auth.Options) { o.IPLimit = 8 })
	const sprayer = "198.51.100.8"
	for i := range 8 {
		if got := attempt(t, svc, fmt.Sprintf("user%d@example.com", i), "guess", sprayer); got != "401" {
			t.Fatalf("spray %d: got %s, want 401", i, got)
		}
	}
	if got := attempt(t, svc, "fresh@example.com", "guess", sprayer); got != "429 1" {
		t.Fatalf("9th account from one address: got %s, want 429 1", got)
	}
	// IPv6: a /64 is one client (rotating inside it buys nothing); the
	// next /64 is another.
	svc6, _ := throttled(t, func(o *auth.Options) { o.IPLimit = 3 })
	for i := range 3 {
		attempt(t, svc6, fmt.Sprintf("v%d@example.com", i), "guess", fmt.Sprintf("2001:db8:1:2::%x", i+1))
	}
	if got := attempt(t, svc6, "v9@example.com", "guess", "2001:db8:1:2:ffff::9"); got != "429 1" {
		t.Fatalf("same /64: got %s, want 429 1", got)
	}
	if got := attempt(t, svc6, "owner@example.com", ownerPW, "2001:db8:1:3::1"); got != "ok" {
		t.Fatalf("next /64: got %s, want ok", got)
	}
}

func TestLoginDistributedGuess(t *testing.T) {
	svc, c := throttled(t, func(o *auth.Options) { o.AccountCeiling = 10 })
	const home = "203.0.113.20"
	if got := attempt(t, svc, "owner@example.com", ownerPW, home); got != "ok" {
		t.Fatalf("owner at home: got %s", got)
	}
	// Ten addresses, one guess each: no pair or address limit is reached,
	// the account's ceiling is.
	for i := range 10 {
		if got := attempt(t, svc, "owner@example.com", "guess", fmt.Sprintf("198.51.100.%d", 100+i)); got != "401" {
			t.Fatalf("bot %d: got %s, want 401", i, got)
		}
	}
	if got := attempt(t, svc, "owner@example.com", "guess", "198.51.100.200"); got != "429 1" {
		t.Fatalf("11th bot: got %s, want 429 1", got)
	}
	// The owner at an address they logged in from is not slowed.
	if got := attempt(t, svc, "owner@example.com", ownerPW, home); got != "ok" {
		t.Fatalf("owner at a known address: got %s, want ok", got)
	}
	// The botnet's budget keeps halving: 1 s, 2 s, 4 s ...
	for i, wait := range []int{1, 2, 4, 8} {
		c.Advance(time.Duration(wait) * time.Second)
		attempt(t, svc, "owner@example.com", "guess", fmt.Sprintf("198.51.101.%d", i))
		if got := attempt(t, svc, "owner@example.com", "guess", "198.51.102.1"); got != fmt.Sprintf("429 %d", 2*wait) {
			t.Fatalf("got %s, want 429 %d", got, 2*wait)
		}
	}
}

// An unknown email is throttled exactly like a wrong password: the
// throttle cannot tell a guesser which accounts exist.
func TestLoginThrottleSameForUnknownAccount(t *testing.T) {
	run := func(email string) []string {
		svc, c := throttled(t)
		var out []string
		for range 7 {
			out = append(out, attempt(t, svc, email, "guess", "198.51.100.9"))
			c.Advance(1500 * time.Millisecond)
		}
		return out
	}
	known, unknown := run("owner@example.com"), run("nobody@example.com")
	if fmt.Sprint(known) != fmt.Sprint(unknown) {
		t.Fatalf("wrong password %v, unknown account %v: throttling differs", known, unknown)
	}
	if fmt.Sprint(known) != "[401 401 401 401 401 401 429 1]" {
		t.Fatalf("outcomes = %v", known)
	}
}

// Parallel guesses cannot all slip in before the first failure is counted.
func TestLoginThrottleParallel(t *testing.T) {
	svc, _ := throttled(t)
	const n = 20
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r := attempt(t, svc, "owner@example.com", "guess", "198.51.100.10")
			mu.Lock()
			got[r]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if got["401"] != 5 || got["429 1"] != n-5 {
		t.Fatalf("outcomes = %v, want 5 × 401 and %d × 429", got, n-5)
	}
}

func TestLoginThrottleTableBounded(t *testing.T) {
	const capacity = 64
	svc, c := throttled(t, func(o *auth.Options) { o.ThrottleEntries = capacity })
	ctx := context.Background()
	// A guesser escalates one pair ...
	const guesser = "198.51.100.11"
	for range 9 {
		attempt(t, svc, "owner@example.com", "guess", guesser)
		c.Advance(time.Minute)
	}
	if got := attempt(t, svc, "owner@example.com", "guess", guesser); got != "401" {
		t.Fatalf("got %s", got)
	}
	// ... then rotates addresses and accounts to flush it.
	for i := range 1000 {
		attempt(t, svc, fmt.Sprintf("junk%d@example.com", i), "guess", fmt.Sprintf("10.%d.%d.1", i/250, i%250))
		if n := svc.ThrottleSize(); n > capacity {
			t.Fatalf("after %d junk attempts the table holds %d entries, cap %d", i+1, n, capacity)
		}
	}
	if got := attempt(t, svc, "owner@example.com", "guess", guesser); got != "429 32" {
		t.Fatalf("the escalated pair after the flood: got %s, want 429 32", got)
	}
	// Entries expire: once every failure is forgiven the table empties.
	c.Advance(24 * time.Hour)
	if _, n, err := svc.Prune(ctx); err != nil || n == 0 || svc.ThrottleSize() != 0 {
		t.Fatalf("Prune = %d, %v; %d entries left, want 0", n, err, svc.ThrottleSize())
	}
}
