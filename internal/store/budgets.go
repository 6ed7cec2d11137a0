package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// SetUserLimits stores a user's own LLM limits, overriding the configured
// default budget (zero fields mean unlimited). An unknown user is NotFound.
func (d *DB) SetUserLimits(ctx context.Context, userID string, l llm.BudgetConfig, at time.Time) error {
	if l.MonthlyUSD < 0 || l.RequestsPerMinute < 0 {
		return errs.E(errs.Invalid, "budget limits must not be negative")
	}
	_, err := d.exec(ctx, d.db, `INSERT INTO llm_budgets (user_id, monthly_nusd, requests_per_minute, updated_at)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET monthly_nusd = excluded.monthly_nusd,
			requests_per_minute = excluded.requests_per_minute, updated_at = excluded.updated_at`,
		userID, int64(math.Round(l.MonthlyUSD*1e9)), l.RequestsPerMinute, ms(at))
	if err != nil {
		if budgetUserMissing(err) {
			return errs.Wrap(errs.NotFound, err, "user not found")
		}
		return fmt.Errorf("set budget of %s: %w", userID, err)
	}
	return nil
}

// UserLimits returns a user's own limits; ok is false when the user has
// none (llm.LimitStore).
func (d *DB) UserLimits(ctx context.Context, userID string) (llm.BudgetConfig, bool, error) {
	var (
		nusd int64
		rpm  int
	)
	err := d.queryRow(ctx, d.db, `SELECT monthly_nusd, requests_per_minute FROM llm_budgets WHERE user_id = ?`, userID).Scan(&nusd, &rpm)
	if isNoRows(err) {
		return llm.BudgetConfig{}, false, nil
	}
	if err != nil {
		return llm.BudgetConfig{}, false, fmt.Errorf("budget of %s: %w", userID, err)
	}
	return llm.BudgetConfig{MonthlyUSD: float64(nusd) / 1e9, RequestsPerMinute: rpm}, true, nil
}

// DeleteUserLimits returns a user to the default budget. Idempotent.
func (d *DB) DeleteUserLimits(ctx context.Context, userID string) error {
	if _, err := d.exec(ctx, d.db, `DELETE FROM llm_budgets WHERE user_id = ?`, userID); err != nil {
		return fmt.Errorf("delete budget of %s: %w", userID, err)
	}
	return nil
}

// budgetUserMissing reports a foreign-key violation (no such user) on either backend.
func budgetUserMissing(err error) bool {
	s := err.Error()
	return strings.Contains(s, "FOREIGN KEY constraint failed") || strings.Contains(s, "SQLSTATE 23503")
}
