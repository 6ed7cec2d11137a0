package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/repo/forge"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Sandboxes is what the service needs of the sandbox layer
// (*sandbox.Manager implements it).
type Sandboxes interface {
	Get(ctx context.Context, ownerID, id string) (*sandbox.Sandbox, error)
	Exec(ctx context.Context, ownerID, id string, req sandbox.ExecRequest) (sandbox.ExitStatus, error)
	DriverFor(sb *sandbox.Sandbox) (sandbox.Driver, error)
}

// Deps are the service's dependencies.
type Deps struct {
	Broker    *Broker
	Sandboxes Sandboxes
	// GatewayURL returns the base URL (http://host:port) at which the
	// sandbox reaches the server's in-sandbox gateway, where the broker is
	// served under BrokerPrefix; it opens the listener on first use.
	GatewayURL func(ctx context.Context, sb *sandbox.Sandbox) (string, error)
	Logger     *slog.Logger
}

// Service clones repositories into sandboxes and runs the git operations
// of the API inside them.
type Service struct {
	d   Deps
	log *slog.Logger
}

// NewService returns a service.
func NewService(d Deps) *Service {
	s := &Service{d: d, log: d.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// brokerConfig returns the git -c settings that send a repository's
// traffic to the broker at base: the real URL stays the remote's URL,
// git connects to the broker instead, and a credential helper answers
// with a grant of the sandbox (Broker.Grant).
func (s *Service) brokerConfig(sb *sandbox.Sandbox, rm sandbox.Remote, base string) []string {
	broker := base + BrokerPrefix + rm.Host + "/"
	helper := fmt.Sprintf(`!f() { test "$1" = get && printf 'username=%%s\npassword=%%s\n' '%s' '%s'; }; f`, sb.ID, s.d.Broker.Grant(sb))
	return []string{
		"url." + broker + ".insteadOf=" + rm.Scheme + "://" + rm.Host + "/",
		"credential." + base + ".helper=",
		"credential." + base + ".helper=" + helper,
	}
}

var grantRE = regexp.MustCompile(`tbg1\.[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]+`)

// refresh keeps the clone's broker settings current: the address of the
// sandbox's gateway listener (base; a server restart opens the listener
// on a new port, and git run by the agent itself would otherwise keep
// knocking at the old one) and the grant of its credential helper (a new
// one when it is past half its life, or revoked by a rotated credential).
// The settings are only the clone's insteadOf and credential helper;
// nothing else of the config is read.
func (s *Service) refresh(ctx context.Context, sb *sandbox.Sandbox, g sandbox.GitRepo, rm sandbox.Remote, base string) error {
	orig := rm.Scheme + "://" + rm.Host + "/"
	want := "url." + base + BrokerPrefix + rm.Host + "/.insteadof"
	wantHelper := "credential." + base + ".helper"
	out, _, _, err := s.git(ctx, sb, g, nil, "config", "--local", "--get-regexp", `^(url\..*\.insteadof|credential\..*\.helper)$`)
	if err != nil {
		return err
	}
	current, fresh := false, false
	for _, line := range strings.Split(out, "\n") {
		key, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if key == wantHelper {
			if m := grantRE.FindString(val); m != "" && s.d.Broker.GrantFresh(ctx, sb, m) {
				fresh = true
			}
			continue
		}
		if val != orig || !strings.Contains(key, BrokerPrefix) {
			continue
		}
		if key == want {
			current = true
			continue
		}
		// A stale broker address: drop its rewrite and its helper.
		_, _, _, _ = s.git(ctx, sb, g, nil, "config", "--local", "--unset-all", key)
		old, _, found := strings.Cut(strings.TrimPrefix(key, "url."), BrokerPrefix)
		if found {
			_, _, _, _ = s.git(ctx, sb, g, nil, "config", "--local", "--remove-section", "credential."+old)
		}
	}
	if current && fresh {
		return nil
	}
	// Write both anew (a helper list is reset by its empty first entry).
	_, _, _, _ = s.git(ctx, sb, g, nil, "config", "--local", "--unset-all", want)
	_, _, _, _ = s.git(ctx, sb, g, nil, "config", "--local", "--remove-section", "credential."+base)
	for _, c := range s.brokerConfig(sb, rm, base) {
		k, v, _ := strings.Cut(c, "=")
		if _, stderr, code, err := s.git(ctx, sb, g, nil, "config", "--local", "--add", k, v); err != nil || code != 0 {
			if err != nil {
				return err
			}
			return errs.E(errs.Conflict, "update the broker settings in /workspace/%s: %s", g.Dir, lastLines(stderr, 1))
		}
	}
	s.log.InfoContext(ctx, "broker settings refreshed in clone", "sandbox_id", sb.ID, "repo", rm.Key(), "address_changed", !current, "new_grant", !fresh)
	return nil
}

// BeforeRun points each of the sandbox's clones at the broker's current
// address with a fresh grant (refresh) before an agent run starts, so git
// run by the agent works after a server restart or a rotated credential.
// A sandbox without repositories costs nothing.
func (s *Service) BeforeRun(ctx context.Context, sb *sandbox.Sandbox) error {
	if len(sb.Spec.Repos) == 0 {
		return nil
	}
	base, err := s.d.GatewayURL(ctx, sb)
	if err != nil {
		return err
	}
	var errsSeen []error
	for _, g := range sb.Spec.Repos {
		g = g.WithDefaults()
		rm, err := sandbox.ParseRemote(g.URL)
		if err != nil {
			continue
		}
		if err := s.refresh(ctx, sb, g, rm, base); err != nil {
			errsSeen = append(errsSeen, fmt.Errorf("%s: %w", g.Dir, err))
		}
	}
	return errors.Join(errsSeen...)
}

// AfterCreate clones the sandbox's repositories (a sandbox.Hooks step):
// the ref is checked server-side first (a clear 422 or 424), then git
// clones inside the sandbox through the broker, its progress going to the
// build log. A directory that already holds a repository (from a snapshot
// or a volume) is left as it is.
func (s *Service) AfterCreate(ctx context.Context, sb *sandbox.Sandbox) error {
	if len(sb.Spec.Repos) == 0 {
		return nil
	}
	progress := sandbox.ProgressFrom(ctx)
	drv, err := s.d.Sandboxes.DriverFor(sb)
	if err != nil {
		return err
	}
	base, err := s.d.GatewayURL(ctx, sb)
	if err != nil {
		return fmt.Errorf("open the git broker for sandbox %s: %w", sb.ID, err)
	}
	for i, g := range sb.Spec.Repos {
		g = g.WithDefaults()
		rm, err := sandbox.ParseRemote(g.URL)
		if err != nil {
			return errs.Field(fmt.Sprintf("repo[%d].url", i), err.Error())
		}
		adv, err := s.d.Broker.advertise(ctx, sb.OwnerID, g, rm)
		if err != nil {
			if errs.KindOf(err) == errs.Invalid {
				return errs.Field(fmt.Sprintf("repo[%d].url", i), publicText(err))
			}
			return err
		}
		if g.Ref != "" && adv.Refs["refs/heads/"+g.Ref] == "" && adv.Refs["refs/tags/"+g.Ref] == "" {
			return errs.Field(fmt.Sprintf("repo[%d].ref", i), fmt.Sprintf("no branch or tag %q in %s", g.Ref, rm.Key()))
		}
		dest := path.Join("/workspace", g.Dir)
		var out bytes.Buffer
		st, err := drv.Exec(ctx, sb.Ref, sandbox.ExecRequest{Argv: []string{"test", "-e", dest + "/.git"}, Stdout: &out, Stderr: &out})
		if err == nil && st.Code == 0 {
			fmt.Fprintf(progress, "repo %s: %s already holds a repository (from a snapshot or volume); not cloned\n", rm.Key(), dest)
			continue
		}
		argv := []string{"git"}
		argv = append(argv, "clone", "--progress")
		for _, c := range s.brokerConfig(sb, rm, base) {
			argv = append(argv, "--config", c)
		}
		if g.Depth > 0 {
			argv = append(argv, "--depth", strconv.Itoa(g.Depth))
		}
		if g.Ref != "" {
			argv = append(argv, "--branch", g.Ref)
		}
		argv = append(argv, "--", rm.Upstream(), dest)
		fmt.Fprintf(progress, "repo %s: cloning into %s through the credential broker\n", rm.Key(), dest)
		tail := &tailWriter{max: 4096}
		w := io.MultiWriter(progress, tail)
		st, err = drv.Exec(ctx, sb.Ref, sandbox.ExecRequest{Argv: argv, Env: gitEnv(), Stdout: w, Stderr: w})
		if err != nil {
			return fmt.Errorf("clone %s: %w", rm.Key(), err)
		}
		if st.Code != 0 {
			return errs.E(errs.Dependency, "clone %s failed (git exit %d): %s", rm.Key(), st.Code, lastLines(tail.String(), 3))
		}
		s.log.InfoContext(ctx, "repository cloned", "sandbox_id", sb.ID, "owner_id", sb.OwnerID, "repo", rm.Key())
	}
	return nil
}

func gitEnv() map[string]string {
	return map[string]string{"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
}

// repoOf returns the sandbox repository named by dir ("" = the first).
func repoOf(sb *sandbox.Sandbox, dir string) (sandbox.GitRepo, sandbox.Remote, error) {
	if len(sb.Spec.Repos) == 0 {
		return sandbox.GitRepo{}, sandbox.Remote{}, errs.E(errs.NotFound, "sandbox %s has no repositories (create it with \"repo\")", sb.ID)
	}
	for _, g := range sb.Spec.Repos {
		g = g.WithDefaults()
		if dir == "" || path.Clean(dir) == g.Dir || path.Clean(dir) == path.Join("/workspace", g.Dir) {
			rm, err := sandbox.ParseRemote(g.URL)
			if err != nil {
				return g, rm, err
			}
			return g, rm, nil
		}
	}
	return sandbox.GitRepo{}, sandbox.Remote{}, errs.Field("repo", fmt.Sprintf("no repository in directory %q", dir))
}

// git runs git in the repository's directory inside the sandbox.
func (s *Service) git(ctx context.Context, sb *sandbox.Sandbox, g sandbox.GitRepo, env map[string]string, args ...string) (string, string, int, error) {
	var out, errb limitedBuffer
	out.max, errb.max = 16<<20, 64<<10
	e := gitEnv()
	for k, v := range env {
		e[k] = v
	}
	st, err := s.d.Sandboxes.Exec(ctx, sb.OwnerID, sb.ID, sandbox.ExecRequest{
		Argv: append([]string{"git"}, args...), Env: e, Dir: path.Join("/workspace", g.Dir), Stdout: &out, Stderr: &errb,
	})
	if err != nil {
		return "", "", -1, err
	}
	return out.String(), errb.String(), st.Code, nil
}

// FileChange is one changed file of a status.
type FileChange struct {
	Path      string `json:"path"`
	OldPath   string `json:"old_path,omitempty"`
	Status    string `json:"status"` // added | modified | deleted | renamed | untracked | conflicted | type_changed
	Diff      string `json:"diff,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Status is a repository's state inside the sandbox.
type Status struct {
	Dir      string       `json:"dir"`
	URL      string       `json:"url"`
	Branch   string       `json:"branch"` // "" when detached
	Head     string       `json:"head,omitempty"`
	Upstream string       `json:"upstream,omitempty"`
	Ahead    int          `json:"ahead"`
	Behind   int          `json:"behind"`
	Clean    bool         `json:"clean"`
	Files    []FileChange `json:"files"`
}

const (
	maxFileDiff  = 256 << 10
	maxTotalDiff = 4 << 20
	maxFiles     = 1000
)

// Status reports branch, ahead/behind and the changed files with their
// diffs of the sandbox's repository in dir ("" = the first).
func (s *Service) Status(ctx context.Context, ownerID, id, dir string) (*Status, error) {
	sb, err := s.d.Sandboxes.Get(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	g, rm, err := repoOf(sb, dir)
	if err != nil {
		return nil, err
	}
	if sb.State == sandbox.Running {
		if base, err := s.d.GatewayURL(ctx, sb); err == nil {
			if err := s.refresh(ctx, sb, g, rm, base); err != nil {
				s.log.WarnContext(ctx, "refresh broker address", "sandbox_id", sb.ID, "err", err)
			}
		}
	}
	out, stderr, code, err := s.git(ctx, sb, g, nil, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all")
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, errs.E(errs.Conflict, "git status failed in /workspace/%s: %s", g.Dir, lastLines(stderr, 2))
	}
	st := parseStatus(out)
	st.Dir, st.URL = g.Dir, rm.Upstream()
	total := 0
	if st.Head != "" && len(st.Files) > 0 {
		diff, _, _, err := s.git(ctx, sb, g, nil, "-c", "core.quotepath=off", "diff", "HEAD", "--no-color", "--no-ext-diff", "--no-textconv", "--find-renames")
		if err != nil {
			return nil, err
		}
		per := splitDiff(diff)
		for i := range st.Files {
			if d, ok := per[st.Files[i].Path]; ok {
				st.Files[i].Diff, st.Files[i].Truncated = clip(d, maxFileDiff, maxTotalDiff-total)
				total += len(st.Files[i].Diff)
			}
		}
	}
	for i := range st.Files {
		f := &st.Files[i]
		if (f.Status != "untracked" && st.Head != "") || total >= maxTotalDiff || i >= 200 {
			continue
		}
		d, _, _, err := s.git(ctx, sb, g, nil, "diff", "--no-index", "--no-color", "--no-ext-diff", "--no-textconv", "--", "/dev/null", f.Path)
		if err != nil {
			return nil, err
		}
		f.Diff, f.Truncated = clip(d, maxFileDiff, maxTotalDiff-total)
		total += len(f.Diff)
	}
	return st, nil
}

func clip(s string, per, left int) (string, bool) {
	n := min(per, max(left, 0))
	if len(s) > n {
		return s[:n], true
	}
	return s, false
}

var diffHeaderRE = regexp.MustCompile(`(?m)^diff --git a/(.*) b/(.*)$`)

// splitDiff splits a combined diff by file (keyed by the new path).
func splitDiff(d string) map[string]string {
	out := map[string]string{}
	locs := diffHeaderRE.FindAllStringSubmatchIndex(d, -1)
	for i, l := range locs {
		end := len(d)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		out[d[l[4]:l[5]]] = d[l[0]:end]
	}
	return out
}

// parseStatus reads `git status --porcelain=v2 --branch -z`.
func parseStatus(out string) *Status {
	st := &Status{Files: []FileChange{}}
	recs := strings.Split(out, "\x00")
	for i := 0; i < len(recs); i++ {
		r := recs[i]
		switch {
		case strings.HasPrefix(r, "# branch.oid "):
			if v := strings.TrimPrefix(r, "# branch.oid "); v != "(initial)" {
				st.Head = v
			}
		case strings.HasPrefix(r, "# branch.head "):
			if v := strings.TrimPrefix(r, "# branch.head "); v != "(detached)" {
				st.Branch = v
			}
		case strings.HasPrefix(r, "# branch.upstream "):
			st.Upstream = strings.TrimPrefix(r, "# branch.upstream ")
		case strings.HasPrefix(r, "# branch.ab "):
			f := strings.Fields(strings.TrimPrefix(r, "# branch.ab "))
			if len(f) == 2 {
				st.Ahead, _ = strconv.Atoi(strings.TrimPrefix(f[0], "+"))
				st.Behind, _ = strconv.Atoi(strings.TrimPrefix(f[1], "-"))
			}
		case strings.HasPrefix(r, "1 "):
			f := strings.SplitN(r, " ", 9)
			if len(f) == 9 {
				st.Files = append(st.Files, FileChange{Path: f[8], Status: xyStatus(f[1])})
			}
		case strings.HasPrefix(r, "2 "):
			f := strings.SplitN(r, " ", 10)
			if len(f) == 10 {
				fc := FileChange{Path: f[9], Status: "renamed"}
				if i+1 < len(recs) {
					fc.OldPath = recs[i+1]
					i++
				}
				st.Files = append(st.Files, fc)
			}
		case strings.HasPrefix(r, "u "):
			f := strings.SplitN(r, " ", 11)
			if len(f) == 11 {
				st.Files = append(st.Files, FileChange{Path: f[10], Status: "conflicted"})
			}
		case strings.HasPrefix(r, "? "):
			st.Files = append(st.Files, FileChange{Path: r[2:], Status: "untracked"})
		}
		if len(st.Files) >= maxFiles {
			break
		}
	}
	st.Clean = len(st.Files) == 0
	return st
}

func xyStatus(xy string) string {
	for _, c := range xy {
		switch c {
		case 'A':
			return "added"
		case 'D':
			return "deleted"
		case 'T':
			return "type_changed"
		}
	}
	return "modified"
}

// CommitRequest is the body of POST .../git/commit.
type CommitRequest struct {
	Repo    string `json:"repo,omitempty"`   // the repository's dir ("" = the first)
	Message string `json:"message"`          // the commit message
	Branch  string `json:"branch,omitempty"` // switch to (or create) this branch first
	// Author is set by the server: the user (name <email>).
	AuthorName  string `json:"-"`
	AuthorEmail string `json:"-"`
}

// Commit is a created commit.
type Commit struct {
	SHA    string `json:"sha"`
	Branch string `json:"branch"`
}

var branchRE = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,200}$`)

func checkBranch(field, b string) error {
	if !branchRE.MatchString(b) || strings.Contains(b, "..") || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") ||
		strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".lock") || strings.Contains(b, "//") {
		return errs.Field(field, "not a branch name")
	}
	return nil
}

// Commit stages every change of the repository and commits it as the
// user.
func (s *Service) Commit(ctx context.Context, ownerID, id string, req CommitRequest) (*Commit, error) {
	if strings.TrimSpace(req.Message) == "" {
		return nil, errs.Field("message", "is required")
	}
	if len(req.Message) > 64<<10 {
		return nil, errs.Field("message", "longer than 64 KiB")
	}
	if req.Branch != "" {
		if err := checkBranch("branch", req.Branch); err != nil {
			return nil, err
		}
	}
	sb, err := s.d.Sandboxes.Get(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	g, _, err := repoOf(sb, req.Repo)
	if err != nil {
		return nil, err
	}
	if req.Branch != "" {
		cur, _, _, err := s.git(ctx, sb, g, nil, "symbolic-ref", "--quiet", "--short", "HEAD")
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(cur) != req.Branch {
			if _, stderr, code, err := s.git(ctx, sb, g, nil, "switch", "-C", req.Branch); err != nil || code != 0 {
				if err != nil {
					return nil, err
				}
				return nil, errs.E(errs.Conflict, "switch to %s: %s", req.Branch, lastLines(stderr, 2))
			}
		}
	}
	if _, stderr, code, err := s.git(ctx, sb, g, nil, "add", "--all"); err != nil || code != 0 {
		if err != nil {
			return nil, err
		}
		return nil, errs.E(errs.Conflict, "git add failed: %s", lastLines(stderr, 2))
	}
	name, email := req.AuthorName, req.AuthorEmail
	if email == "" {
		email = "agent@techboss.invalid"
	}
	if name == "" {
		name, _, _ = strings.Cut(email, "@")
	}
	env := map[string]string{"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
	out, stderr, code, err := s.git(ctx, sb, g, env, "commit", "--no-verify", "--no-gpg-sign", "-q", "-m", req.Message)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		if strings.Contains(out+stderr, "nothing to commit") || strings.Contains(out+stderr, "nothing added to commit") {
			return nil, errs.E(errs.Conflict, "nothing to commit in /workspace/%s", g.Dir)
		}
		return nil, errs.E(errs.Conflict, "git commit failed: %s", lastLines(out+stderr, 2))
	}
	head, _, _, err := s.git(ctx, sb, g, nil, "rev-parse", "HEAD")
	if err != nil {
		return nil, err
	}
	br, _, _, _ := s.git(ctx, sb, g, nil, "symbolic-ref", "--quiet", "--short", "HEAD")
	return &Commit{SHA: strings.TrimSpace(head), Branch: strings.TrimSpace(br)}, nil
}

// PushRequest is the body of POST .../git/push.
type PushRequestBody struct {
	Repo   string `json:"repo,omitempty"`
	Branch string `json:"branch,omitempty"` // the remote branch (default: the current branch's name)
}

// Push is a completed push.
type Push struct {
	Branch string `json:"branch"`
	SHA    string `json:"sha"`
	URL    string `json:"url"`
}

// Push pushes the current HEAD to a branch of the remote through the
// broker, which enforces the repository's policy.
func (s *Service) Push(ctx context.Context, ownerID, id string, req PushRequestBody) (*Push, error) {
	sb, err := s.d.Sandboxes.Get(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	g, rm, err := repoOf(sb, req.Repo)
	if err != nil {
		return nil, err
	}
	if g.Access == sandbox.AccessFetch {
		return nil, errs.E(errs.Forbidden, "this sandbox may only fetch %s", rm.Key())
	}
	branch := req.Branch
	if branch == "" {
		cur, _, code, err := s.git(ctx, sb, g, nil, "symbolic-ref", "--quiet", "--short", "HEAD")
		if err != nil {
			return nil, err
		}
		if code != 0 {
			return nil, errs.Field("branch", "HEAD is detached: name the branch to push")
		}
		branch = strings.TrimSpace(cur)
	}
	if err := checkBranch("branch", branch); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(branch, g.PushPrefix) {
		return nil, errs.Field("branch", fmt.Sprintf("only branches under %q may be pushed from this sandbox", g.PushPrefix))
	}
	base, err := s.d.GatewayURL(ctx, sb)
	if err != nil {
		return nil, err
	}
	if err := s.refresh(ctx, sb, g, rm, base); err != nil {
		return nil, err
	}
	args := []string{}
	for _, c := range s.brokerConfig(sb, rm, base) {
		args = append(args, "-c", c)
	}
	remote := base + BrokerPrefix + rm.Host + rm.Path + ".git"
	args = append(args, "push", "--porcelain", "--no-verify", remote, "HEAD:refs/heads/"+branch)
	out, stderr, code, err := s.git(ctx, sb, g, nil, args...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		why := lastLines(stderr, 2)
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "!") {
				why = strings.TrimSpace(strings.TrimPrefix(l, "!"))
			}
		}
		if strings.Contains(out+stderr, "refused by the credential broker") || strings.Contains(out+stderr, "may be pushed") {
			return nil, errs.E(errs.Forbidden, "push refused: %s", why)
		}
		return nil, errs.E(errs.Dependency, "push to %s failed: %s", rm.Key(), why)
	}
	head, _, _, err := s.git(ctx, sb, g, nil, "rev-parse", "HEAD")
	if err != nil {
		return nil, err
	}
	sha := strings.TrimSpace(head)
	// Keep the remote-tracking ref true for ahead/behind.
	_, _, _, _ = s.git(ctx, sb, g, nil, "update-ref", "refs/remotes/origin/"+branch, sha)
	s.log.InfoContext(ctx, "pushed", "sandbox_id", sb.ID, "owner_id", sb.OwnerID, "repo", rm.Key(), "branch", branch)
	return &Push{Branch: branch, SHA: sha, URL: rm.Upstream()}, nil
}

// PullRequestBody is the body of POST .../git/pull-request.
type PullRequestBody struct {
	Repo  string `json:"repo,omitempty"`
	Title string `json:"title"`
	Body  string `json:"body,omitempty"`
	Head  string `json:"head,omitempty"` // the pushed branch (default: the current branch)
	Base  string `json:"base,omitempty"` // default: the remote's default branch
}

// PullRequest opens a pull request (GitHub) or merge request (GitLab)
// from a pushed branch, with the repository's stored credential.
func (s *Service) PullRequest(ctx context.Context, ownerID, id string, req PullRequestBody) (*forge.PullRequest, error) {
	if strings.TrimSpace(req.Title) == "" {
		return nil, errs.Field("title", "is required")
	}
	if len(req.Title) > 1024 || len(req.Body) > 60000 {
		return nil, errs.Field("body", "title or body too long")
	}
	sb, err := s.d.Sandboxes.Get(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	g, rm, err := repoOf(sb, req.Repo)
	if err != nil {
		return nil, err
	}
	if g.Access == sandbox.AccessFetch {
		return nil, errs.E(errs.Forbidden, "this sandbox may only fetch %s", rm.Key())
	}
	if g.Credential == "" {
		return nil, errs.Field("repo", "opening a pull request needs the repository's \"credential\"")
	}
	head := req.Head
	if head == "" {
		cur, _, code, err := s.git(ctx, sb, g, nil, "symbolic-ref", "--quiet", "--short", "HEAD")
		if err != nil {
			return nil, err
		}
		if code != 0 {
			return nil, errs.Field("head", "HEAD is detached: name the pushed branch")
		}
		head = strings.TrimSpace(cur)
	}
	if err := checkBranch("head", head); err != nil {
		return nil, err
	}
	base := req.Base
	if base == "" {
		adv, err := s.d.Broker.advertise(ctx, sb.OwnerID, g, rm)
		if err != nil {
			return nil, err
		}
		base = strings.TrimPrefix(adv.Head, "refs/heads/")
		if base == "" {
			return nil, errs.Field("base", "the remote has no default branch: name the base")
		}
	} else if err := checkBranch("base", base); err != nil {
		return nil, err
	}
	_, tok, err := s.d.Broker.credential(ctx, sb.OwnerID, g, rm)
	if err != nil {
		return nil, err
	}
	pr, err := forge.Open(ctx, forge.Request{
		Kind: ForgeOf(g, rm), Host: rm.Host, APIURL: g.APIURL, Project: strings.TrimPrefix(rm.Path, "/"),
		Token: tok, Title: req.Title, Body: req.Body, Head: head, Base: base, HTTP: s.d.Broker.Client(),
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "pull request opened", "sandbox_id", sb.ID, "owner_id", sb.OwnerID, "repo", rm.Key(), "head", head, "base", base, "url", pr.URL)
	return &pr, nil
}

// Delivery is what Deliver did.
type Delivery struct {
	Branch         string `json:"branch"`
	Commit         string `json:"commit,omitempty"`
	PullRequestURL string `json:"pull_request_url,omitempty"`
	NothingChanged bool   `json:"nothing_changed,omitempty"`
}

// DeliverRequest is a run's deliver option, resolved.
type DeliverRequest struct {
	Repo        string
	Branch      string
	PullRequest bool
	Base        string // the pull request's base ("" = the remote's default branch)
	Message     string
	Title       string
	Body        string
	AuthorName  string
	AuthorEmail string
}

// Deliver commits the repository's changes on a branch, pushes it and
// optionally opens a pull request: a successful run's deliver option.
func (s *Service) Deliver(ctx context.Context, ownerID, id string, req DeliverRequest) (*Delivery, error) {
	d := &Delivery{Branch: req.Branch}
	c, err := s.Commit(ctx, ownerID, id, CommitRequest{Repo: req.Repo, Message: req.Message, Branch: req.Branch, AuthorName: req.AuthorName, AuthorEmail: req.AuthorEmail})
	if err != nil {
		if errs.KindOf(err) != errs.Conflict || !strings.Contains(err.Error(), "nothing to commit") {
			return nil, err
		}
		d.NothingChanged = true
		return d, nil
	}
	d.Commit = c.SHA
	if _, err := s.Push(ctx, ownerID, id, PushRequestBody{Repo: req.Repo, Branch: req.Branch}); err != nil {
		return d, err
	}
	if req.PullRequest {
		pr, err := s.PullRequest(ctx, ownerID, id, PullRequestBody{Repo: req.Repo, Title: req.Title, Body: req.Body, Head: req.Branch, Base: req.Base})
		if err != nil {
			return d, err
		}
		d.PullRequestURL = pr.URL
	}
	return d, nil
}

// tailWriter keeps the last max bytes written.
type tailWriter struct {
	max int
	b   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.b) }

// limitedBuffer keeps the first max bytes written and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.Len(); room > 0 {
		l.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// lastLines returns the last n non-empty lines of s (progress lines end
// in \r), joined by "; ".
func lastLines(s string, n int) string {
	s = strings.ReplaceAll(s, "\r", "\n")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	j := strings.Join(out, "; ")
	if len(j) > 600 {
		j = j[len(j)-600:]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, j)
}
