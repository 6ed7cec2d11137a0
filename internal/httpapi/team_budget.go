package httpapi

import (
	"context"
	"math"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/teams"
)

// teamBudgetOps documents a team's LLM budget (docs/teams.md).
var teamBudgetOps = []apiOp{
	{Method: "GET", Path: "/teams/{team}/budget", Summary: "The team's monthly LLM limit in USD (0: none), what the calls from its sandboxes cost this calendar month (UTC) and when that resets (any member, admins)", Response: teamBudgetView{}},
	{Method: "PUT", Path: "/teams/{team}/budget", Summary: "Set the team's monthly LLM limit in USD (team owners or admins): once the calls from the team's sandboxes cost that much this calendar month (UTC), the gateway refuses the next with 402 until the month ends", Request: teamBudget{}, Response: teamBudget{}, Errors: []int{403},
		Example: teamBudget{MonthlyUSD: 100}},
	{Method: "DELETE", Path: "/teams/{team}/budget", Summary: "Remove the team's monthly LLM limit (team owners or admins)", Errors: []int{403}},
}

type teamBudget struct {
	TeamID     string  `json:"team_id,omitempty"`
	MonthlyUSD float64 `json:"monthly_usd"`
}

// teamBudgetView is a team's limit and this month's spend.
type teamBudgetView struct {
	TeamID     string    `json:"team_id"`
	MonthlyUSD float64   `json:"monthly_usd"`
	SpentUSD   float64   `json:"spent_usd"`
	ResetsAt   time.Time `json:"resets_at"`
}

func (s *server) mountTeamBudgets(r chi.Router) {
	r.Get("/teams/{team}/budget", s.api(s.handleGetTeamBudget))
	r.Put("/teams/{team}/budget", s.api(s.handlePutTeamBudget))
	r.Delete("/teams/{team}/budget", s.api(s.handleDeleteTeamBudget))
}

// teamBudgetAllowed: an admin may set any team's budget, a team owner
// their team's; a stranger cannot tell the team exists (404).
func (s *server) teamBudgetAllowed(ctx context.Context, r *http.Request, teamID string) error {
	return s.teamBudgetRole(ctx, r, teamID, teams.RoleOwner)
}

// teamBudgetRole: an admin, or a member of the team with at least min.
func (s *server) teamBudgetRole(ctx context.Context, r *http.Request, teamID string, min teams.Role) error {
	if s.deps.Store == nil {
		return errs.E(errs.Unavailable, "teams are not configured on this server")
	}
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	u := currentUser(r)
	if u.IsAdmin() {
		if _, err := s.deps.Store.GetTeam(ctx, teamID); err != nil {
			return err
		}
		return nil
	}
	_, err = ts.RequireRole(ctx, teamID, u.ID, min)
	return err
}

func (s *server) handleGetTeamBudget(w http.ResponseWriter, r *http.Request) error {
	teamID := chi.URLParam(r, "team")
	if err := s.teamBudgetRole(r.Context(), r, teamID, teams.RoleViewer); err != nil {
		return err
	}
	start := llm.MonthStart(s.now())
	limit, spent, err := s.deps.Store.TeamBudget(r.Context(), teamID, start)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, teamBudgetView{TeamID: teamID, MonthlyUSD: float64(limit) / 1e9, SpentUSD: float64(spent) / 1e9,
		ResetsAt: start.AddDate(0, 1, 0)})
}

func (s *server) handlePutTeamBudget(w http.ResponseWriter, r *http.Request) error {
	teamID := chi.URLParam(r, "team")
	var req teamBudget
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if !(req.MonthlyUSD > 0) || req.MonthlyUSD > 1e9 {
		return errs.Field("monthly_usd", "must be more than 0 and at most 1000000000")
	}
	if err := s.teamBudgetAllowed(r.Context(), r, teamID); err != nil {
		return err
	}
	if err := s.deps.Store.SetTeamBudget(r.Context(), teamID, int64(math.Round(req.MonthlyUSD*1e9)), s.now()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, teamBudget{TeamID: teamID, MonthlyUSD: req.MonthlyUSD})
}

func (s *server) handleDeleteTeamBudget(w http.ResponseWriter, r *http.Request) error {
	teamID := chi.URLParam(r, "team")
	if err := s.teamBudgetAllowed(r.Context(), r, teamID); err != nil {
		return err
	}
	if err := s.deps.Store.DeleteTeamBudget(r.Context(), teamID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
