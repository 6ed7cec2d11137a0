package store

import (
	"context"
	"fmt"
	"time"
)

// SetTeamBudget stores the team's monthly LLM limit in nano-USD (> 0).
func (d *DB) SetTeamBudget(ctx context.Context, teamID string, monthlyNUSD int64, at time.Time) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO team_budgets (team_id, monthly_nusd, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (team_id) DO UPDATE SET monthly_nusd = excluded.monthly_nusd, updated_at = excluded.updated_at`,
		teamID, monthlyNUSD, ms(at))
	if err != nil {
		return fmt.Errorf("set budget of team %s: %w", teamID, err)
	}
	return nil
}

// DeleteTeamBudget removes the team's limit. Idempotent.
func (d *DB) DeleteTeamBudget(ctx context.Context, teamID string) error {
	if _, err := d.exec(ctx, d.db, `DELETE FROM team_budgets WHERE team_id = ?`, teamID); err != nil {
		return fmt.Errorf("delete budget of team %s: %w", teamID, err)
	}
	return nil
}

// SandboxTeamBudget is the budget that covers a call from the sandbox: its
// team, the team's monthly limit (0: none, or no team) and, when there is
// a limit, the cost of every call from the team's sandboxes since since.
func (d *DB) SandboxTeamBudget(ctx context.Context, sandboxID string, since time.Time) (teamID string, limitNUSD, spentNUSD int64, err error) {
	err = d.queryRow(ctx, d.db, `SELECT s.team_id, COALESCE(b.monthly_nusd, 0) FROM sandboxes s
		LEFT JOIN team_budgets b ON b.team_id = s.team_id WHERE s.id = ? AND s.team_id <> ''`, sandboxID).Scan(&teamID, &limitNUSD)
	if isNoRows(err) {
		return "", 0, 0, nil
	}
	if err != nil || limitNUSD == 0 {
		if err != nil {
			err = fmt.Errorf("team budget of sandbox %s: %w", sandboxID, err)
		}
		return teamID, 0, 0, err
	}
	spentNUSD, err = d.teamSpent(ctx, teamID, since)
	return teamID, limitNUSD, spentNUSD, err
}

// TeamBudget is the team's monthly limit in nano-USD (0: none) and the
// cost of every call from its sandboxes since since.
func (d *DB) TeamBudget(ctx context.Context, teamID string, since time.Time) (limitNUSD, spentNUSD int64, err error) {
	err = d.queryRow(ctx, d.db, `SELECT monthly_nusd FROM team_budgets WHERE team_id = ?`, teamID).Scan(&limitNUSD)
	if err != nil && !isNoRows(err) {
		return 0, 0, fmt.Errorf("budget of team %s: %w", teamID, err)
	}
	spentNUSD, err = d.teamSpent(ctx, teamID, since)
	return limitNUSD, spentNUSD, err
}

func (d *DB) teamSpent(ctx context.Context, teamID string, since time.Time) (int64, error) {
	var n int64
	err := d.queryRow(ctx, d.db, `SELECT COALESCE(SUM(u.cost_nusd), 0) FROM usage_records u
		JOIN sandboxes s ON s.id = u.sandbox_id WHERE s.team_id = ? AND u.at >= ?`, teamID, ms(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("spend of team %s: %w", teamID, err)
	}
	return n, nil
}
