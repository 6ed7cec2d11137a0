package teams

import (
	"context"
	"fmt"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// BudgetStore reads the budget that covers a sandbox's calls; *store.DB
// implements it.
type BudgetStore interface {
	// SandboxTeamBudget: the sandbox's team, its monthly limit in nano-USD
	// (0: none, or no team) and, with a limit, the cost of every call from
	// the team's sandboxes since since.
	SandboxTeamBudget(ctx context.Context, sandboxID string, since time.Time) (teamID string, limitNUSD, spentNUSD int64, err error)
}

// BudgetCheck returns the gateway's per-sandbox admission check: a call
// from a team sandbox is refused (errs.PaymentRequired, Retry-After at the
// month's end) once the team's spend this calendar month (UTC) reaches the
// team's limit. Sandboxes outside a team, and teams without a limit, pass.
func BudgetCheck(st BudgetStore, now func() time.Time) func(ctx context.Context, sandboxID string) error {
	if now == nil {
		now = time.Now
	}
	return func(ctx context.Context, sandboxID string) error {
		t := now()
		start := llm.MonthStart(t)
		teamID, limit, spent, err := st.SandboxTeamBudget(ctx, sandboxID, start)
		if err != nil {
			return fmt.Errorf("team budget: %w", err)
		}
		if limit == 0 || spent < limit {
			return nil
		}
		reset := start.AddDate(0, 1, 0)
		e := errs.E(errs.PaymentRequired, "team %s's monthly LLM budget of $%.2f reached (spent $%.2f this month); it resets at %s",
			teamID, float64(limit)/1e9, float64(spent)/1e9, reset.Format("2006-01-02 15:04 UTC"))
		e.RetryAfter = int(reset.Sub(t)/time.Second) + 1
		return e
	}
}
