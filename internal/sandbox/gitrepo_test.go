package sandbox

import (
	"encoding/json"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
)

func TestParseRemote(t *testing.T) {
	for _, tc := range []struct {
		in, upstream string
	}{
		{"https://github.com/Owner/app.git", "https://github.com/Owner/app.git"},
		{"https://GitHub.com/owner/app/", "https://github.com/owner/app.git"},
		{"git@github.com:owner/app.git", "https://github.com/owner/app.git"},
		{"ssh://git@gitlab.example.com:2222/group/sub/app.git", "https://gitlab.example.com/group/sub/app.git"},
		{"http://127.0.0.1:3000/owner/app", "http://127.0.0.1:3000/owner/app.git"},
	} {
		r, err := ParseRemote(tc.in)
		if err != nil || r.Upstream() != tc.upstream {
			t.Errorf("%s: got %q, %v; want %q", tc.in, r.Upstream(), err, tc.upstream)
		}
	}
	// Where an SSH key credential reaches each form over SSH.
	for _, tc := range []struct{ in, user, addr, path string }{
		{"git@github.com:owner/app.git", "git", "github.com:22", "owner/app.git"},
		{"deploy@git.example.com:owner/app", "deploy", "git.example.com:22", "owner/app"},
		{"ssh://git@gitlab.example.com:2222/group/sub/app.git", "git", "gitlab.example.com:2222", "/group/sub/app.git"},
		{"ssh://Git.Example.com/owner/app", "git", "git.example.com:22", "/owner/app"},
		{"https://github.com/owner/app", "git", "github.com:22", "/owner/app.git"},
		{"http://127.0.0.1:3000/owner/app", "git", "127.0.0.1:22", "/owner/app.git"},
	} {
		r, err := ParseRemote(tc.in)
		if err != nil || r.SSHUser != tc.user || r.SSHAddr != tc.addr || r.SSHPath != tc.path {
			t.Errorf("%s: SSH %q %q %q, %v; want %q %q %q", tc.in, r.SSHUser, r.SSHAddr, r.SSHPath, err, tc.user, tc.addr, tc.path)
		}
	}
	for _, bad := range []string{"", "ftp://h/o/r", "https://u:p@github.com/o/r", "https://github.com/", "https://github.com/o/../r",
		"https://github.com/o/r?x=1", "file:///etc/passwd", "/local/path", "https://h/o/r\n", "-oProxyCommand=x:o/r"} {
		if _, err := ParseRemote(bad); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}

func TestRepoListJSON(t *testing.T) {
	var s Spec
	if err := json.Unmarshal([]byte(`{"repo":{"url":"https://github.com/o/r"}}`), &s); err != nil || len(s.Repos) != 1 {
		t.Fatalf("one object: %v %+v", err, s.Repos)
	}
	if err := json.Unmarshal([]byte(`{"repo":[{"url":"https://github.com/o/a"},{"url":"https://github.com/o/b","dir":"b2"}]}`), &s); err != nil || len(s.Repos) != 2 {
		t.Fatalf("a list: %v %+v", err, s.Repos)
	}
	if err := json.Unmarshal([]byte(`{"repo":{"url":"x","token":"t"}}`), &s); err == nil {
		t.Fatal("an unknown field was accepted")
	}
	s = Spec{Repos: RepoList{{URL: "https://github.com/o/app"}, {URL: "https://gitlab.com/o/app"}, {URL: "https://x.com/o/r", Dir: "../etc", Access: "all", Depth: -1}}}
	err := s.Validate(DefaultLimits())
	for _, f := range []string{"repo[1].dir", "repo[2].dir", "repo[2].access", "repo[2].depth"} {
		if !hasField(err, f) {
			t.Errorf("want a problem on %s, got %v", f, err)
		}
	}
}

func hasField(err error, field string) bool {
	pe, ok := errs.Public(err)
	if !ok {
		return false
	}
	for _, f := range pe.Fields {
		if f.Field == field {
			return true
		}
	}
	return false
}
