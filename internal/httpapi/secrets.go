package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store"
)

// secretOps documents the secret store's routes.
var secretOps = []apiOp{
	{Method: "GET", Path: "/secrets", Summary: "Your secrets' names and dates (never their values)", Response: []store.SecretInfo{}},
	{Method: "PUT", Path: "/secrets/{name}", Summary: "Store a secret (write-only: no route returns a value). Runs use it by name: \"${secret:NAME}\" in an MCP server's env or headers. Sealed with AES-256-GCM under TECHBOSS_SECRET_KEY before it is stored", Request: secretRequest{}},
	{Method: "DELETE", Path: "/secrets/{name}", Summary: "Delete a secret"},
}

type secretRequest struct {
	Value string `json:"value"`
}

func (s *server) mountSecrets(r chi.Router) {
	r.Get("/secrets", s.api(s.handleListSecrets))
	r.Put("/secrets/{name}", s.api(s.handlePutSecret))
	r.Delete("/secrets/{name}", s.api(s.handleDeleteSecret))
}

func (s *server) secretStore() (*secrets.Store, error) {
	if s.deps.Secrets == nil {
		return nil, errs.E(errs.Unavailable, "the secret store is not configured on this server")
	}
	return s.deps.Secrets, nil
}

func (s *server) handleListSecrets(w http.ResponseWriter, r *http.Request) error {
	st, err := s.secretStore()
	if err != nil {
		return err
	}
	list, err := st.List(r.Context(), currentUser(r).ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, list)
}

func (s *server) handlePutSecret(w http.ResponseWriter, r *http.Request) error {
	st, err := s.secretStore()
	if err != nil {
		return err
	}
	var req secretRequest
	if err := decodeJSONLimit(r, &req, secrets.MaxValue+1024); err != nil {
		return err
	}
	if err := st.Put(r.Context(), currentUser(r).ID, chi.URLParam(r, "name"), req.Value); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleDeleteSecret(w http.ResponseWriter, r *http.Request) error {
	st, err := s.secretStore()
	if err != nil {
		return err
	}
	if err := st.Delete(r.Context(), currentUser(r).ID, chi.URLParam(r, "name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
