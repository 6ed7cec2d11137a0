package client

import (
	"context"
	"net/url"
)

// GitRepo is one repository cloned into a sandbox at create, through the
// server's credential broker (the token stays in the server's secret
// store; Credential names it).
type GitRepo struct {
	URL        string `json:"url"`
	Ref        string `json:"ref,omitempty"`
	Depth      int    `json:"depth,omitempty"`
	Credential string `json:"credential,omitempty"`
	Dir        string `json:"dir,omitempty"`
	Access     string `json:"access,omitempty"`      // "push" (default) or "fetch"
	PushPrefix string `json:"push_prefix,omitempty"` // default "agent/"
	Forge      string `json:"forge,omitempty"`       // "github" or "gitlab"
	APIURL     string `json:"api_url,omitempty"`
}

// GitFileChange is one changed file of a GitStatus.
type GitFileChange struct {
	Path      string `json:"path"`
	OldPath   string `json:"old_path,omitempty"`
	Status    string `json:"status"`
	Diff      string `json:"diff,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// GitStatus is a repository's state inside a sandbox.
type GitStatus struct {
	Dir      string          `json:"dir"`
	URL      string          `json:"url"`
	Branch   string          `json:"branch"`
	Head     string          `json:"head,omitempty"`
	Upstream string          `json:"upstream,omitempty"`
	Ahead    int             `json:"ahead"`
	Behind   int             `json:"behind"`
	Clean    bool            `json:"clean"`
	Files    []GitFileChange `json:"files"`
}

// GitCommit is a created commit.
type GitCommit struct {
	SHA    string `json:"sha"`
	Branch string `json:"branch"`
}

// GitPush is a completed push.
type GitPush struct {
	Branch string `json:"branch"`
	SHA    string `json:"sha"`
	URL    string `json:"url"`
}

// PullRequest is an opened pull (merge) request.
type PullRequest struct {
	URL    string `json:"url"`
	Number int    `json:"number"`
}

// PullRequestRequest is the body of POST /sandbox/{id}/git/pull-request.
type PullRequestRequest struct {
	Repo  string `json:"repo,omitempty"`
	Title string `json:"title"`
	Body  string `json:"body,omitempty"`
	Head  string `json:"head,omitempty"`
	Base  string `json:"base,omitempty"`
}

// GitStatus returns the status of the sandbox's repository in dir ("" =
// its first repository).
func (c *Client) GitStatus(ctx context.Context, id, dir string) (*GitStatus, error) {
	p := "/sandbox/" + url.PathEscape(id) + "/git/status"
	if dir != "" {
		p += "?repo=" + url.QueryEscape(dir)
	}
	var st GitStatus
	return &st, c.Do(ctx, "GET", p, nil, &st)
}

// GitCommit stages every change and commits it (on branch, when given).
func (c *Client) GitCommit(ctx context.Context, id, dir, message, branch string) (*GitCommit, error) {
	var out GitCommit
	in := map[string]string{"message": message}
	if dir != "" {
		in["repo"] = dir
	}
	if branch != "" {
		in["branch"] = branch
	}
	return &out, c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(id)+"/git/commit", in, &out)
}

// GitPush pushes HEAD to branch ("" = the current branch's name).
func (c *Client) GitPush(ctx context.Context, id, dir, branch string) (*GitPush, error) {
	var out GitPush
	in := map[string]string{}
	if dir != "" {
		in["repo"] = dir
	}
	if branch != "" {
		in["branch"] = branch
	}
	return &out, c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(id)+"/git/push", in, &out)
}

// OpenPullRequest opens a pull request from a pushed branch.
func (c *Client) OpenPullRequest(ctx context.Context, id string, req PullRequestRequest) (*PullRequest, error) {
	var out PullRequest
	return &out, c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(id)+"/git/pull-request", req, &out)
}
