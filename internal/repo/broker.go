// Package repo brings git repositories into sandboxes and the agent's work
// back out: clone at create, a credential broker that keeps tokens on the
// server, and the status / commit / push / pull-request operations.
//
// Git inside the sandbox never holds the long-lived token. Its remote is
// rewritten to the broker (http://<in-sandbox gateway listener>/git/<host>/<path>),
// which authenticates the sandbox with a sandbox-scoped token, adds the
// stored credential upstream, logs every use, and reads the ref updates of
// each push to refuse the default branch and anything outside the
// repository's push prefix. Every git command that reads the workspace's
// repository runs inside the sandbox: the workspace is hostile (a
// .git/config with core.fsmonitor runs code in whoever reads it).
package repo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// BrokerPrefix is where the broker is served on the gateway listener.
const BrokerPrefix = "/git/"

// BrokerConfig configures a Broker.
type BrokerConfig struct {
	// Lookup returns a sandbox record by ID, whoever owns it.
	Lookup func(ctx context.Context, id string) (*sandbox.Sandbox, error)
	// Reveal returns the value of an owner's stored secret.
	Reveal func(ctx context.Context, ownerID, name string) (string, error)
	// Bound returns the sandbox a request's listener belongs to, if it
	// came through an in-sandbox listener (agent.BoundSandbox).
	Bound func(ctx context.Context) (string, bool)
	// Key signs sandbox tokens (32 random bytes; keep it across restarts
	// so clones made before one keep working).
	Key []byte
	// Allow are the local or private ranges the broker may reach (the
	// operator's TECHBOSS_NETWORK_ALLOW); all others of those are refused.
	Allow []netip.Prefix
	// SecretUpdated returns when an owner's stored secret was last written
	// (errs.NotFound when it is gone): a grant issued before a rotation,
	// or for a deleted secret, is revoked.
	SecretUpdated func(ctx context.Context, ownerID, name string) (time.Time, error)
	// GrantTTL bounds a sandbox grant's life (0: the sandbox's lifetime,
	// or DefaultGrantTTL when it has none). The server renews a clone's
	// grant at each run's start and whenever it runs git there (status,
	// push, deliver).
	GrantTTL time.Duration
	// Now is the clock of grants (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultGrantTTL is a grant's life when neither the operator nor the
// sandbox's lifetime bounds it.
const DefaultGrantTTL = 24 * time.Hour

// Broker is the smart-HTTP git proxy and credential broker.
type Broker struct {
	cfg    BrokerConfig
	client *http.Client
	log    *slog.Logger

	appMu     sync.Mutex
	appTokens map[string]appToken   // GitHub App installation tokens by owner, secret, repository
	sshKeys   map[[32]byte]*sshKey  // parsed SSH key credentials by their value's hash
	sshPool   map[string]*pooledSSH // SSH connections by key, user and address
	sshDialer *net.Dialer
}

// NewBroker returns a broker.
func NewBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Lookup == nil || len(cfg.Key) < 16 {
		return nil, errors.New("git broker: Lookup and a Key of at least 16 bytes are required")
	}
	if cfg.Bound == nil {
		cfg.Bound = func(context.Context) (string, bool) { return "", false }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Broker{cfg: cfg, log: cfg.Logger, appTokens: map[string]appToken{}, sshKeys: map[[32]byte]*sshKey{}, sshPool: map[string]*pooledSSH{},
		sshDialer: sandbox.GuardedDialer(15*time.Second, cfg.Allow, "TECHBOSS_NETWORK_ALLOW")}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.client = &http.Client{Transport: b.transport(), CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a redirect would carry the credential elsewhere
	}}
	return b, nil
}

// A grant is the sandbox-scoped credential git in the sandbox presents
// (as the password, with the sandbox ID as user name):
// tbg1.<issued>.<expires>.<mac>, the times in Unix milliseconds (base 36)
// and the mac an HMAC of them and the sandbox ID under the broker's key.
// It opens only that sandbox's repositories, with that sandbox's policy,
// through its own listener, until it expires; it is revoked at once when
// the sandbox stops running and, for a repository, when its credential
// secret is deleted or written again after the grant was issued.
const grantPrefix = "tbg1."

// Grant issues a grant for sb, valid from now until the GrantTTL, the
// sandbox's lifetime or DefaultGrantTTL, whichever ends first.
func (b *Broker) Grant(sb *sandbox.Sandbox) string {
	now := b.cfg.Now()
	exp := now.Add(DefaultGrantTTL)
	if sb.Spec.MaxLifetimeS > 0 {
		exp = sb.CreatedAt.Add(time.Duration(sb.Spec.MaxLifetimeS) * time.Second)
	}
	if b.cfg.GrantTTL > 0 && now.Add(b.cfg.GrantTTL).Before(exp) {
		exp = now.Add(b.cfg.GrantTTL)
	}
	return b.grant(sb.ID, now, exp)
}

func (b *Broker) grant(sandboxID string, iat, exp time.Time) string {
	body := strconv.FormatInt(iat.UnixMilli(), 36) + "." + strconv.FormatInt(exp.UnixMilli(), 36)
	return grantPrefix + body + "." + b.grantMAC(sandboxID, body)
}

func (b *Broker) grantMAC(sandboxID, body string) string {
	m := hmac.New(sha256.New, b.cfg.Key)
	m.Write([]byte("techboss git grant\x00" + sandboxID + "\x00" + body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// grantTimes checks a grant's mac for sandboxID and returns its issue and
// expiry times (ok false for anything not a grant of that sandbox).
func (b *Broker) grantTimes(sandboxID, g string) (iat, exp time.Time, ok bool) {
	rest, found := strings.CutPrefix(g, grantPrefix)
	parts := strings.Split(rest, ".")
	if !found || len(parts) != 3 {
		return time.Time{}, time.Time{}, false
	}
	body := parts[0] + "." + parts[1]
	if !hmac.Equal([]byte(parts[2]), []byte(b.grantMAC(sandboxID, body))) {
		return time.Time{}, time.Time{}, false
	}
	i, err1 := strconv.ParseInt(parts[0], 36, 64)
	e, err2 := strconv.ParseInt(parts[1], 36, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, time.Time{}, false
	}
	return time.UnixMilli(i), time.UnixMilli(e), true
}

// GrantFresh reports whether grant is a valid grant of sb with more than
// half of its life left and not revoked for any of sb's repositories:
// the service keeps such a grant in a clone rather than writing a new one.
func (b *Broker) GrantFresh(ctx context.Context, sb *sandbox.Sandbox, grant string) bool {
	iat, exp, ok := b.grantTimes(sb.ID, grant)
	if !ok || b.cfg.Now().After(iat.Add(exp.Sub(iat)/2)) {
		return false
	}
	for _, g := range sb.Spec.Repos {
		if b.revoked(ctx, sb.OwnerID, g, iat) != "" {
			return false
		}
	}
	return true
}

// revoked says why a grant issued at iat no longer opens g ("" when it
// does): its credential was deleted or written again since.
func (b *Broker) revoked(ctx context.Context, ownerID string, g sandbox.GitRepo, iat time.Time) string {
	if g.Credential == "" || b.cfg.SecretUpdated == nil {
		return ""
	}
	at, err := b.cfg.SecretUpdated(ctx, ownerID, g.Credential)
	switch {
	case errs.KindOf(err) == errs.NotFound:
		return fmt.Sprintf("the credential %q was deleted", g.Credential)
	case err != nil:
		b.log.WarnContext(ctx, "git broker: read the credential's age", "err", err)
		return "the credential could not be checked"
	case at.After(iat):
		return fmt.Sprintf("the credential %q was rotated after this grant was issued", g.Credential)
	}
	return ""
}

// grantRenewal is what a refused grant's message tells the reader.
const grantRenewal = "; the server writes a new grant into the clone the next time it runs git there (GET /sandbox/{id}/git/status)"

// The smart-HTTP endpoints the broker serves; nothing else (no dumb HTTP).
const (
	svcUpload  = "git-upload-pack"
	svcReceive = "git-receive-pack"
)

func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="techboss git broker"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	iat, exp, ok := b.grantTimes(user, pass)
	if !ok {
		b.log.WarnContext(ctx, "git broker: bad sandbox grant", "sandbox_id", printable(user))
		http.Error(w, "techboss git broker: not a grant of sandbox "+printable(user), http.StatusForbidden)
		return
	}
	if bound, ok := b.cfg.Bound(ctx); ok && bound != user {
		b.log.WarnContext(ctx, "git broker: grant used on another sandbox's listener", "sandbox_id", printable(user), "listener_sandbox_id", bound)
		http.Error(w, "techboss git broker: this listener belongs to another sandbox", http.StatusForbidden)
		return
	}
	if now := b.cfg.Now(); now.After(exp) {
		b.log.InfoContext(ctx, "git broker: expired grant", "sandbox_id", user, "expired_at", exp.UTC())
		w.Header().Set("WWW-Authenticate", `Basic realm="techboss git broker"`)
		http.Error(w, "techboss git broker: the sandbox's git grant expired at "+exp.UTC().Format(time.RFC3339)+grantRenewal, http.StatusUnauthorized)
		return
	}
	sb, err := b.cfg.Lookup(ctx, user)
	if err != nil || (sb.State != sandbox.Running && sb.State != sandbox.Creating) {
		b.log.InfoContext(ctx, "git broker: grant of a sandbox not running", "sandbox_id", user)
		http.Error(w, "techboss git broker: the grant is revoked: the sandbox is not running", http.StatusForbidden)
		return
	}
	g, rm, suffix, ok := match(sb, strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(BrokerPrefix, "/")))
	if !ok {
		http.Error(w, "this sandbox has no such repository", http.StatusNotFound)
		return
	}
	if why := b.revoked(ctx, sb.OwnerID, g, iat); why != "" {
		b.log.InfoContext(ctx, "git broker: revoked grant", "owner_id", sb.OwnerID, "sandbox_id", sb.ID, "repo", rm.Key(), "reason", why)
		http.Error(w, "techboss git broker: the grant is revoked: "+why+grantRenewal, http.StatusForbidden)
		return
	}
	var svc string
	switch {
	case r.Method == http.MethodGet && suffix == "/info/refs":
		svc = r.URL.Query().Get("service")
	case r.Method == http.MethodPost && (suffix == "/"+svcUpload || suffix == "/"+svcReceive):
		svc = suffix[1:]
	}
	if svc != svcUpload && svc != svcReceive {
		http.Error(w, "only smart-HTTP git is served", http.StatusNotFound)
		return
	}
	op := "fetch"
	if svc == svcReceive {
		op = "push"
	}
	log := b.log.With("owner_id", sb.OwnerID, "sandbox_id", sb.ID, "repo", rm.Key(), "op", op)
	if op == "push" && g.Access == sandbox.AccessFetch {
		log.InfoContext(ctx, "git broker: push refused", "reason", "fetch only")
		http.Error(w, "this sandbox may only fetch "+rm.Key(), http.StatusForbidden)
		return
	}
	body := r.Body
	if op == "push" && r.Method == http.MethodPost {
		if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
			// The commands must be readable to be checked.
			http.Error(w, "a push body must not be compressed", http.StatusUnsupportedMediaType)
			return
		}
		br := bufio.NewReaderSize(r.Body, 64<<10)
		req, head, err := ReadPushRequest(br)
		if err != nil {
			log.InfoContext(ctx, "git broker: bad push", "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		adv, err := b.advertise(ctx, sb.OwnerID, g, rm)
		if err != nil {
			log.WarnContext(ctx, "git broker: read default branch", "err", err)
			http.Error(w, "the broker could not learn the default branch: "+publicText(err), http.StatusBadGateway)
			return
		}
		if reasons := CheckPush(g, adv.Head, req); len(reasons) > 0 {
			log.InfoContext(ctx, "git broker: push refused", "refs", refNames(req), "reasons", reasons)
			w.Header().Set("Content-Type", "application/x-git-receive-pack-result")
			w.Header().Set("Cache-Control", "no-cache")
			if !req.Has("report-status") && !req.Has("report-status-v2") {
				w.WriteHeader(http.StatusForbidden)
			}
			w.Write(refusal(req, reasons))
			return
		}
		log = log.With("refs", refNames(req))
		body = io.NopCloser(io.MultiReader(bytes.NewReader(head), br))
	}
	key, err := b.sshKeyOf(ctx, sb.OwnerID, g)
	if err != nil {
		log.WarnContext(ctx, "git broker: credential", "err", err)
		http.Error(w, publicText(err), http.StatusForbidden)
		return
	}
	if key != nil {
		if err := b.serveSSH(w, r, key, rm, svc, body); err != nil {
			log.WarnContext(ctx, "git broker: upstream over SSH", "err", err)
			http.Error(w, "techboss git broker: "+publicText(err), http.StatusBadGateway)
			return
		}
		log.InfoContext(ctx, "git broker", "method", r.Method, "transport", "ssh")
		return
	}
	up, err := http.NewRequestWithContext(ctx, r.Method, rm.Upstream()+suffix, body)
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if suffix == "/info/refs" {
		up.URL.RawQuery = "service=" + svc
	}
	for _, h := range []string{"Content-Type", "Accept", "Git-Protocol", "Content-Encoding", "User-Agent"} {
		if v := r.Header.Get(h); v != "" {
			up.Header.Set(h, v)
		}
	}
	// The push body is replayed unchanged (commands, then the pack), so
	// its length is the client's.
	up.ContentLength = r.ContentLength
	if r.Method == http.MethodGet {
		up.ContentLength = 0
		up.Body = nil
	}
	if err := b.authorize(ctx, up, sb.OwnerID, g, rm); err != nil {
		log.WarnContext(ctx, "git broker: credential", "err", err)
		http.Error(w, publicText(err), http.StatusForbidden)
		return
	}
	resp, err := b.client.Do(up)
	if err != nil {
		log.WarnContext(ctx, "git broker: upstream", "err", err)
		http.Error(w, "the git host is unreachable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	log.InfoContext(ctx, "git broker", "method", r.Method, "status", resp.StatusCode)
	for _, h := range []string{"Content-Type", "Cache-Control", "Expires", "Pragma", "Content-Encoding"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	status := resp.StatusCode
	if status == http.StatusUnauthorized {
		// A 401 would make git ask its helper again, for the same token.
		status = http.StatusForbidden
	}
	w.WriteHeader(status)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// CheckPush returns, per refused ref, why the broker refuses it: pushes
// go only to branches under the repository's prefix, never to the
// default branch (head, e.g. "refs/heads/main"; "" when unknown, then
// main and master are refused), never delete, never tags.
func CheckPush(g sandbox.GitRepo, head string, p PushRequest) map[string]string {
	g = g.WithDefaults()
	reasons := map[string]string{}
	for _, u := range p.Updates {
		branch, isBranch := strings.CutPrefix(u.Ref, "refs/heads/")
		switch {
		case !isBranch:
			reasons[u.Ref] = "only branches may be pushed"
		case u.Ref == head || (head == "" && (branch == "main" || branch == "master")):
			reasons[u.Ref] = "pushing to the default branch is refused by the credential broker"
		case !strings.HasPrefix(branch, g.PushPrefix):
			reasons[u.Ref] = fmt.Sprintf("only branches under %q may be pushed", g.PushPrefix)
		case u.Delete():
			reasons[u.Ref] = "deleting branches is refused by the credential broker"
		}
	}
	return reasons
}

func refNames(p PushRequest) []string {
	out := make([]string, len(p.Updates))
	for i, u := range p.Updates {
		out[i] = u.Ref
	}
	return out
}

// match finds the sandbox repository a broker path names:
// /<host>/<path>[.git]<suffix>.
func match(sb *sandbox.Sandbox, p string) (sandbox.GitRepo, sandbox.Remote, string, bool) {
	for _, g := range sb.Spec.Repos {
		rm, err := sandbox.ParseRemote(g.URL)
		if err != nil {
			continue
		}
		rest, ok := strings.CutPrefix(p, "/"+rm.Key())
		if !ok {
			continue
		}
		rest = strings.TrimPrefix(rest, ".git")
		switch rest {
		case "/info/refs", "/" + svcUpload, "/" + svcReceive:
			return g.WithDefaults(), rm, rest, true
		}
	}
	return sandbox.GitRepo{}, sandbox.Remote{}, "", false
}

// authorize adds the stored credential of g to an upstream request.
func (b *Broker) authorize(ctx context.Context, req *http.Request, ownerID string, g sandbox.GitRepo, rm sandbox.Remote) error {
	if g.Credential == "" {
		return nil
	}
	user, pass, err := b.credential(ctx, ownerID, g, rm)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, pass)
	return nil
}

func basicUser(forge string) string {
	if forge == "gitlab" {
		return "oauth2"
	}
	return "x-access-token"
}

// ForgeOf names the forge of a repository: its Forge, or a guess from the
// host.
func ForgeOf(g sandbox.GitRepo, rm sandbox.Remote) string {
	if g.Forge != "" {
		return g.Forge
	}
	h := strings.ToLower(rm.Host)
	if h == "gitlab.com" || strings.HasPrefix(h, "gitlab.") {
		return "gitlab"
	}
	return "github"
}

// advertise reads the upstream's upload-pack ref advertisement with the
// stored credential (Go HTTP only: nothing of the workspace is read).
// Errors are public: 424 for refused credentials, 422 for a repository
// that does not exist.
func (b *Broker) advertise(ctx context.Context, ownerID string, g sandbox.GitRepo, rm sandbox.Remote) (Advertisement, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if key, err := b.sshKeyOf(ctx, ownerID, g); err != nil || key != nil {
		if err != nil {
			return Advertisement{}, err
		}
		return b.advertiseSSH(ctx, key, rm)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rm.Upstream()+"/info/refs?service="+svcUpload, nil)
	if err != nil {
		return Advertisement{}, err
	}
	req.Header.Set("User-Agent", "git/2-techboss-broker")
	if err := b.authorize(ctx, req, ownerID, g, rm); err != nil {
		return Advertisement{}, err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return Advertisement{}, errs.Wrap(errs.Dependency, err, fmt.Sprintf("%s is unreachable from the server", rm.Host))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		if g.Credential == "" {
			return Advertisement{}, errs.E(errs.Dependency, "%s needs a credential (store a token with PUT /secrets/{name} and name it in \"credential\")", rm.Key())
		}
		return Advertisement{}, errs.E(errs.Dependency, "%s refused the credential %q", rm.Host, g.Credential)
	case resp.StatusCode == http.StatusNotFound:
		return Advertisement{}, errs.E(errs.Invalid, "%s: no such repository (or the credential cannot see it)", rm.Key())
	case resp.StatusCode != http.StatusOK:
		return Advertisement{}, errs.E(errs.Dependency, "%s answered HTTP %d", rm.Host, resp.StatusCode)
	}
	adv, err := ReadAdvertisement(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return Advertisement{}, errs.Wrap(errs.Dependency, err, rm.Key()+" is not a git smart-HTTP repository")
	}
	return adv, nil
}

// addrAllowed reports whether the broker may connect to ip: not loopback,
// link-local (cloud metadata) or private, unless the operator opened it.
func (b *Broker) addrAllowed(ip netip.Addr) bool { return sandbox.ServerMayDial(ip, b.cfg.Allow) }

// transport dials git hosts on the server's network, checking the address
// actually dialed, so a name that resolves (or rebinds) to a refused
// address is refused too.
func (b *Broker) transport() http.RoundTripper {
	d := sandbox.GuardedDialer(15*time.Second, b.cfg.Allow, "TECHBOSS_NETWORK_ALLOW")
	return &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true, MaxIdleConns: 32,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 5 * time.Minute}
}

// Client is the address-checked HTTP client (for forge API calls).
func (b *Broker) Client() *http.Client { return b.client }

// publicText is err's public message, or a generic one.
func publicText(err error) string {
	if e, ok := errs.Public(err); ok {
		return e.Message
	}
	return "internal error"
}

func printable(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
