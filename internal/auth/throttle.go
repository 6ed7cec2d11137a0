package auth

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Login throttling: backoff for the guesser, never a lockout of the owner.
//
// Every password attempt is counted against three keys:
//
//   - the pair (account, client address): the main gate. After
//     AccountLimit failures each further attempt from that pair waits
//     baseDelay, doubling with every failure, up to MaxDelay. The owner
//     logging in from another address has a pair of their own and is not
//     slowed by it.
//   - the client address across accounts (IPLimit, looser): one address
//     spraying many accounts.
//   - the account across addresses (AccountCeiling, high): a distributed
//     guess. It slows a botnet to one guess per MaxDelay for the whole
//     account once the ceiling is passed. Its cost to the owner is bounded
//     by the known-address rule below.
//
// A pair that logged in successfully is a known address for AccountKnown:
// it skips the address and account gates (it still has its pair gate), so
// neither a sprayer behind the owner's NAT nor a distributed guess slows the
// owner at a place they logged in from before.
//
// Failures decay: a key forgives one failure per ThrottleWindow, so a busy
// office address does not accumulate a backoff from a week of typos, while
// a guesser gains nothing by pausing for less than hours.
//
// An attempt is charged when it is admitted, before the password is
// checked, and refunded if the password was right: parallel guesses cannot
// all slip through before the first failure is recorded, and a wrong
// password and an unknown account do exactly the same throttle work.
//
// The table lives in memory, keyed by a seeded 64-bit hash (so neither a
// 1 MiB "email" nor the addresses and emails themselves are held), and is
// capped at ThrottleEntries. When full, expired entries go first, then the
// entry that would be forgotten soonest: a fresh one-failure entry goes
// before a guesser's escalated one, so rotating addresses or accounts
// cannot flush a backoff without paying for as many escalated entries as
// the cap. With several replicas each keeps its own table: a guesser
// spread across N replicas gets at most N times the budget.
type throttle struct {
	seed     maphash.Seed
	limits   [numGates]int
	forgive  time.Duration
	maxDelay time.Duration
	known    time.Duration
	capacity int

	mu      sync.Mutex
	entries map[uint64]throttleEntry
}

// baseDelay is the first wait once a key passes its limit.
const baseDelay = time.Second

type gate int

const (
	gatePair gate = iota
	gateIP
	gateAccount
	numGates
)

// refusal is the public reason for each gate (an unknown account is
// counted exactly like a known one, so naming the account gate reveals
// nothing about which accounts exist).
var refusal = [numGates]string{
	gatePair:    "too many failed logins for this account from your address; try again later",
	gateIP:      "too many failed logins from your address; try again later",
	gateAccount: "too many failed logins for this account; try again later",
}

type throttleEntry struct {
	gate     gate
	failures int
	last     time.Time // last charged attempt
	known    time.Time // pair entries: a login succeeded; known until then
}

// blockedUntil is when the next attempt may be made.
func (e throttleEntry) blockedUntil(limit int, base, max time.Duration) time.Time {
	return e.last.Add(backoff(e.failures, limit, base, max))
}

// backoff is the wait after n failures: none below limit, then base,
// doubling per failure, capped at max.
func backoff(n, limit int, base, max time.Duration) time.Duration {
	if n < limit {
		return 0
	}
	d := base
	for i := limit; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// expiry is when e is forgotten: every failure forgiven, any wait over,
// and no longer a known address.
func (t *throttle) expiry(e throttleEntry) time.Time {
	end := e.last.Add(time.Duration(e.failures) * t.forgive)
	if b := e.blockedUntil(t.limits[e.gate], baseDelay, t.maxDelay); b.After(end) {
		end = b
	}
	if e.known.After(end) {
		end = e.known
	}
	return end
}

// decayed returns e's failure count at now after forgiveness.
func (t *throttle) decayed(e throttleEntry, now time.Time) int {
	if e.failures == 0 {
		return 0
	}
	n := e.failures - int(now.Sub(e.last)/t.forgive)
	return max(n, 0)
}

// loginKeys are the three keys of one attempt; gates[g] is false when a
// gate does not apply (no client address).
type loginKeys struct {
	key   [numGates]uint64
	gates [numGates]bool
}

func (t *throttle) keys(email, clientIP string) loginKeys {
	addr := throttleAddr(clientIP)
	var k loginKeys
	k.key[gatePair] = maphash.String(t.seed, "pair\x00"+email+"\x00"+addr)
	k.key[gateIP] = maphash.String(t.seed, "addr\x00"+addr)
	k.key[gateAccount] = maphash.String(t.seed, "acct\x00"+email)
	k.gates = [numGates]bool{true, addr != "", true}
	return k
}

// throttleAddr is the address a client is counted under: an IPv6 client
// by its /64 (one subscriber's allocation, which it can rotate through
// freely), IPv4-mapped addresses as IPv4.
func throttleAddr(clientIP string) string {
	a, err := netip.ParseAddr(clientIP)
	if err != nil {
		return clientIP
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// admit charges one attempt to k, or refuses it with TooMany (RetryAfter
// set) when a gate that applies is still waiting. Nothing is charged on a
// refusal.
func (t *throttle) admit(k loginKeys, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	pair := t.entries[k.key[gatePair]]
	knownPair := pair.known.After(now)
	var wait time.Duration
	reason := -1
	for g := range numGates {
		if !k.gates[g] || (knownPair && g != gatePair) {
			continue
		}
		e, ok := t.entries[k.key[g]]
		if !ok {
			continue
		}
		if w := e.blockedUntil(t.limits[g], baseDelay, t.maxDelay).Sub(now); w > 0 {
			if reason < 0 {
				reason = int(g)
			}
			wait = max(wait, w)
		}
	}
	if reason >= 0 {
		e := errs.E(errs.TooMany, "%s", refusal[reason])
		e.RetryAfter = max(int((wait+time.Second-1)/time.Second), 1)
		return e
	}
	for g := range numGates {
		if !k.gates[g] {
			continue
		}
		key := k.key[g]
		e, ok := t.entries[key]
		if !ok {
			t.makeRoom(now, k)
		}
		e.gate = g
		e.failures = t.decayed(e, now) + 1
		e.last = now
		t.entries[key] = e
	}
	return nil
}

// succeed refunds a charged attempt whose password was right: the pair
// forgets its failures and becomes a known address for the account; the
// address and account keys get their one charge back.
func (t *throttle) succeed(k loginKeys, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.entries[k.key[gatePair]]; !ok {
		t.makeRoom(now, k) // dropped by another attempt's makeRoom meanwhile
	}
	t.entries[k.key[gatePair]] = throttleEntry{gate: gatePair, last: now, known: now.Add(t.known)}
	t.refundLocked(k, gateIP)
}

// refund gives back a charged attempt that was never judged (the lookup
// failed): every key gets its one charge back.
func (t *throttle) refund(k loginKeys) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refundLocked(k, gatePair)
}

func (t *throttle) refundLocked(k loginKeys, from gate) {
	for g := from; g < numGates; g++ {
		if !k.gates[g] {
			continue
		}
		if e, ok := t.entries[k.key[g]]; ok && e.failures > 0 {
			e.failures--
			t.entries[k.key[g]] = e
		}
	}
}

// makeRoom keeps the table under its cap before one insertion: it drops
// the expired entries, and if none were, the one that would be forgotten
// soonest. The keys of the attempt in progress are never dropped.
func (t *throttle) makeRoom(now time.Time, keep loginKeys) {
	if len(t.entries) < t.capacity {
		return
	}
	var victim uint64
	var victimEnd time.Time
	found := false
	for key, e := range t.entries {
		if key == keep.key[gatePair] || key == keep.key[gateIP] || key == keep.key[gateAccount] {
			continue
		}
		end := t.expiry(e)
		if !end.After(now) {
			delete(t.entries, key)
			continue
		}
		if !found || end.Before(victimEnd) {
			victim, victimEnd, found = key, end, true
		}
	}
	if len(t.entries) >= t.capacity && found {
		delete(t.entries, victim)
	}
}

// prune drops the expired entries and returns how many.
func (t *throttle) prune(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for key, e := range t.entries {
		if !t.expiry(e).After(now) {
			delete(t.entries, key)
			n++
		}
	}
	return n
}

// size is the number of entries in the table.
func (t *throttle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}
