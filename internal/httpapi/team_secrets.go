package httpapi

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// teamSecretOps documents a team's secrets (docs/teams.md).
var teamSecretOps = []apiOp{
	{Method: "GET", Path: "/teams/{team}/secrets", Summary: "The team's secrets' names and dates, never their values (owners and members; viewers 403)", Response: []store.SecretInfo{}, Errors: []int{403}},
	{Method: "GET", Path: "/teams/{team}/secrets/{name}", Summary: "One team secret's name and dates, never its value (owners and members)", Response: store.SecretInfo{}, Errors: []int{403}},
	{Method: "PUT", Path: "/teams/{team}/secrets/{name}", Summary: "Store a team secret (owners; write-only, sealed like your own secrets)", Request: secretRequest{}, Errors: []int{403}},
	{Method: "DELETE", Path: "/teams/{team}/secrets/{name}", Summary: "Delete a team secret (owners)", Errors: []int{403}},
}

// teamSecretRef expands "team:NAME" in a create's field to the team's
// secret, "team:<team>/NAME" (what secrets.RevealRef opens): only in a
// team's scope, and never another team's.
func teamSecretRef(team, field, ref string) (string, error) {
	rest, ok := strings.CutPrefix(ref, "team:")
	if !ok {
		return ref, nil
	}
	if team == "" {
		return "", errs.Field(field, "a team secret (team:NAME) needs a team scope (X-Team)")
	}
	if t, name, qualified := strings.Cut(rest, "/"); qualified {
		if t != team {
			return "", errs.Field(field, "names another team's secret")
		}
		rest = name
	}
	return "team:" + team + "/" + rest, nil
}

func (s *server) mountTeamSecrets(r chi.Router) {
	r.Get("/teams/{team}/secrets", s.api(s.handleListTeamSecrets))
	r.Get("/teams/{team}/secrets/{name}", s.api(s.handleGetTeamSecret))
	r.Put("/teams/{team}/secrets/{name}", s.api(s.handlePutTeamSecret))
	r.Delete("/teams/{team}/secrets/{name}", s.api(s.handleDeleteTeamSecret))
}

// teamSecretScope checks the caller's team role (at least min) and returns
// the secret store and the owner key the team's secrets are stored under.
func (s *server) teamSecretScope(r *http.Request, min teams.Role) (*secrets.Store, string, error) {
	st, err := s.secretStore()
	if err != nil {
		return nil, "", err
	}
	ts, err := s.teamService()
	if err != nil {
		return nil, "", err
	}
	team := chi.URLParam(r, "team")
	if _, err := ts.RequireRole(r.Context(), team, currentUser(r).ID, min); err != nil {
		return nil, "", err
	}
	return st, secrets.TeamOwner(team), nil
}

func (s *server) handleListTeamSecrets(w http.ResponseWriter, r *http.Request) error {
	st, owner, err := s.teamSecretScope(r, teams.RoleMember)
	if err != nil {
		return err
	}
	list, err := st.List(r.Context(), owner)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, list)
}

func (s *server) handleGetTeamSecret(w http.ResponseWriter, r *http.Request) error {
	st, owner, err := s.teamSecretScope(r, teams.RoleMember)
	if err != nil {
		return err
	}
	list, err := st.List(r.Context(), owner)
	if err != nil {
		return err
	}
	name := chi.URLParam(r, "name")
	for _, si := range list {
		if si.Name == name {
			return writeJSON(w, http.StatusOK, si)
		}
	}
	return errs.E(errs.NotFound, "no team secret named %q", name)
}

func (s *server) handlePutTeamSecret(w http.ResponseWriter, r *http.Request) error {
	st, owner, err := s.teamSecretScope(r, teams.RoleOwner)
	if err != nil {
		return err
	}
	var req secretRequest
	if err := decodeJSONLimit(r, &req, secrets.MaxValue+1024); err != nil {
		return err
	}
	if err := st.Put(r.Context(), owner, chi.URLParam(r, "name"), req.Value); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleDeleteTeamSecret(w http.ResponseWriter, r *http.Request) error {
	st, owner, err := s.teamSecretScope(r, teams.RoleOwner)
	if err != nil {
		return err
	}
	if err := st.Delete(r.Context(), owner, chi.URLParam(r, "name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
