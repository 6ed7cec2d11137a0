package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/techbossai/techboss/internal/errs"
)

// Repository access modes (GitRepo.Access).
const (
	AccessPush  = "push"  // fetch, and push branches under PushPrefix (the default)
	AccessFetch = "fetch" // fetch only
)

// DefaultPushPrefix is the branch prefix a sandbox may push to by default.
const DefaultPushPrefix = "agent/"

// MaxRepos bounds the repositories of one sandbox.
const MaxRepos = 16

// GitRepo is one repository cloned into the sandbox at create. Git inside
// the sandbox reaches it only through the server's credential broker: the
// stored credential (a secret's name) never enters the sandbox.
type GitRepo struct {
	// URL is https://host/owner/repo(.git), http:// (a server the operator
	// allows), ssh://git@host/owner/repo or git@host:owner/repo; the broker
	// talks SSH to the host with an SSH key credential, HTTPS otherwise.
	URL string `json:"url"`
	// Ref is the branch or tag to check out (default: the remote's HEAD).
	Ref string `json:"ref,omitempty"`
	// Depth makes a shallow clone of that many commits (0: full history).
	Depth int `json:"depth,omitempty"`
	// Credential names the owner's stored secret holding the token (a
	// GitHub or GitLab personal access token, or "user:token"), a GitHub
	// App's {"app_id", "installation_id", "private_key"} or an SSH key's
	// {"ssh_private_key", "known_hosts"}. "team:<team id>/<name>" names a
	// team's secret (secrets.RevealRef; the API expands "team:NAME" in a
	// team-scoped create).
	Credential string `json:"credential,omitempty"`
	// Dir is the directory under /workspace (default: the repository's name).
	Dir string `json:"dir,omitempty"`
	// Access is "push" (default) or "fetch".
	Access string `json:"access,omitempty"`
	// PushPrefix is the only branch prefix pushes may name (default
	// "agent/"); the remote's default branch is refused whatever it is.
	PushPrefix string `json:"push_prefix,omitempty"`
	// Forge is "github" or "gitlab" for pull requests (default: guessed
	// from the host: github.com, gitlab.com or a host named gitlab.*).
	Forge string `json:"forge,omitempty"`
	// APIURL is the forge's API base for self-hosted forges (e.g.
	// https://ghe.example.com/api/v3 or https://gitlab.example.com).
	APIURL string `json:"api_url,omitempty"`
}

// RepoList is the spec's "repo" field: one object or a list of them.
type RepoList []GitRepo

// UnmarshalJSON reads a single object or an array.
func (l *RepoList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*l = nil
		return nil
	}
	dec := func(b []byte, v any) error {
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	if len(b) > 0 && b[0] == '{' {
		var r GitRepo
		if err := dec(b, &r); err != nil {
			return errs.Field("repo", "must be {\"url\": ...} or a list of them: "+err.Error())
		}
		*l = RepoList{r}
		return nil
	}
	var rs []GitRepo
	if err := dec(b, &rs); err != nil {
		return errs.Field("repo", "must be {\"url\": ...} or a list of them: "+err.Error())
	}
	*l = rs
	return nil
}

// JSONSchema is the OpenAPI schema of the field.
func (RepoList) JSONSchema() map[string]any {
	obj := map[string]any{
		"type": "object", "required": []any{"url"}, "additionalProperties": false,
		"properties": map[string]any{
			"url":         map[string]any{"type": "string", "description": "https://host/owner/repo, ssh://git@host/owner/repo or git@host:owner/repo"},
			"ref":         map[string]any{"type": "string", "description": "branch or tag (default: the remote's HEAD)"},
			"depth":       map[string]any{"type": "integer", "minimum": 0},
			"credential":  map[string]any{"type": "string", "description": "name of a stored secret holding the credential (a token, a GitHub App's {app_id, installation_id, private_key} or an SSH key's {ssh_private_key, known_hosts}); it never enters the sandbox"},
			"dir":         map[string]any{"type": "string", "description": "directory under /workspace (default: the repository's name)"},
			"access":      map[string]any{"type": "string", "enum": []any{AccessPush, AccessFetch}},
			"push_prefix": map[string]any{"type": "string", "description": "the only branch prefix pushes may name (default agent/); the default branch is always refused"},
			"forge":       map[string]any{"type": "string", "enum": []any{"github", "gitlab"}},
			"api_url":     map[string]any{"type": "string"},
		},
	}
	return map[string]any{
		"oneOf":       []any{obj, map[string]any{"type": "array", "maxItems": MaxRepos, "items": obj}},
		"description": "repositories cloned into /workspace at create, through the server's git credential broker",
	}
}

var (
	scpLikeRE  = regexp.MustCompile(`^([A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+):([A-Za-z0-9._/~-]+)$`)
	repoPathRE = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+/?$`)
	refRE      = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,200}$`)
	dirRE      = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)
)

// Remote is a repository URL split into the parts the broker uses.
type Remote struct {
	Scheme string // "https" or "http": how the broker reaches the host
	Host   string // host[:port]
	Path   string // "/owner/repo" (no ".git", no trailing slash)
	// SSH is where the broker reaches the repository over SSH, with an
	// SSH key credential: the URL's user, host:port and path for an SSH
	// URL, git@host:22 and the path for an HTTP(S) one.
	SSHUser, SSHAddr, SSHPath string
}

// Upstream is the URL the broker talks to (scheme://host/path.git).
func (r Remote) Upstream() string { return r.Scheme + "://" + r.Host + r.Path + ".git" }

// Key is host + path, the broker's name for the repository.
func (r Remote) Key() string { return r.Host + r.Path }

// Name is the repository's last path element.
func (r Remote) Name() string { return path.Base(r.Path) }

// ParseRemote parses a repository URL; SSH forms map to HTTPS on the same
// host (the broker fetches and pushes over HTTPS with a token) and keep
// their SSH address (for an SSH key credential).
func ParseRemote(raw string) (Remote, error) {
	if len(raw) > 2048 || strings.ContainsAny(raw, " \t\r\n\x00") {
		return Remote{}, fmt.Errorf("not a repository URL")
	}
	var r Remote
	if m := scpLikeRE.FindStringSubmatch(raw); m != nil && !strings.Contains(raw, "://") {
		r = Remote{Scheme: "https", Host: m[2], Path: "/" + strings.TrimPrefix(m[3], "/"),
			SSHUser: strings.TrimSuffix(m[1], "@"), SSHAddr: net.JoinHostPort(m[2], "22"), SSHPath: m[3]}
	} else {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return Remote{}, fmt.Errorf("not a repository URL (https://host/owner/repo or git@host:owner/repo)")
		}
		switch u.Scheme {
		case "https", "http":
			if u.User != nil {
				return Remote{}, fmt.Errorf("must not carry credentials: store the token as a secret and name it in \"credential\"")
			}
			r.Scheme = u.Scheme
		case "ssh":
			r.Scheme = "https"
		default:
			return Remote{}, fmt.Errorf("scheme must be https, http or ssh")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return Remote{}, fmt.Errorf("must not have a query or fragment")
		}
		r.Host, r.Path = u.Host, u.Path
		if u.Scheme == "ssh" {
			r.Host = u.Hostname() // the SSH port says nothing about HTTPS
			port := u.Port()
			if port == "" {
				port = "22"
			}
			r.SSHAddr, r.SSHPath = net.JoinHostPort(r.Host, port), u.Path
			if u.User != nil {
				r.SSHUser = u.User.Username()
			}
		}
	}
	r.Host = strings.ToLower(r.Host)
	if r.Host == "" || strings.HasPrefix(r.Host, "-") || strings.HasPrefix(r.Host, ".") {
		return Remote{}, fmt.Errorf("not a host name")
	}
	r.Path = strings.TrimSuffix(strings.TrimSuffix(r.Path, "/"), ".git")
	if r.SSHAddr == "" {
		h := r.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		r.SSHAddr, r.SSHPath = net.JoinHostPort(h, "22"), r.Path+".git"
	}
	if r.SSHUser == "" {
		r.SSHUser = "git"
	}
	r.SSHAddr = strings.ToLower(r.SSHAddr)
	if !repoPathRE.MatchString(r.Path) || strings.Contains(r.Path, "/.") || strings.Count(r.Path, "/") < 1 || r.Path == "/" {
		return Remote{}, fmt.Errorf("needs a repository path (host/owner/repo)")
	}
	return r, nil
}

// DirName returns the repository's directory under /workspace.
func (g GitRepo) DirName() string {
	if g.Dir != "" {
		return path.Clean(g.Dir)
	}
	r, err := ParseRemote(g.URL)
	if err != nil {
		return ""
	}
	return r.Name()
}

// validateRepos returns the field problems of a spec's repositories.
func validateRepos(rs RepoList) []errs.FieldError {
	var fs []errs.FieldError
	bad := func(i int, field, format string, args ...any) {
		fs = append(fs, errs.FieldError{Field: fmt.Sprintf("repo[%d].%s", i, field), Reason: fmt.Sprintf(format, args...)})
	}
	if len(rs) > MaxRepos {
		return []errs.FieldError{{Field: "repo", Reason: fmt.Sprintf("more than %d repositories", MaxRepos)}}
	}
	dirs := map[string]bool{}
	for i, g := range rs {
		if g.URL == "" {
			bad(i, "url", "is required")
		} else if _, err := ParseRemote(g.URL); err != nil {
			bad(i, "url", "%s", err)
		}
		if g.Ref != "" && (!refRE.MatchString(g.Ref) || strings.Contains(g.Ref, "..") || strings.HasPrefix(g.Ref, "-") || strings.HasSuffix(g.Ref, ".lock") || strings.HasSuffix(g.Ref, "/")) {
			bad(i, "ref", "not a branch or tag name")
		}
		if g.Depth < 0 || g.Depth > 1_000_000 {
			bad(i, "depth", "must be between 0 and 1000000")
		}
		if g.Credential != "" && !secretRefRE.MatchString(g.Credential) {
			bad(i, "credential", "must name a stored secret (1-64 letters, digits, '.', '_', '-'), or a team's as team:NAME")
		}
		if g.Dir != "" && (len(g.Dir) > 255 || !dirRE.MatchString(g.Dir) || strings.Contains("/"+g.Dir+"/", "/../") || strings.Contains("/"+g.Dir+"/", "/./") || strings.HasPrefix(g.Dir, ".")) {
			bad(i, "dir", "must be a relative directory under /workspace (letters, digits, '.', '_', '-', '/'; no '..')")
		}
		if d := g.DirName(); d != "" {
			if dirs[d] {
				bad(i, "dir", "%q is used by another repository", d)
			}
			dirs[d] = true
		}
		switch g.Access {
		case "", AccessPush, AccessFetch:
		default:
			bad(i, "access", `must be "push" or "fetch"`)
		}
		if g.PushPrefix != "" && (!refRE.MatchString(g.PushPrefix) || strings.Contains(g.PushPrefix, "..") || strings.HasPrefix(g.PushPrefix, "-") || strings.HasPrefix(g.PushPrefix, "/")) {
			bad(i, "push_prefix", "not a branch name prefix (e.g. agent/)")
		}
		switch g.Forge {
		case "", "github", "gitlab":
		default:
			bad(i, "forge", `must be "github" or "gitlab"`)
		}
		if g.APIURL != "" {
			if u, err := url.Parse(g.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
				bad(i, "api_url", "must be an http(s) URL without credentials")
			}
		}
	}
	return fs
}

// WithDefaults fills a repository's defaults.
func (g GitRepo) WithDefaults() GitRepo {
	if g.Access == "" {
		g.Access = AccessPush
	}
	if g.PushPrefix == "" {
		g.PushPrefix = DefaultPushPrefix
	}
	if g.Dir == "" {
		g.Dir = g.DirName()
	}
	return g
}
