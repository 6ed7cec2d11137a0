package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// MCP servers of a run. A remote ("http") server is reached through the
// server: the CLI in the sandbox is given MCPProxyPath/<name> on its
// gateway listener, authenticated by the run's token, and the server adds
// the configured headers (with the secrets they name) and forwards to the
// real URL. So a remote server's credentials never enter the sandbox, and
// it works with network "none". A "stdio" server runs inside the sandbox:
// its env (secrets resolved) reaches only that run's CLI, and the values
// are redacted from the run's events.

// MCPProxyPath prefixes the remote MCP servers' proxy on the gateway.
const MCPProxyPath = "/llm/mcp-proxy/"

// MCPServer is one MCP server a run's agent may use. Values of Env and
// Headers may name secrets: "${secret:NAME}" is one of the user who starts
// the run (a user a sandbox is shared with names their own, never the
// owner's), "${secret:team:NAME}" one of the sandbox's team, for its
// owners and members.
type MCPServer struct {
	Type    string            `json:"type"` // stdio | http
	Command string            `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// SecretRevealer resolves a user's secrets (internal/secrets): name is
// the user's own secret, or "team:<team id>/<name>" a team's, which only
// the team's owners and members may reveal (secrets.RevealRef).
type SecretRevealer interface {
	Reveal(ctx context.Context, userID, name string) (string, error)
}

// RevealFunc is a SecretRevealer made of a function.
type RevealFunc func(ctx context.Context, userID, name string) (string, error)

// Reveal calls f.
func (f RevealFunc) Reveal(ctx context.Context, userID, name string) (string, error) {
	return f(ctx, userID, name)
}

var (
	mcpNameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	secretRefRE = regexp.MustCompile(`\$\{secret:((?:team:)?[A-Za-z0-9_.-]{1,64})\}`)
	headerRE    = regexp.MustCompile(`^[A-Za-z0-9-]{1,128}$`)
)

func validateMCP(servers map[string]MCPServer, allowed func(netip.Addr) bool) []errs.FieldError {
	var fs []errs.FieldError
	if len(servers) > 20 {
		fs = append(fs, errs.FieldError{Field: "mcp_servers", Reason: "more than 20 servers"})
	}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		sv, f := servers[name], "mcp_servers."+name
		if !mcpNameRE.MatchString(name) || name == "techboss" {
			fs = append(fs, errs.FieldError{Field: f, Reason: `a name of A-Z a-z 0-9 _ - (not "techboss")`})
			continue
		}
		switch sv.Type {
		case "stdio":
			if sv.Command == "" || strings.ContainsRune(sv.Command, 0) {
				fs = append(fs, errs.FieldError{Field: f + ".command", Reason: "required for a stdio server"})
			}
			for k := range sv.Env {
				if !envNameRE.MatchString(k) {
					fs = append(fs, errs.FieldError{Field: f + ".env." + k, Reason: "not a variable name"})
				}
			}
			if sv.URL != "" || len(sv.Headers) > 0 {
				fs = append(fs, errs.FieldError{Field: f + ".url", Reason: "only for an http server"})
			}
		case "http":
			u, err := url.Parse(sv.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
				fs = append(fs, errs.FieldError{Field: f + ".url", Reason: "must be an http(s) URL without user info"})
			} else if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !allowed(ip) {
				fs = append(fs, errs.FieldError{Field: f + ".url", Reason: "a local, link-local or private address (the operator may open a range with TECHBOSS_NETWORK_ALLOW)"})
			}
			for k := range sv.Headers {
				if !headerRE.MatchString(k) || strings.EqualFold(k, "Host") {
					fs = append(fs, errs.FieldError{Field: f + ".headers." + k, Reason: "not a header name"})
				}
			}
			if sv.Command != "" || len(sv.Args) > 0 || len(sv.Env) > 0 {
				fs = append(fs, errs.FieldError{Field: f + ".command", Reason: "only for a stdio server"})
			}
		default:
			fs = append(fs, errs.FieldError{Field: f + ".type", Reason: "must be stdio or http"})
		}
	}
	return fs
}

// remoteMCP is a remote server as the proxy reaches it.
type remoteMCP struct {
	url     *url.URL
	headers http.Header
}

// resolveMCP resolves the secrets the servers name, as userID (who starts
// the run) in a sandbox of teamID ("" for none), and returns the
// --mcp-config servers for the CLI, the remote servers for the proxy, and
// the revealed values (to redact from the run's events).
func (s *Service) resolveMCP(ctx context.Context, userID, teamID string, servers map[string]MCPServer, base, token string) (map[string]any, map[string]remoteMCP, []string, error) {
	var revealed []string
	var fs []errs.FieldError
	var failure error
	resolve := func(field, v string) string {
		return secretRefRE.ReplaceAllStringFunc(v, func(m string) string {
			name := secretRefRE.FindStringSubmatch(m)[1]
			if s.secrets == nil {
				fs = append(fs, errs.FieldError{Field: field, Reason: "this server has no secret store"})
				return ""
			}
			ref := name
			if n, ok := strings.CutPrefix(name, "team:"); ok {
				if teamID == "" {
					fs = append(fs, errs.FieldError{Field: field, Reason: "the sandbox belongs to no team, so it has no team secret " + n})
					return ""
				}
				ref = "team:" + teamID + "/" + n
			}
			val, err := s.secrets.Reveal(ctx, userID, ref)
			if errs.KindOf(err) == errs.NotFound {
				fs = append(fs, errs.FieldError{Field: field, Reason: "no secret named " + name})
				return ""
			}
			if err != nil {
				// The store is down (503) or the value cannot be opened:
				// the caller's error, not a field's.
				if failure == nil {
					failure = err
				}
				return ""
			}
			revealed = append(revealed, val)
			return val
		})
	}
	cfg := map[string]any{}
	remotes := map[string]remoteMCP{}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		sv, f := servers[name], "mcp_servers."+name
		switch sv.Type {
		case "stdio":
			env := map[string]string{}
			for k, v := range sv.Env {
				env[k] = resolve(f+".env."+k, v)
			}
			cfg[name] = map[string]any{"type": "stdio", "command": sv.Command, "args": sv.Args, "env": env}
		case "http":
			u, _ := url.Parse(sv.URL)
			h := http.Header{}
			for k, v := range sv.Headers {
				h.Set(k, resolve(f+".headers."+k, v))
			}
			remotes[name] = remoteMCP{url: u, headers: h}
			cfg[name] = map[string]any{"type": "http", "url": base + MCPProxyPath + name,
				"headers": map[string]string{"Authorization": "Bearer " + token}}
		}
	}
	if failure != nil {
		return nil, nil, nil, failure
	}
	if err := errs.Fields(fs); err != nil {
		return nil, nil, nil, err
	}
	return cfg, remotes, revealed, nil
}

// MCPProxyHandler serves MCPProxyPath: a run's remote MCP servers, with
// their configured headers added here.
func (s *Service) MCPProxyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.runCaller(w, r)
		if !ok {
			return
		}
		rest := strings.TrimPrefix(r.URL.Path, MCPProxyPath)
		name, sub, _ := strings.Cut(rest, "/")
		s.mu.Lock()
		j := s.jobs[p.RunID]
		s.mu.Unlock()
		var rm remoteMCP
		if j != nil {
			j.mu.Lock()
			rm, ok = j.mcpRemote[name]
			j.mu.Unlock()
		}
		if j == nil || !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"not_found","message":"no such MCP server for this run"}`))
			return
		}
		proxy := &httputil.ReverseProxy{
			Transport: s.mcpProxyTransport,
			Rewrite: func(pr *httputil.ProxyRequest) {
				target := *rm.url
				if sub != "" {
					target.Path = strings.TrimSuffix(target.Path, "/") + "/" + sub
				}
				target.RawQuery = pr.In.URL.RawQuery
				pr.Out.URL = &target
				pr.Out.Host = target.Host
				pr.Out.Header.Del("Authorization") // the run token stays here
				for k, vs := range rm.headers {
					pr.Out.Header[k] = vs
				}
			},
			FlushInterval: -1, // MCP answers may stream (SSE)
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				s.log.Warn("mcp proxy", "server", name, "run_id", p.RunID, "err", err)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadGateway)
				b, _ := json.Marshal(map[string]string{"code": "bad_gateway",
					"message": fmt.Sprintf("MCP server %s (%s) is unreachable: %v", name, rm.url.Host, err)})
				_, _ = w.Write(b)
			},
		}
		proxy.ServeHTTP(w, r)
	})
}

// The proxy runs on the server's network, not the sandbox's: a run must
// not turn it into a way to reach the server's own services, the cloud
// metadata address or the private network. These are refused unless the
// operator opens a range (Config.MCPAllow, from TECHBOSS_NETWORK_ALLOW),
// checked on the address actually dialed, so a name that resolves (or
// rebinds) to one of them is refused too.
// mcpAddrAllowed reports whether the proxy may connect to ip.
func (s *Service) mcpAddrAllowed(ip netip.Addr) bool {
	return sandbox.ServerMayDial(ip, s.cfg.MCPAllow)
}

// mcpTransport dials remote MCP servers, refusing addresses that
// mcpAddrAllowed does not allow.
func (s *Service) mcpTransport() http.RoundTripper {
	d := sandbox.GuardedDialer(10*time.Second, s.cfg.MCPAllow, "TECHBOSS_NETWORK_ALLOW")
	return &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true, MaxIdleConns: 64,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
}
