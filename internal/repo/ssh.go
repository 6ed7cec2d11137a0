package repo

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// SSH keys as credentials. The key stays on the server: git in the
// sandbox still speaks smart HTTP to the broker, and the broker runs the
// SSH transport itself (golang.org/x/crypto/ssh), executing
// git-upload-pack / git-receive-pack on the host and relaying their
// pkt-lines. Fetches use protocol v2 when the host accepts GIT_PROTOCOL
// (as GitHub and GitLab do), whose requests are each complete, so every
// HTTP request is one SSH session; pushes are one round in any version.
// The host's key is checked against the known_hosts the credential
// carries.

// sshCredential is an SSH key credential stored as a secret's value:
// {"ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----...",
// "known_hosts": "github.com ssh-ed25519 AAAA..."}.
type sshCredential struct {
	PrivateKey string `json:"ssh_private_key"`
	KnownHosts string `json:"known_hosts"`
}

// sshKey is a parsed SSH key credential.
type sshKey struct {
	id       [32]byte // the credential value's hash
	signer   ssh.Signer
	hostKeys ssh.HostKeyCallback
}

// credentialKind tells a secret's value apart: "ssh" (an SSH key
// credential), "app" (a GitHub App's) or "token".
func credentialKind(v string) string {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "-----BEGIN") {
		return "ssh"
	}
	if !strings.HasPrefix(v, "{") {
		return "token"
	}
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(v), &m) == nil {
		if _, ok := m["ssh_private_key"]; ok {
			return "ssh"
		}
	}
	return "app"
}

// parseSSH reads an SSH key credential.
func parseSSH(name, v string) (*sshKey, error) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "-----BEGIN") {
		return nil, errs.E(errs.Dependency, "credential %q: an SSH key credential is {\"ssh_private_key\": ..., \"known_hosts\": ...}: the broker checks the host's key against known_hosts", name)
	}
	var c sshCredential
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, errs.E(errs.Dependency, "credential %q: an SSH key credential is {\"ssh_private_key\", \"known_hosts\"}: %s", name, jsonProblem(err))
	}
	signer, err := ssh.ParsePrivateKey([]byte(c.PrivateKey))
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errs.E(errs.Dependency, "credential %q: the SSH key has a passphrase; store it without one (the secret store seals it)", name)
		}
		return nil, errs.E(errs.Dependency, "credential %q: ssh_private_key is not an SSH private key (PEM or OpenSSH form)", name)
	}
	if strings.TrimSpace(c.KnownHosts) == "" {
		return nil, errs.E(errs.Dependency, "credential %q: known_hosts is required (the host's key lines, as in ~/.ssh/known_hosts or from ssh-keyscan)", name)
	}
	cb, err := hostKeyCallback(c.KnownHosts)
	if err != nil {
		return nil, errs.E(errs.Dependency, "credential %q: known_hosts: %s", name, err)
	}
	return &sshKey{signer: signer, hostKeys: cb}, nil
}

// hostKeyCallback checks host keys against known_hosts text (knownhosts
// reads files only: the text goes through a private temporary file).
func hostKeyCallback(text string) (ssh.HostKeyCallback, error) {
	for rest := []byte(text); len(bytes.TrimSpace(rest)) > 0; {
		var err error
		if _, _, _, _, rest, err = ssh.ParseKnownHosts(rest); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, errors.New("not in known_hosts form (host key-type key)")
		}
	}
	f, err := os.CreateTemp("", "techboss-known-hosts-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(text + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return knownhosts.New(f.Name())
}

// sshKeyOf returns g's credential when it is an SSH key (nil otherwise).
func (b *Broker) sshKeyOf(ctx context.Context, ownerID string, g sandbox.GitRepo) (*sshKey, error) {
	if g.Credential == "" || b.cfg.Reveal == nil {
		return nil, nil
	}
	v, err := b.cfg.Reveal(ctx, ownerID, g.Credential)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, errs.E(errs.Dependency, "credential %q: no such secret", g.Credential)
		}
		return nil, err
	}
	if credentialKind(v) != "ssh" {
		return nil, nil
	}
	sum := sha256.Sum256([]byte(v))
	b.appMu.Lock()
	k, ok := b.sshKeys[sum]
	b.appMu.Unlock()
	if ok {
		return k, nil
	}
	if k, err = parseSSH(g.Credential, v); err != nil {
		return nil, err
	}
	k.id = sum
	b.appMu.Lock()
	if len(b.sshKeys) > 256 {
		clear(b.sshKeys)
	}
	b.sshKeys[sum] = k
	b.appMu.Unlock()
	return k, nil
}

// sshSession is one git service run on the host over SSH.
type sshSession struct {
	b      *Broker
	conn   *pooledSSH
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *lockedTail
	adv    bytes.Buffer // the advertisement, up to and including its flush
	v2     bool
	closed sync.Once
}

func (s *sshSession) Close() {
	s.closed.Do(func() {
		s.sess.Close()
		s.b.releaseSSH(s.conn, false)
	})
}

// sshIdle is how long an SSH connection with no session is kept for the
// next request (git's requests of one fetch or push come one after the
// other, each a session).
const sshIdle = 30 * time.Second

// pooledSSH is one SSH connection and its sessions' count.
type pooledSSH struct {
	key    string
	client *ssh.Client
	active int
	pooled bool
	idle   *time.Timer
}

// dialSSH connects to rm's SSH address with key, checking the host's key.
// Errors are public.
func (b *Broker) dialSSH(ctx context.Context, key *sshKey, rm sandbox.Remote) (*ssh.Client, error) {
	conn, err := b.sshDialer.DialContext(ctx, "tcp", rm.SSHAddr)
	if err != nil {
		return nil, errs.Wrap(errs.Dependency, err, fmt.Sprintf("%s is unreachable over SSH from the server", rm.SSHAddr))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cc, chans, reqs, err := ssh.NewClientConn(conn, rm.SSHAddr, &ssh.ClientConfig{
		User: rm.SSHUser, Auth: []ssh.AuthMethod{ssh.PublicKeys(key.signer)}, HostKeyCallback: key.hostKeys,
	})
	if err != nil {
		conn.Close()
		var ke *knownhosts.KeyError
		switch {
		case errors.As(err, &ke) && len(ke.Want) > 0:
			return nil, errs.Wrap(errs.Dependency, err, fmt.Sprintf("the SSH host key of %s is not the one in the credential's known_hosts", rm.SSHAddr))
		case errors.As(err, &ke):
			return nil, errs.Wrap(errs.Dependency, err, fmt.Sprintf("the credential's known_hosts has no key for %s", rm.SSHAddr))
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, errs.Wrap(errs.Dependency, err, fmt.Sprintf("%s refused the SSH key", rm.SSHAddr))
		}
		return nil, errs.Wrap(errs.Dependency, err, fmt.Sprintf("SSH to %s failed", rm.SSHAddr))
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

// acquireSSH returns a connection for key at rm: the pooled one, or a new
// one (pooled when none is). fresh skips the pool's.
func (b *Broker) acquireSSH(ctx context.Context, key *sshKey, rm sandbox.Remote, fresh bool) (*pooledSSH, error) {
	k := string(key.id[:]) + "\x00" + rm.SSHUser + "\x00" + rm.SSHAddr
	b.appMu.Lock()
	if p := b.sshPool[k]; p != nil && !fresh {
		p.active++
		if p.idle != nil {
			p.idle.Stop()
		}
		b.appMu.Unlock()
		return p, nil
	}
	b.appMu.Unlock()
	c, err := b.dialSSH(ctx, key, rm)
	if err != nil {
		return nil, err
	}
	p := &pooledSSH{key: k, client: c, active: 1}
	b.appMu.Lock()
	if _, taken := b.sshPool[k]; !taken {
		b.sshPool[k], p.pooled = p, true
	}
	b.appMu.Unlock()
	return p, nil
}

// releaseSSH ends a session's use of p; broken drops p from the pool. A
// connection is closed when unpooled and unused, or idle for sshIdle.
func (b *Broker) releaseSSH(p *pooledSSH, broken bool) {
	b.appMu.Lock()
	defer b.appMu.Unlock()
	p.active--
	if broken && p.pooled {
		delete(b.sshPool, p.key)
		p.pooled = false
	}
	switch {
	case p.active > 0:
	case !p.pooled:
		p.client.Close()
	default:
		p.idle = time.AfterFunc(sshIdle, func() {
			b.appMu.Lock()
			defer b.appMu.Unlock()
			if p.active == 0 && b.sshPool[p.key] == p {
				delete(b.sshPool, p.key)
				p.client.Close()
			}
		})
	}
}

// Close closes the broker's idle SSH connections (those in use close
// when their sessions end).
func (b *Broker) Close() {
	b.appMu.Lock()
	defer b.appMu.Unlock()
	for k, p := range b.sshPool {
		delete(b.sshPool, k)
		p.pooled = false
		if p.idle != nil {
			p.idle.Stop()
		}
		if p.active == 0 {
			p.client.Close()
		}
	}
}

// startSSH runs service (git-upload-pack or git-receive-pack) on the
// repository's SSH host with key, gitProtocol as GIT_PROTOCOL, and reads
// its advertisement. Errors are public.
func (b *Broker) startSSH(ctx context.Context, key *sshKey, rm sandbox.Remote, service, gitProtocol string) (*sshSession, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var s *sshSession
	for attempt := 0; ; attempt++ {
		p, err := b.acquireSSH(ctx, key, rm, attempt > 0)
		if err != nil {
			return nil, err
		}
		stopN := context.AfterFunc(ctx, func() { p.client.Close() }) // a dead connection
		sess, err := p.client.NewSession()
		stopN()
		if err == nil {
			s = &sshSession{b: b, conn: p, sess: sess, stderr: &lockedTail{}}
			break
		}
		// A pooled connection the host closed: once more on a new one.
		b.releaseSSH(p, true)
		if attempt > 0 {
			return nil, errs.Wrap(errs.Dependency, err, "SSH session to "+rm.SSHAddr)
		}
	}
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	fail := func(err error) (*sshSession, error) {
		s.Close()
		return nil, err
	}
	if gitProtocol != "" {
		_ = s.sess.Setenv("GIT_PROTOCOL", gitProtocol) // a host that refuses it speaks v0
	}
	s.sess.Stderr = s.stderr
	var err error
	if s.stdin, err = s.sess.StdinPipe(); err != nil {
		return fail(err)
	}
	out, err := s.sess.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	s.stdout = bufio.NewReaderSize(out, 64<<10)
	// The path has only [A-Za-z0-9._~/-] (ParseRemote): quoting is enough.
	if err := s.sess.Start(service + " '" + rm.SSHPath + "'"); err != nil {
		return fail(errs.Wrap(errs.Dependency, err, "run "+service+" on "+rm.SSHAddr))
	}
	first := true
	for {
		p, err := readPkt(s.stdout, &s.adv)
		if errors.Is(err, errFlush) {
			break
		}
		if err != nil {
			why := lastLines(s.stderr.String(), 2)
			if why == "" {
				why = err.Error()
			}
			s.Close()
			if strings.Contains(why, "not found") || strings.Contains(why, "does not appear to be a git repository") || strings.Contains(why, "not exist") {
				return nil, errs.E(errs.Invalid, "%s: no such repository (or the SSH key cannot see it): %s", rm.Key(), why)
			}
			return nil, errs.E(errs.Dependency, "%s over SSH: %s", rm.Key(), why)
		}
		if first && string(bytes.TrimSuffix(p, []byte("\n"))) == "version 2" {
			s.v2 = true
		}
		first = false
	}
	stop()
	return s, nil
}

// serveSSH answers one smart-HTTP request of the sandbox's git over SSH:
// the advertisement for info/refs, the service's answer to body for a
// POST.
func (b *Broker) serveSSH(w http.ResponseWriter, r *http.Request, key *sshKey, rm sandbox.Remote, svc string, body io.Reader) error {
	ctx := r.Context()
	s, err := b.startSSH(ctx, key, rm, svc, r.Header.Get("Git-Protocol"))
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/x-"+svc+"-advertisement")
		if !s.v2 {
			io.WriteString(w, pkt("# service="+svc+"\n")+"0000")
		}
		_, err := w.Write(s.adv.Bytes())
		return err
	}
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			return errs.E(errs.Invalid, "a gzip body that is not gzip")
		}
		body = zr
	}
	if _, err := io.Copy(s.stdin, body); err != nil {
		return errs.Wrap(errs.Dependency, err, "send the request to "+rm.SSHAddr)
	}
	s.stdin.Close()
	w.Header().Set("Content-Type", "application/x-"+svc+"-result")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := s.stdout.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
			_ = rc.Flush()
		}
		if err != nil {
			return nil
		}
	}
}

// advertiseSSH reads the upload-pack ref advertisement over SSH (v0).
func (b *Broker) advertiseSSH(ctx context.Context, key *sshKey, rm sandbox.Remote) (Advertisement, error) {
	s, err := b.startSSH(ctx, key, rm, svcUpload, "")
	if err != nil {
		return Advertisement{}, err
	}
	defer s.Close()
	adv, err := ReadAdvertisement(io.MultiReader(strings.NewReader(pkt("# service="+svcUpload+"\n")+"0000"), bytes.NewReader(s.adv.Bytes())))
	if err != nil {
		return Advertisement{}, errs.Wrap(errs.Dependency, err, rm.Key()+" did not answer as a git repository over SSH")
	}
	return adv, nil
}

// lockedTail keeps the last 4 KiB written (an SSH session's stderr,
// written by the SSH library's goroutine).
type lockedTail struct {
	mu sync.Mutex
	t  tailWriter
}

func (l *lockedTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t.max == 0 {
		l.t.max = 4096
	}
	return l.t.Write(p)
}

func (l *lockedTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t.String()
}
