// Package forge opens pull requests (merge requests) on GitHub and GitLab
// through their official Go clients.
package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v75/github"
	gitlab "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/techbossai/techboss/internal/errs"
)

// Request is one pull request to open.
type Request struct {
	Kind    string // "github" or "gitlab"
	Host    string // the git host, e.g. github.com
	APIURL  string // the API base; "" derives it from Host
	Project string // "owner/repo" (GitLab: the full namespace path)
	Token   string
	Title   string
	Body    string
	Head    string // the branch with the changes
	Base    string // the branch to merge into
	HTTP    *http.Client
}

// PullRequest is an opened pull (merge) request.
type PullRequest struct {
	URL    string `json:"url"`
	Number int    `json:"number"`
}

// Open opens the pull request. Errors the forge answered are public
// (errs.Dependency, or errs.Conflict when one already exists).
func Open(ctx context.Context, r Request) (PullRequest, error) {
	if r.Token == "" {
		return PullRequest{}, errs.E(errs.Invalid, "opening a pull request needs the repository's credential")
	}
	switch r.Kind {
	case "gitlab":
		return openGitLab(ctx, r)
	default:
		return openGitHub(ctx, r)
	}
}

func openGitHub(ctx context.Context, r Request) (PullRequest, error) {
	owner, name, ok := strings.Cut(r.Project, "/")
	if !ok || strings.Contains(name, "/") {
		return PullRequest{}, errs.E(errs.Invalid, "%s is not an owner/repo path", r.Project)
	}
	c, err := githubClient(r.HTTP, r.Host, r.APIURL, r.Token)
	if err != nil {
		return PullRequest{}, err
	}
	pr, resp, err := c.PullRequests.Create(ctx, owner, name, &github.NewPullRequest{
		Title: github.Ptr(r.Title), Body: github.Ptr(r.Body), Head: github.Ptr(r.Head), Base: github.Ptr(r.Base),
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return PullRequest{}, forgeError("GitHub", status, err)
	}
	return PullRequest{URL: pr.GetHTMLURL(), Number: pr.GetNumber()}, nil
}

// githubClient is go-github for host (its API at apiURL, "" derives it)
// sending token as the bearer.
func githubClient(hc *http.Client, host, apiURL, token string) (*github.Client, error) {
	c := github.NewClient(hc).WithAuthToken(token)
	api := apiURL
	if api == "" && host != "github.com" {
		api = "https://" + host + "/api/v3/"
	}
	if api != "" {
		var err error
		if c, err = c.WithEnterpriseURLs(api, api); err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "api_url is not a URL")
		}
		if !strings.HasSuffix(api, "/api/v3/") && !strings.HasSuffix(api, "/api/v3") {
			// WithEnterpriseURLs appends /api/v3/ to a bare host; an
			// explicit api_url is taken as given.
			u := strings.TrimSuffix(api, "/") + "/"
			c.BaseURL, _ = c.BaseURL.Parse(u)
		}
	}
	return c, nil
}

// InstallationRequest asks GitHub for a GitHub App installation token.
type InstallationRequest struct {
	Host           string // the git host, e.g. github.com
	APIURL         string // the API base; "" derives it from Host
	JWT            string // the App's JSON Web Token (RS256, signed with its private key)
	InstallationID int64
	Repository     string // the one repository (its name, without the owner) the token may reach
	ReadOnly       bool   // ask for contents: read only
	HTTP           *http.Client
}

// InstallationToken mints an installation token restricted to the
// request's repository: POST /app/installations/{id}/access_tokens with
// the App's JWT. Errors GitHub answered are public (errs.Dependency).
func InstallationToken(ctx context.Context, r InstallationRequest) (string, time.Time, error) {
	c, err := githubClient(r.HTTP, r.Host, r.APIURL, r.JWT)
	if err != nil {
		return "", time.Time{}, err
	}
	opts := &github.InstallationTokenOptions{Repositories: []string{r.Repository}}
	if r.ReadOnly {
		opts.Permissions = &github.InstallationPermissions{Contents: github.Ptr("read")}
	}
	tok, resp, err := c.Apps.CreateInstallationToken(ctx, r.InstallationID, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		msg := fmt.Sprintf("HTTP %d", status)
		var ge *github.ErrorResponse
		if errors.As(err, &ge) && ge.Message != "" {
			msg = ge.Message
		}
		if status == 0 {
			return "", time.Time{}, errs.Wrap(errs.Dependency, err, "GitHub is unreachable for the App's installation token")
		}
		return "", time.Time{}, errs.Wrap(errs.Dependency, err, fmt.Sprintf("GitHub refused the App's installation token for installation %d: %s", r.InstallationID, msg))
	}
	if tok.GetToken() == "" {
		return "", time.Time{}, errs.E(errs.Dependency, "GitHub answered no installation token")
	}
	return tok.GetToken(), tok.GetExpiresAt().Time, nil
}

func (r Request) gitlabBase() string {
	if r.APIURL != "" {
		return r.APIURL
	}
	return "https://" + r.Host
}

func openGitLab(ctx context.Context, r Request) (PullRequest, error) {
	c, err := gitlab.NewClient(r.Token, gitlab.WithBaseURL(r.gitlabBase()), gitlab.WithHTTPClient(r.HTTP))
	if err != nil {
		return PullRequest{}, errs.Wrap(errs.Invalid, err, "api_url is not a GitLab URL")
	}
	mr, resp, err := c.MergeRequests.CreateMergeRequest(r.Project, &gitlab.CreateMergeRequestOptions{
		Title: gitlab.Ptr(r.Title), Description: gitlab.Ptr(r.Body),
		SourceBranch: gitlab.Ptr(r.Head), TargetBranch: gitlab.Ptr(r.Base),
	}, gitlab.WithContext(ctx))
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	if err != nil {
		return PullRequest{}, forgeError("GitLab", status, err)
	}
	return PullRequest{URL: mr.WebURL, Number: int(mr.IID)}, nil
}

// forgeError makes a forge's answer public without echoing request
// details (the clients' errors name the URL, never the token).
func forgeError(name string, status int, err error) error {
	var ge *github.ErrorResponse
	msg := ""
	if errors.As(err, &ge) {
		msg = ge.Message
		for _, e := range ge.Errors {
			if e.Message != "" {
				msg += ": " + e.Message
			}
		}
	}
	if msg == "" {
		msg = fmt.Sprintf("HTTP %d", status)
	}
	switch status {
	case http.StatusUnprocessableEntity:
		if strings.Contains(strings.ToLower(msg), "already exists") {
			return errs.Wrap(errs.Conflict, err, name+": "+msg)
		}
		return errs.Wrap(errs.Invalid, err, name+" refused the pull request: "+msg)
	case http.StatusConflict:
		return errs.Wrap(errs.Conflict, err, name+": "+msg)
	case 0:
		return errs.Wrap(errs.Dependency, err, name+" is unreachable")
	}
	return errs.Wrap(errs.Dependency, err, name+" refused the pull request: "+msg)
}
