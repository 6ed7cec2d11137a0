package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/teams"
)

// TestRemoteMCPServer: the agent calls a tool of a remote MCP server whose
// credential is one of the owner's secrets. The server receives it; the
// sandbox never holds it (checked from inside the sandbox while the call
// is in flight: no process's env or argv, no workspace file), and neither
// do the run's events or its stored record.
func TestRemoteMCPServer(t *testing.T) {
	// The test's remote server is on loopback, which the operator opens.
	e := newEnv(t, envOpts{mcpAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	sb := e.sandbox("alice")
	ctx := context.Background()
	const secret = "mcp-remote-secret-0123456789"
	// Secrets belong to user rows (deleted with them).
	for _, id := range []string{"alice", "bob"} {
		if err := e.db.CreateUser(ctx, auth.User{ID: id, Email: id + "@example.com", Role: auth.RoleMember, CreatedAt: time.Now()}, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.secrets.Put(ctx, "alice", "remote_token", secret); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		auth  string
		leaks string
	)
	srv := mcp.NewServer(&mcp.Implementation{Name: "remote", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "whoami", Description: "Says who is calling."}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		// The pattern does not match itself in grep's own argv.
		out := e.exec("alice", sb.ID, "sh", "-c", "grep -l -a -r -e 'mcp-remote-secre[t]' /proc/[0-9]*/environ /proc/[0-9]*/cmdline /workspace 2>/dev/null; true")
		mu.Lock()
		auth, leaks = req.Extra.Header.Get("Authorization"), out
		mu.Unlock()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "remote tool reached"}}}, nil, nil
	})
	remote := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*nethttp.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true}))
	defer remote.Close()

	e.model.Reset(modeltest.ToolUse("Calling the remote tool.", "mcp__remote__whoami", map[string]any{}), modeltest.Text("done"))
	servers := map[string]agent.MCPServer{"remote": {Type: "http", URL: remote.URL, Headers: map[string]string{"Authorization": "Bearer ${secret:remote_token}"}}}
	r, evs := e.do("alice", sb.ID, "call the remote tool", agent.Options{NewSession: true, MCPServers: servers})
	if r.Status != agent.Succeeded {
		t.Fatalf("run %+v: %v", r, types(evs))
	}
	res := find(evs, agent.TypeToolResult)
	if len(res) != 1 || !strings.Contains(decode[agent.ToolResultData](t, res[0]).Content, "remote tool reached") {
		t.Fatalf("tool results %v (events %v)", res, types(evs))
	}
	mu.Lock()
	defer mu.Unlock()
	if auth != "Bearer "+secret {
		t.Errorf("the remote server got Authorization %q, want the secret", auth)
	}
	if strings.TrimSpace(leaks) != "" {
		t.Errorf("the secret is readable inside the sandbox: %s", leaks)
	}
	for _, ev := range evs {
		if strings.Contains(string(ev.Data), secret) || strings.Contains(ev.Raw, secret) {
			t.Errorf("%s event holds the secret", ev.Type)
		}
	}
	stored, _ := e.svc.Get(ctx, "alice", r.ID)
	if b, _ := json.Marshal(stored); strings.Contains(string(b), secret) || len(stored.Options.MCPServerNames) != 1 {
		t.Errorf("stored run %s", b)
	}

	// A secret the owner does not have, and one of another user: 422.
	if err := e.secrets.Put(ctx, "bob", "bobs_token", "bob-secret-value"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"missing", "bobs_token"} {
		servers := map[string]agent.MCPServer{"remote": {Type: "http", URL: remote.URL, Headers: map[string]string{"Authorization": "Bearer ${secret:" + name + "}"}}}
		_, err := e.svc.Start(ctx, "alice", sb.ID, "x", agent.Options{NewSession: true, MCPServers: servers})
		var fe *errs.Error
		if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != "mcp_servers.remote.headers.Authorization" {
			t.Errorf("secret %s: %v, want a field error", name, err)
		}
	}
	// A user the sandbox is shared with starts a run: a secret named is
	// theirs, never the owner's (else an operator could send the owner's
	// token to a server of their choosing).
	for _, c := range []struct{ by, name string }{{"bob", "remote_token"}, {"alice", "team:remote_token"}} {
		servers := map[string]agent.MCPServer{"remote": {Type: "http", URL: remote.URL, Headers: map[string]string{"Authorization": "Bearer ${secret:" + c.name + "}"}}}
		_, err := e.svc.Start(ctx, "alice", sb.ID, "x", agent.Options{NewSession: true, MCPServers: servers, StartedBy: c.by})
		var fe *errs.Error
		if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != "mcp_servers.remote.headers.Authorization" {
			t.Errorf("%s names ${secret:%s} in alice's sandbox (no team): %v, want a field error", c.by, c.name, err)
		}
	}
	// Bad server specs.
	for field, sv := range map[string]agent.MCPServer{
		"mcp_servers.x.type":    {Type: "grpc"},
		"mcp_servers.x.url":     {Type: "http", URL: "ftp://example.com"},
		"mcp_servers.x.command": {Type: "stdio"},
	} {
		_, err := e.svc.Start(ctx, "alice", sb.ID, "x", agent.Options{MCPServers: map[string]agent.MCPServer{"x": sv}})
		var fe *errs.Error
		if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != field {
			t.Errorf("%+v: %v, want a field error naming %s", sv, err, field)
		}
	}
}

// TestTeamMCPSecret: in a team's sandbox, "${secret:team:NAME}" is the
// team's secret for the team's owners and members who start a run; a
// viewer's run may not name it.
func TestTeamMCPSecret(t *testing.T) {
	e := newEnv(t, envOpts{mcpAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	ctx := context.Background()
	for _, id := range []string{"alice", "bob", "carol"} {
		if err := e.db.CreateUser(ctx, auth.User{ID: id, Email: id + "@example.com", Role: auth.RoleMember, CreatedAt: time.Now()}, "x"); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if err := e.db.CreateTeam(ctx, teams.Team{ID: "tm_mcp", Name: "MCP", CreatedBy: "alice", CreatedAt: now}, teams.Member{TeamID: "tm_mcp", UserID: "alice", Role: teams.RoleOwner, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for id, role := range map[string]teams.Role{"bob": teams.RoleMember, "carol": teams.RoleViewer} {
		if err := e.db.PutMember(ctx, teams.Member{TeamID: "tm_mcp", UserID: id, Role: role, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	const secret = "team-mcp-secret-0123456789"
	if err := e.secrets.Put(ctx, secrets.TeamOwner("tm_mcp"), "remote_token", secret); err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got string
	)
	srv := mcp.NewServer(&mcp.Implementation{Name: "remote", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "whoami", Description: "Says who is calling."}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		mu.Lock()
		got = req.Extra.Header.Get("Authorization")
		mu.Unlock()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "remote tool reached"}}}, nil, nil
	})
	remote := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*nethttp.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true}))
	defer remote.Close()
	sb := e.sandboxWith("alice", sandbox.Spec{ImageBase: "host", Team: "tm_mcp"})
	servers := map[string]agent.MCPServer{"remote": {Type: "http", URL: remote.URL, Headers: map[string]string{"Authorization": "Bearer ${secret:team:remote_token}"}}}

	_, err := e.svc.Start(ctx, "alice", sb.ID, "x", agent.Options{NewSession: true, MCPServers: servers, StartedBy: "carol"})
	var fe *errs.Error
	if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != "mcp_servers.remote.headers.Authorization" {
		t.Fatalf("a viewer's run names the team's secret: %v, want a field error", err)
	}
	e.model.Reset(modeltest.ToolUse("Calling the remote tool.", "mcp__remote__whoami", map[string]any{}), modeltest.Text("done"))
	r, evs := e.do("alice", sb.ID, "call the remote tool", agent.Options{NewSession: true, MCPServers: servers, StartedBy: "bob"})
	if r.Status != agent.Succeeded {
		t.Fatalf("run %+v: %v", r, types(evs))
	}
	mu.Lock()
	defer mu.Unlock()
	if got != "Bearer "+secret {
		t.Errorf("the remote server got Authorization %q, want the team's secret", got)
	}
	for _, ev := range evs {
		if strings.Contains(string(ev.Data), secret) || strings.Contains(ev.Raw, secret) {
			t.Errorf("%s event holds the secret", ev.Type)
		}
	}
}

// stdioServer is a minimal MCP server over stdio (newline-delimited
// JSON-RPC), run by python3 inside the sandbox: one tool, "check", that
// says whether its TOKEN env holds the value it was configured with.
const stdioServer = `import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    m, r = msg.get("method"), None
    if m == "initialize":
        r = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "files", "version": "1"}}
    elif m == "tools/list":
        r = {"tools": [{"name": "check", "description": "Checks the token.", "inputSchema": {"type": "object", "properties": {}}}]}
    elif m == "tools/call":
        ok = os.environ.get("TOKEN") == os.environ.get("EXPECT_PREFIX", "") + "stdio-secret-value-42"
        r = {"content": [{"type": "text", "text": "token-ok" if ok else "token-missing"}]}
    else:
        r = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": r}) + "\n")
    sys.stdout.flush()
`

// TestStdioMCPServer: a stdio MCP server runs inside the sandbox with the
// secret its env names; the agent calls its tool, and the value is in no
// event.
func TestStdioMCPServer(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("why: python3 (the test's stdio MCP server, run from the host image) is not installed")
	}
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	ctx := context.Background()
	if err := e.db.CreateUser(ctx, auth.User{ID: "alice", Email: "alice@example.com", Role: auth.RoleMember, CreatedAt: time.Now()}, "x"); err != nil {
		t.Fatal(err)
	}
	const secret = "stdio-secret-value-42"
	if err := e.secrets.Put(ctx, "alice", "files_token", secret); err != nil {
		t.Fatal(err)
	}
	e.exec("alice", sb.ID, "sh", "-c", "cat > /workspace/mcp_server.py <<'PY'\n"+stdioServer+"PY\n")
	e.model.Reset(modeltest.ToolUse("Checking.", "mcp__files__check", map[string]any{}), modeltest.Text("done"))
	r, evs := e.do("alice", sb.ID, "check the token", agent.Options{NewSession: true, MCPServers: map[string]agent.MCPServer{
		"files": {Type: "stdio", Command: "python3", Args: []string{"/workspace/mcp_server.py"}, Env: map[string]string{"TOKEN": "${secret:files_token}"}},
	}})
	if r.Status != agent.Succeeded {
		t.Fatalf("run %+v: %v", r, types(evs))
	}
	res := find(evs, agent.TypeToolResult)
	if len(res) != 1 || !strings.Contains(decode[agent.ToolResultData](t, res[0]).Content, "token-ok") {
		t.Fatalf("tool results %v", res)
	}
	for _, ev := range evs {
		if strings.Contains(string(ev.Data), secret) || strings.Contains(ev.Raw, secret) {
			t.Errorf("%s event holds the secret", ev.Type)
		}
	}
}

// TestMCPProxyRefusesLocalAddresses: the remote MCP proxy runs on the
// server's network, so a run may not point it at the server's loopback,
// the metadata address or a private range: an address literal is refused
// at start, and a name that resolves to one is refused when dialed (the
// server there never sees a request).
func TestMCPProxyRefusesLocalAddresses(t *testing.T) {
	e := newEnv(t, envOpts{})
	sb := e.sandbox("alice")
	ctx := context.Background()
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:5432/", "http://10.1.2.3/mcp", "http://[::1]:80/"} {
		_, err := e.svc.Start(ctx, "alice", sb.ID, "x", agent.Options{MCPServers: map[string]agent.MCPServer{"m": {Type: "http", URL: u}}})
		var fe *errs.Error
		if !errors.As(err, &fe) || len(fe.Fields) == 0 || fe.Fields[0].Field != "mcp_servers.m.url" {
			t.Errorf("%s: %v, want a field error naming mcp_servers.m.url", u, err)
		}
	}
	var hits atomic.Int64
	local := httptest.NewServer(nethttp.HandlerFunc(func(nethttp.ResponseWriter, *nethttp.Request) { hits.Add(1) }))
	defer local.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(local.URL, "http://"))
	e.model.Reset(modeltest.ToolUse("Calling.", "mcp__inner__whoami", map[string]any{}), modeltest.Text("done"))
	r, evs := e.do("alice", sb.ID, "call it", agent.Options{NewSession: true, MCPServers: map[string]agent.MCPServer{
		"inner": {Type: "http", URL: "http://localhost:" + port + "/mcp"}}})
	if hits.Load() != 0 {
		t.Errorf("the proxy reached a loopback service %d times", hits.Load())
	}
	res := find(evs, agent.TypeToolResult)
	if r.Status != agent.Succeeded || len(res) != 1 || !decode[agent.ToolResultData](t, res[0]).IsError {
		t.Errorf("run %s, tool results %v: want the call to fail", r.Status, res)
	}
}
