package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/techbossai/techboss/internal/repo/repotest"
	"github.com/techbossai/techboss/internal/sandbox"
)

// TestSSHCredential: with an SSH key credential the broker runs the SSH
// transport on the host (the key never reaches git's side) and relays
// smart HTTP: clone, an incremental fetch (protocol v2, and v0), a push
// under the prefix; the push policy holds; a host key not in known_hosts
// and a key the host refuses are clear refusals.
func TestSSHCredential(t *testing.T) {
	// The upstream: a bare repository served over SSH.
	root, work := t.TempDir(), t.TempDir()
	hostGit := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	hostGit(work, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(work, "README.md"), []byte("# app\n"), 0o644)
	hostGit(work, "add", ".")
	hostGit(work, "commit", "-q", "-m", "first")
	bare := filepath.Join(root, "owner", "app.git")
	hostGit("", "clone", "-q", "--bare", work, bare)

	keyPEM, clientSigner := repotest.NewKey(t)
	srv := repotest.NewSSHGitServer(t, root, clientSigner.PublicKey())
	port, knownHosts := srv.Port(), srv.KnownHosts()
	cred := func(key, hosts string) string {
		b, _ := json.Marshal(map[string]string{"ssh_private_key": key, "known_hosts": hosts})
		return string(b)
	}
	var mu sync.Mutex
	secret := cred(keyPEM, knownHosts)

	sb := sandbox.Sandbox{ID: "sb_ssh1", OwnerID: "u1", State: sandbox.Running,
		Spec: sandbox.Spec{Repos: sandbox.RepoList{{URL: "ssh://git@127.0.0.1:" + port + "/owner/app.git", Credential: "key"}}}}
	b, err := NewBroker(BrokerConfig{
		Key:    []byte("0123456789abcdef0123456789abcdef"),
		Lookup: func(context.Context, string) (*sandbox.Sandbox, error) { s := sb; return &s, nil },
		Reveal: func(context.Context, string, string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			return secret, nil
		},
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bs := httptest.NewServer(b)
	defer bs.Close()
	remote := strings.Replace(bs.URL, "http://", "http://"+sb.ID+":"+b.Grant(&sb)+"@", 1) + "/git/127.0.0.1/owner/app.git"

	clone := filepath.Join(t.TempDir(), "app")
	hostGit("", "clone", "-q", remote, clone)
	if got := hostGit(clone, "log", "--format=%s"); strings.TrimSpace(got) != "first" {
		t.Fatalf("cloned log = %q", got)
	}
	// Local commits the host lacks make the fetches below negotiate over
	// several rounds (each an HTTP request, each an SSH session).
	hostGit(clone, "switch", "-q", "-c", "local")
	for i := range 80 {
		// Newer than anything upstream, so they are offered first.
		cmd := exec.Command("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", fmt.Sprintf("local %d", i))
		cmd.Dir = clone
		cmd.Env = append(os.Environ(), fmt.Sprintf("GIT_COMMITTER_DATE=2040-01-01T00:%02d:%02dZ", i/60, i%60))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("local commit: %v\n%s", err, out)
		}
	}
	hostGit(clone, "switch", "-q", "main")
	// A new upstream commit, fetched with the clone's haves (v2, then v0).
	for i, proto := range []string{"2", "0"} {
		os.WriteFile(filepath.Join(work, "README.md"), []byte(fmt.Sprintf("# app %d\n", i)), 0o644)
		hostGit(work, "commit", "-q", "-am", "upstream "+proto)
		hostGit(work, "push", "-q", bare, "main")
		before := len(srv.Commands())
		hostGit(clone, "-c", "protocol.version="+proto, "pull", "-q", "--ff-only")
		// v2: the capabilities, ls-refs and two or more fetch rounds; v0:
		// the refs and two or more rounds.
		if n, least := len(srv.Commands())-before, map[string]int{"2": 4, "0": 3}[proto]; n < least {
			t.Fatalf("the v%s fetch took %d SSH sessions, want %d or more (a negotiation over several rounds)", proto, n, least)
		}
		if got := hostGit(clone, "log", "-1", "--format=%s"); strings.TrimSpace(got) != "upstream "+proto {
			t.Fatalf("after a v%s fetch, HEAD is %q", proto, got)
		}
	}
	// A push under the prefix goes through; the default branch and other
	// prefixes are refused by the broker before anything reaches the host.
	hostGit(clone, "commit", "-q", "--allow-empty", "-m", "agent work")
	hostGit(clone, "push", "-q", "origin", "HEAD:agent/ssh")
	if got, want := strings.TrimSpace(hostGit(bare, "rev-parse", "agent/ssh")), strings.TrimSpace(hostGit(clone, "rev-parse", "HEAD")); got != want {
		t.Fatalf("agent/ssh upstream = %s, want %s", got, want)
	}
	mainBefore := hostGit(bare, "rev-parse", "main")
	for _, dst := range []string{"main", "other/x"} {
		cmd := exec.Command("git", "push", "origin", "HEAD:"+dst)
		cmd.Dir = clone
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "techboss broker") {
			t.Fatalf("push to %s over SSH: %v, want the broker's refusal\n%s", dst, err, out)
		}
	}
	if hostGit(bare, "rev-parse", "main") != mainBefore {
		t.Fatal("a refused push reached the host")
	}
	// One connection serves git's requests one after another.
	if conns, cmds := srv.Conns(), len(srv.Commands()); conns*2 > cmds {
		t.Fatalf("%d SSH connections for %d sessions: the broker does not reuse its connections", conns, cmds)
	}
	// A pooled connection the host dropped is replaced.
	srv.Drop()
	if out := hostGit(clone, "ls-remote", "--heads", "origin"); !strings.Contains(out, "refs/heads/main") {
		t.Fatalf("ls-remote after the host dropped the connection: %s", out)
	}
	sawV2 := false
	for _, c := range srv.Commands() {
		sawV2 = sawV2 || strings.HasPrefix(c, "git-upload-pack '/owner/app.git' version=2")
	}
	if !sawV2 {
		t.Fatalf("the host saw %q, want an upload-pack with GIT_PROTOCOL=version=2", srv.Commands())
	}

	// The key opens git over SSH only: a pull request needs a token.
	g := sb.Spec.Repos[0].WithDefaults()
	rm, _ := sandbox.ParseRemote(g.URL)
	if _, _, err := b.credential(context.Background(), sb.OwnerID, g, rm); err == nil || !strings.Contains(err.Error(), "is an SSH key") {
		t.Fatalf("the forge credential of an SSH key: %v", err)
	}

	otherPEM, otherSigner := repotest.NewKey(t)
	wrongHost := fmt.Sprintf("[127.0.0.1]:%s %s", port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherSigner.PublicKey()))))
	for _, tc := range []struct{ name, secret, want string }{
		{"a host key not the host's", cred(keyPEM, wrongHost), "is not the one in the credential's known_hosts"},
		{"no host key for the host", cred(keyPEM, "github.com "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.HostKey)))), "has no key for 127.0.0.1:" + port},
		{"a key the host refuses", cred(otherPEM, knownHosts), "refused the SSH key"},
		{"a bare key", keyPEM, "the broker checks the host's key"},
		{"no known_hosts", cred(keyPEM, ""), "known_hosts is required"},
	} {
		mu.Lock()
		secret = tc.secret
		mu.Unlock()
		cmd := exec.Command("git", "ls-remote", remote)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "PRIVATE KEY") {
			t.Fatalf("%s: %v, want a refusal saying %q\n%s", tc.name, err, tc.want, out)
		}
	}
}
