package llm

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Ledger reports what a user has spent; the usage store implements it.
type Ledger interface {
	// SpentUSD returns the summed cost of the user's usage records at or
	// after since.
	SpentUSD(ctx context.Context, userID string, since time.Time) (float64, error)
}

// LimitStore returns a user's own limits, overriding the configured
// default. ok is false when the user has no override.
type LimitStore interface {
	UserLimits(ctx context.Context, userID string) (l BudgetConfig, ok bool, err error)
}

// Budgets enforces per-user limits before a call goes upstream: a monthly
// USD limit (calendar month, UTC, measured from recorded usage) and a
// request rate per minute (fixed one-minute windows, counted in this
// process). It is safe for concurrent use.
type Budgets struct {
	def    BudgetConfig
	ledger Ledger
	limits LimitStore // may be nil
	now    func() time.Time

	mu     sync.Mutex
	window time.Time      // start of the current rate window
	counts map[string]int // requests per user in window

	knownMu sync.Mutex
	known   map[string]knownBudget // the last limits and spend read per user
}

// knownBudget is what the store last said of a user's budget; Check uses
// it while the store is unreachable.
type knownBudget struct {
	lim      BudgetConfig
	override bool
	month    time.Time // the month spent was read for
	spent    float64
}

// NewBudgets returns a Budgets. limits may be nil; now is the clock.
func NewBudgets(def BudgetConfig, ledger Ledger, limits LimitStore, now func() time.Time) *Budgets {
	if now == nil {
		now = time.Now
	}
	return &Budgets{def: def, ledger: ledger, limits: limits, now: now, counts: map[string]int{}, known: map[string]knownBudget{}}
}

// Check admits one request for userID or returns errs.PaymentRequired
// (monthly limit reached) or errs.TooMany (rate limit reached), each with
// a message naming the limit and when it resets, and RetryAfter set.
// An admitted request counts against the rate limit.
//
// While the store is unreachable (errs.Unavailable), Check goes by what it
// last read of the user's limits and spend, so that agent runs go on
// through a database outage: a user over budget stays refused, and one
// under it may overspend by what the outage's calls cost (their usage is
// recorded once the store is back). A user it never read gets the default
// limits and is taken as having spent nothing.
func (b *Budgets) Check(ctx context.Context, userID string) error {
	now := b.now().UTC()
	start := MonthStart(now)
	b.knownMu.Lock()
	k, seen := b.known[userID]
	b.knownMu.Unlock()
	if !seen {
		k = knownBudget{lim: b.def}
	}
	if b.limits != nil {
		l, ok, err := b.limits.UserLimits(ctx, userID)
		switch {
		case err == nil:
			k.lim, k.override = b.def, ok
			if ok {
				k.lim = l
			}
		case errs.KindOf(err) != errs.Unavailable:
			return fmt.Errorf("load budget of user %s: %w", userID, err)
		}
	}
	lim := k.lim
	if lim.MonthlyUSD > 0 {
		spent, err := b.ledger.SpentUSD(ctx, userID, start)
		if err == nil {
			k.month, k.spent = start, spent
		} else if errs.KindOf(err) != errs.Unavailable {
			return fmt.Errorf("load spend of user %s: %w", userID, err)
		}
	}
	b.knownMu.Lock()
	b.known[userID] = k
	b.knownMu.Unlock()
	if lim.MonthlyUSD > 0 {
		spent := k.spent
		if !k.month.Equal(start) {
			spent = 0 // never read this month, and the store is unreachable
		}
		if spent >= lim.MonthlyUSD {
			reset := start.AddDate(0, 1, 0)
			e := errs.E(errs.PaymentRequired,
				"monthly LLM budget of $%.2f reached (spent $%.2f this month); it resets at %s",
				lim.MonthlyUSD, spent, reset.Format("2006-01-02 15:04 UTC"))
			e.RetryAfter = int(reset.Sub(now)/time.Second) + 1
			return e
		}
	}
	if lim.RequestsPerMinute > 0 {
		w := now.Truncate(time.Minute)
		b.mu.Lock()
		defer b.mu.Unlock()
		if !w.Equal(b.window) {
			b.window = w
			clear(b.counts)
		}
		if b.counts[userID] >= lim.RequestsPerMinute {
			reset := w.Add(time.Minute)
			e := errs.E(errs.TooMany,
				"LLM request rate limit of %d per minute reached; it resets at %s (in %d s)",
				lim.RequestsPerMinute, reset.Format("15:04:05 UTC"), secondsUntil(now, reset))
			e.RetryAfter = secondsUntil(now, reset)
			return e
		}
		b.counts[userID]++
	}
	return nil
}

func secondsUntil(now, t time.Time) int {
	d := t.Sub(now)
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// BudgetStatus is a user's limits and this month's spend.
type BudgetStatus struct {
	MonthlyUSD        float64   `json:"monthly_usd"`         // 0: unlimited
	RequestsPerMinute int       `json:"requests_per_minute"` // 0: unlimited
	Override          bool      `json:"override"`            // the user's own limits, not the default
	SpentUSD          float64   `json:"spent_usd_this_month"`
	MonthResetsAt     time.Time `json:"month_resets_at"`
}

// Status reports userID's limits and spend in the current month (UTC).
func (b *Budgets) Status(ctx context.Context, userID string) (BudgetStatus, error) {
	st := BudgetStatus{MonthlyUSD: b.def.MonthlyUSD, RequestsPerMinute: b.def.RequestsPerMinute}
	if b.limits != nil {
		l, ok, err := b.limits.UserLimits(ctx, userID)
		if err != nil {
			return st, fmt.Errorf("load budget of user %s: %w", userID, err)
		}
		if ok {
			st.MonthlyUSD, st.RequestsPerMinute, st.Override = l.MonthlyUSD, l.RequestsPerMinute, true
		}
	}
	now := b.now().UTC()
	start := MonthStart(now)
	spent, err := b.ledger.SpentUSD(ctx, userID, start)
	if err != nil {
		return st, fmt.Errorf("load spend of user %s: %w", userID, err)
	}
	st.SpentUSD, st.MonthResetsAt = spent, start.AddDate(0, 1, 0)
	return st, nil
}

// MonthStart is the start of t's calendar month in UTC: budgets (users'
// and teams') count spend from there, and reset a month later.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}
