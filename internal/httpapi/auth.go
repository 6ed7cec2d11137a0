package httpapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
)

// authOps documents the auth routes.
var authOps = []apiOp{
	{Method: "POST", Path: "/auth/login", Summary: "Log in with email and password; sets the session cookie. Repeated failures from one address get 429 with Retry-After (seconds, doubling per failure)", Request: loginRequest{}, Response: auth.User{}, Public: true, Errors: []int{401, 429}},
	{Method: "POST", Path: "/auth/logout", Summary: "End the current session and clear the cookie", Public: true},
	{Method: "GET", Path: "/auth/me", Summary: "The authenticated user", Response: auth.User{}},
	{Method: "GET", Path: "/auth/tokens", Summary: "List your API tokens", Response: []auth.Token{}},
	{Method: "POST", Path: "/auth/tokens", Summary: "Create an API token; the token is shown only in this response", Request: createTokenRequest{}, Response: createTokenResponse{}},
	{Method: "DELETE", Path: "/auth/tokens/{id}", Summary: "Revoke one of your API tokens", Response: auth.Token{}},
	{Method: "GET", Path: "/auth/users/{id}", Summary: "A user (admins, or yourself)", Response: auth.User{}},
	{Method: "POST", Errors: []int{409}, Path: "/auth/users", Summary: "Create a user (admins only)", Request: createUserRequest{}, Response: auth.User{}},
}

type loginRequest struct {
	Email    string      `json:"email"`
	Password auth.Secret `json:"password"`
}

type createTokenRequest struct {
	Name string `json:"name"`
}

type createTokenResponse struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"created_at"`
}

type createUserRequest struct {
	Email    string      `json:"email"`
	Password auth.Secret `json:"password"`
	Role     auth.Role   `json:"role,omitempty"`
}

func (s *server) mountAuthPublic(r chi.Router) {
	r.With(s.audit).Post("/auth/login", s.api(s.handleLogin))
	r.With(s.audit).Post("/auth/logout", s.api(s.handleLogout))
}

func (s *server) mountAuth(r chi.Router) {
	r.Get("/auth/me", s.api(s.handleMe))
	r.Get("/auth/tokens", s.api(s.handleListTokens))
	r.Post("/auth/tokens", s.api(s.handleCreateToken))
	r.Delete("/auth/tokens/{id}", s.api(s.handleRevokeToken))
	r.Get("/auth/users/{id}", s.api(s.handleGetUser))
	r.With(s.requireAdmin).Post("/auth/users", s.api(s.handleCreateUser))
}

func (s *server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	// A login from a foreign site would plant the attacker's session (login CSRF).
	if err := s.checkOrigin(r); err != nil {
		return err
	}
	var req loginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	noteAuditUser(r, "", req.Email)
	res, err := s.deps.Auth.Login(r.Context(), req.Email, req.Password, s.clientIP(r))
	s.metrics.logins.WithLabelValues(loginResult(err)).Inc()
	if err != nil {
		// The audit log names the account a refused login tried, if any.
		if u, uerr := s.deps.Auth.UserByEmail(r.Context(), req.Email); uerr == nil {
			noteAuditUser(r, u.ID, u.Email)
		}
		return err
	}
	noteAuditUser(r, res.User.ID, res.User.Email)
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    res.SessionToken.Reveal(),
		Path:     "/",
		Expires:  res.ExpiresAt,
		MaxAge:   int(res.ExpiresAt.Sub(s.now()).Seconds()),
		HttpOnly: true,
		Secure:   s.deps.SecureCookies || r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	})
	return writeJSON(w, http.StatusOK, res.User)
}

func (s *server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkOrigin(r); err != nil {
		return err
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := s.deps.Auth.Logout(r.Context(), c.Value); err != nil {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.deps.SecureCookies || r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleMe(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, currentUser(r))
}

func (s *server) handleListTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.deps.Auth.ListTokens(r.Context(), currentUser(r).ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ts)
}

func (s *server) handleCreateToken(w http.ResponseWriter, r *http.Request) error {
	var req createTokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	t, sec, err := s.deps.Auth.CreateToken(r.Context(), currentUser(r).ID, req.Name)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, createTokenResponse{ID: t.ID, Name: t.Name, Token: sec.Reveal(), CreatedAt: t.CreatedAt})
}

func (s *server) handleRevokeToken(w http.ResponseWriter, r *http.Request) error {
	u := currentUser(r)
	id := chi.URLParam(r, "id")
	if err := s.deps.Auth.RevokeToken(r.Context(), u.ID, id); err != nil {
		return err
	}
	ts, err := s.deps.Auth.ListTokens(r.Context(), u.ID)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.ID == id {
			return writeJSON(w, http.StatusOK, t)
		}
	}
	return errs.E(errs.NotFound, "token not found")
}

func (s *server) handleGetUser(w http.ResponseWriter, r *http.Request) error {
	me, id := currentUser(r), chi.URLParam(r, "id")
	if me.ID == id {
		return writeJSON(w, http.StatusOK, me)
	}
	if !me.IsAdmin() {
		return errs.E(errs.NotFound, "user not found")
	}
	u, err := s.deps.Store.UserByID(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, u)
}

func (s *server) handleCreateUser(w http.ResponseWriter, r *http.Request) error {
	var req createUserRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, err := s.deps.Auth.CreateUser(r.Context(), req.Email, req.Password, req.Role)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, u)
}

// loginResult is the metric label for a login outcome.
func loginResult(err error) string {
	switch errs.KindOf(err) {
	case errs.Internal:
		if err == nil {
			return "ok"
		}
		return "error"
	case errs.Unauthenticated:
		return "rejected"
	case errs.TooMany:
		return "throttled"
	case errs.Invalid, errs.Malformed:
		return "invalid"
	}
	return "error"
}
