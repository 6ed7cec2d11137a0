package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/repo"
	"github.com/techbossai/techboss/internal/repo/forge"
)

// gitOps documents the git routes of sandboxes' repositories.
var gitOps = []apiOp{
	{Method: "GET", Path: "/sandbox/{id}/git/status", Summary: "A repository's branch, ahead/behind and changed files with their diffs (?repo=<dir> picks one of several; git runs inside the sandbox)", Response: repo.Status{}, Errors: []int{409, 422}},
	{Method: "POST", Path: "/sandbox/{id}/git/commit", Summary: "Stage every change and commit it as you (optionally on a new branch)", Request: repo.CommitRequest{}, Response: repo.Commit{}, Errors: []int{409}},
	{Method: "POST", Path: "/sandbox/{id}/git/push", Summary: "Push HEAD to a branch through the credential broker (only branches under the repository's push_prefix; never the default branch)", Request: repo.PushRequestBody{}, Response: repo.Push{}, Errors: []int{403, 424}},
	{Method: "POST", Path: "/sandbox/{id}/git/pull-request", Summary: "Open a pull request (GitHub) or merge request (GitLab) from a pushed branch with the repository's stored credential", Request: repo.PullRequestBody{}, Response: forge.PullRequest{}, Errors: []int{403, 409, 424}},
}

// gitBrokerOps are the credential broker's routes on the API listener,
// for sandboxes that reach the server by its public URL (drivers without
// an in-sandbox listener). They authenticate with the sandbox-scoped
// token git's credential helper presents, not a user's.
var gitBrokerOps = []apiOp{
	{Method: "GET", Path: "/git/*", Summary: "Git credential broker: smart-HTTP ref advertisement (info/refs) of a sandbox's repository; Basic auth with the sandbox ID and its grant (401 expired, 403 revoked)", Public: true, Errors: []int{401, 403, 502}},
	{Method: "POST", Path: "/git/*", Summary: "Git credential broker: git-upload-pack and git-receive-pack (pushes are checked ref by ref: never the default branch, only the repository's push_prefix)", Public: true, Errors: []int{401, 403, 502}},
}

// mountGitBroker mounts the broker outside session auth: it checks
// sandbox tokens itself.
func (s *server) mountGitBroker(r chi.Router) {
	if s.deps.GitBroker == nil {
		h := s.api(func(w http.ResponseWriter, r *http.Request) error {
			return errs.E(errs.Unavailable, "repositories are not configured on this server")
		})
		r.Get("/git/*", h)
		r.Post("/git/*", h)
		return
	}
	r.Get("/git/*", s.deps.GitBroker.ServeHTTP)
	r.Post("/git/*", s.deps.GitBroker.ServeHTTP)
}

func (s *server) mountGit(r chi.Router) {
	r.Get("/sandbox/{id}/git/status", s.api(s.handleGitStatus))
	r.Post("/sandbox/{id}/git/commit", s.api(s.handleGitCommit))
	r.Post("/sandbox/{id}/git/push", s.api(s.handleGitPush))
	r.Post("/sandbox/{id}/git/pull-request", s.api(s.handleGitPullRequest))
}

func (s *server) repos() (*repo.Service, error) {
	if s.deps.Repos == nil {
		return nil, errs.E(errs.Unavailable, "repositories are not configured on this server")
	}
	return s.deps.Repos, nil
}

func (s *server) handleGitStatus(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.repos()
	if err != nil {
		return err
	}
	st, err := rs.Status(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), r.URL.Query().Get("repo"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

func (s *server) handleGitCommit(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.repos()
	if err != nil {
		return err
	}
	var req repo.CommitRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u := currentUser(r)
	req.AuthorEmail = u.Email
	c, err := rs.Commit(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, c)
}

func (s *server) handleGitPush(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.repos()
	if err != nil {
		return err
	}
	var req repo.PushRequestBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, err := rs.Push(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

func (s *server) handleGitPullRequest(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.repos()
	if err != nil {
		return err
	}
	var req repo.PullRequestBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	pr, err := rs.PullRequest(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, pr)
}
