package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// teamOps documents the team, invitation and share routes (docs/teams.md).
var teamOps = []apiOp{
	{Method: "POST", Path: "/teams", Summary: "Create a team; you are its owner", Request: createTeamRequest{}, Response: teams.Team{},
		Example: createTeamRequest{Name: "Platform"}},
	{Method: "GET", Path: "/teams", Summary: "Your teams, each with your role (owner, member, viewer)", Response: listTeamsResponse{}},
	{Method: "GET", Path: "/teams/{team}", Summary: "A team of yours with its members", Response: teamView{}},
	{Method: "DELETE", Path: "/teams/{team}", Summary: "Delete the team (its owners, admins) with its memberships, invitations, shares to it, budget and secrets; 409 while it still owns sandboxes that are not terminated or volumes. Its terminated sandboxes keep their history", Errors: []int{403, 409}},
	{Method: "GET", Path: "/teams/{team}/members", Summary: "The team's members and their roles", Response: listMembersResponse{}},
	{Method: "POST", Path: "/teams/{team}/members", Summary: "Add a user (by email) to the team, or change their role (owners)", Request: putMemberRequest{}, Response: teams.Member{}, Errors: []int{403, 409},
		Example: putMemberRequest{Email: "bob@example.com", Role: teams.RoleMember}},
	{Method: "PUT", Path: "/teams/{team}/members/{user}", Summary: "Change a member's role (owners); a team keeps at least one owner (409). Lowering a role ends the member's open streams that need more", Request: setRoleRequest{}, Response: teams.Member{}, Errors: []int{403, 409}},
	{Method: "DELETE", Path: "/teams/{team}/members/{user}", Summary: "Remove a member (owners), or leave (yourself); the member's open streams on the team's sandboxes end at once", Errors: []int{403, 409}},
	{Method: "POST", Path: "/teams/{team}/invitations", Summary: "Invite an email address (owners): the answer holds a one-time token, shown only here, and accept_url; it expires after expires_in_s (default 7 days)", Request: inviteRequest{}, Response: invitationCreated{}, Errors: []int{403},
		Example: inviteRequest{Email: "carol@example.com", Role: teams.RoleViewer}},
	{Method: "GET", Path: "/teams/{team}/invitations", Summary: "The team's invitations, newest first, never their tokens (owners)", Response: listInvitationsResponse{}, Errors: []int{403}},
	{Method: "DELETE", Path: "/teams/{team}/invitations/{invitation}", Summary: "Revoke an invitation (owners)", Errors: []int{403}},
	{Method: "POST", Path: "/invitations/{token}/accept", Summary: "Join a team with an invitation's token: once, before it expires, by the user with the invited email (403 otherwise, 409 when used)", Response: teams.Member{}, Errors: []int{403, 409}},
	{Method: "GET", Path: "/sandbox/{id}/shares", Summary: "Who the sandbox is shared with", Response: listSharesResponse{}},
	{Method: "POST", Path: "/sandbox/{id}/shares", Summary: "Share the sandbox (its owner or a team owner) with a user (by email) or a team of yours as viewer (read everything, follow live) or operator (also prompt, approve, exec, terminal, write files); sharing again changes the role", Request: shareRequest{}, Response: teams.Share{}, Errors: []int{403},
		Example: shareRequest{User: "bob@example.com", Role: teams.ShareViewer}},
	{Method: "DELETE", Path: "/sandbox/{id}/shares/{share}", Summary: "Unshare: the user's (or team's) access ends at once, open event streams and terminals included", Errors: []int{403}},
}

type createTeamRequest struct {
	Name string `json:"name"`
}

type listTeamsResponse struct {
	Teams []teams.Team `json:"teams"`
}

type teamView struct {
	teams.Team
	Members []teams.Member `json:"members"`
}

type listMembersResponse struct {
	Members []teams.Member `json:"members"`
}

type putMemberRequest struct {
	Email string     `json:"email"`
	Role  teams.Role `json:"role"`
}

type setRoleRequest struct {
	Role teams.Role `json:"role"`
}

type inviteRequest struct {
	Email     string     `json:"email"`
	Role      teams.Role `json:"role,omitempty"`
	ExpiresIn int64      `json:"expires_in_s,omitempty"`
}

// invitationCreated is the only answer that holds the token.
type invitationCreated struct {
	teams.Invitation
	Token     string `json:"token"`
	AcceptURL string `json:"accept_url"`
}

type listInvitationsResponse struct {
	Invitations []teams.Invitation `json:"invitations"`
}

type shareRequest struct {
	User string          `json:"user,omitempty"`
	Team string          `json:"team,omitempty"`
	Role teams.ShareRole `json:"role"`
}

type listSharesResponse struct {
	Shares []teams.Share `json:"shares"`
}

func (s *server) mountTeams(r chi.Router) {
	r.Post("/teams", s.api(s.handleCreateTeam))
	r.Get("/teams", s.api(s.handleListTeams))
	r.Get("/teams/{team}", s.api(s.handleGetTeam))
	r.Delete("/teams/{team}", s.api(s.handleDeleteTeam))
	r.Get("/teams/{team}/members", s.api(s.handleListMembers))
	r.Post("/teams/{team}/members", s.api(s.handlePutMember))
	r.Put("/teams/{team}/members/{user}", s.api(s.handleSetRole))
	r.Delete("/teams/{team}/members/{user}", s.api(s.handleRemoveMember))
	r.Post("/teams/{team}/invitations", s.api(s.handleInvite))
	r.Get("/teams/{team}/invitations", s.api(s.handleListInvitations))
	r.Delete("/teams/{team}/invitations/{invitation}", s.api(s.handleRevokeInvitation))
	r.Post("/invitations/{token}/accept", s.api(s.handleAcceptInvitation))
	r.Get("/sandbox/{id}/shares", s.api(s.handleListShares))
	r.Post("/sandbox/{id}/shares", s.api(s.handleShare))
	r.Delete("/sandbox/{id}/shares/{share}", s.api(s.handleUnshare))
}

// storeUsers finds users by email for teams.Service.
type storeUsers struct{ db *store.DB }

func (u storeUsers) UserIDByEmail(ctx context.Context, email string) (string, error) {
	usr, _, err := u.db.UserByEmail(ctx, auth.NormalizeEmail(email))
	return usr.ID, err
}

func (s *server) teamService() (*teams.Service, error) {
	if s.teams == nil {
		return nil, errs.E(errs.Unavailable, "teams are not configured on this server")
	}
	return s.teams, nil
}

// scopeTeam is the team a request selects with the X-Team header or
// ?team= ("" = the caller's own scope), checked: the caller must be a
// member with at least min.
func (s *server) scopeTeam(r *http.Request, min teams.Role) (string, error) {
	team := r.Header.Get("X-Team")
	if q := r.URL.Query().Get("team"); q != "" {
		if team != "" && team != q {
			return "", errs.Field("team", "X-Team and ?team= name different teams")
		}
		team = q
	}
	if team == "" {
		return "", nil
	}
	ts, err := s.teamService()
	if err != nil {
		return "", err
	}
	if _, err := ts.RequireRole(r.Context(), team, currentUser(r).ID, min); err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return "", errs.Field("team", "not a team of yours")
		}
		return "", err
	}
	return team, nil
}

func (s *server) handleCreateTeam(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	var req createTeamRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	t, err := ts.Create(r.Context(), currentUser(r).ID, req.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

func (s *server) handleListTeams(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	list, err := ts.List(r.Context(), currentUser(r).ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listTeamsResponse{Teams: list})
}

func (s *server) handleGetTeam(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	t, err := ts.Get(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"))
	if err != nil {
		return err
	}
	ms, err := ts.Members(r.Context(), currentUser(r).ID, t.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, teamView{Team: *t, Members: ms})
}

func (s *server) handleDeleteTeam(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	u := currentUser(r)
	if err := ts.Delete(r.Context(), u.ID, chi.URLParam(r, "team"), u.IsAdmin()); err != nil {
		return err
	}
	s.recheckStreams(r.Context(), "", "") // shares to the team are gone
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleListMembers(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	ms, err := ts.Members(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listMembersResponse{Members: ms})
}

func (s *server) handlePutMember(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	var req putMemberRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	team := chi.URLParam(r, "team")
	m, err := ts.PutMember(r.Context(), currentUser(r).ID, team, req.Email, req.Role)
	if err != nil {
		return err
	}
	s.recheckStreams(r.Context(), "", m.UserID) // a lowered role
	return writeJSON(w, http.StatusOK, m)
}

func (s *server) handleSetRole(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	var req setRoleRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	m, err := ts.SetRole(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"), chi.URLParam(r, "user"), req.Role)
	if err != nil {
		return err
	}
	s.recheckStreams(r.Context(), "", m.UserID)
	return writeJSON(w, http.StatusOK, m)
}

func (s *server) handleRemoveMember(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	user := chi.URLParam(r, "user")
	if err := ts.RemoveMember(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"), user); err != nil {
		return err
	}
	s.recheckStreams(r.Context(), "", user)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleInvite(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	var req inviteRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > int64(teams.MaxInvitationTTL/time.Second) {
		return errs.Field("expires_in_s", "between 1 and 2592000")
	}
	inv, tok, err := ts.Invite(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"), req.Email, req.Role, time.Duration(req.ExpiresIn)*time.Second)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, invitationCreated{Invitation: *inv, Token: tok, AcceptURL: "/invitations/" + url.PathEscape(tok) + "/accept"})
}

func (s *server) handleListInvitations(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	invs, err := ts.Invitations(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listInvitationsResponse{Invitations: invs})
}

func (s *server) handleRevokeInvitation(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	if err := ts.RevokeInvitation(r.Context(), currentUser(r).ID, chi.URLParam(r, "team"), chi.URLParam(r, "invitation")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleAcceptInvitation(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	u := currentUser(r)
	m, err := ts.Accept(r.Context(), u.ID, u.Email, chi.URLParam(r, "token"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, m)
}

func (s *server) handleListShares(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	list, err := ts.Shares(r.Context(), accessOf(r).SandboxID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listSharesResponse{Shares: list})
}

func (s *server) handleShare(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	var req shareRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	a := accessOf(r)
	sh, err := ts.CreateShare(r.Context(), currentUser(r).ID, a.SandboxID, a.OwnerID,
		teams.ShareRequest{Email: strings.TrimSpace(req.User), TeamID: req.Team, Role: req.Role})
	if err != nil {
		return err
	}
	s.recheckStreams(r.Context(), a.SandboxID, "") // sharing again may lower a role
	return writeJSON(w, http.StatusCreated, sh)
}

func (s *server) handleUnshare(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.teamService()
	if err != nil {
		return err
	}
	a := accessOf(r)
	if err := ts.DeleteShare(r.Context(), a.SandboxID, chi.URLParam(r, "share")); err != nil {
		return err
	}
	s.recheckStreams(r.Context(), a.SandboxID, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
