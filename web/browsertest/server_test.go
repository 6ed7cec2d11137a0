package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the module root (two levels up from this package).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// serverBinary builds ./cmd/... (the server and its sandbox helper) once per
// test binary, the way `make build` does (CGO off: the helper is static).
func serverBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "cmd", "server")); err != nil {
		need(t, "cmd/server does not exist yet")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "techboss-browsertest-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+"/", "./cmd/...")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build server: %v", buildErr)
	}
	return filepath.Join(buildDir, "server")
}

// server is the real server binary running against a fresh data dir.
type server struct {
	url   string
	admin *client
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs the server binary with the embedded defaults (SQLite,
// fs blobs, local sandboxes) and the gateway's upstream at modelURL. The
// first admin is created from the environment.
func startServer(t *testing.T, modelURL, claudeBin string, extraEnv ...string) *server {
	t.Helper()
	bin := serverBinary(t)
	port := freePort(t)
	data := t.TempDir()
	logPath := filepath.Join(data, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = data
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("PORT=%d", port),
		"TECHBOSS_DATA_DIR="+data,
		"DATABASE_URL=",
		"TECHBOSS_ADMIN_EMAIL="+aliceEmail,
		"TECHBOSS_ADMIN_PASSWORD="+alicePass,
		"TECHBOSS_SANDBOX_DRIVER=local",
		"TECHBOSS_BLOB_STORE=fs",
		"TECHBOSS_CLAUDE_CREDENTIALS=gateway",
		"TECHBOSS_CLAUDE_BIN="+claudeBin,
		"ANTHROPIC_BASE_URL="+modelURL,
		"ANTHROPIC_API_KEY=sk-test-upstream-key",
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(20 * time.Second)
		defer timer.Stop()
		select {
		case <-exited:
		case <-timer.C:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				dir := artifactsDir(t)
				_ = os.WriteFile(filepath.Join(dir, "server.log"), b, 0o644)
				t.Logf("server log: %s", filepath.Join(dir, "server.log"))
			}
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Wait for readiness: the process answers /readyz, or exits.
	ready := make(chan struct{})
	go func() {
		defer close(ready)
		for {
			select {
			case <-exited:
				return
			default:
			}
			res, err := http.Get(url + "/readyz")
			if err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return
				}
			}
			// A short pause between probes of a process that is starting.
			probe := time.NewTimer(50 * time.Millisecond)
			<-probe.C
		}
	}()
	guardT := time.NewTimer(60 * time.Second)
	defer guardT.Stop()
	select {
	case <-ready:
	case <-guardT.C:
		b, _ := os.ReadFile(logPath)
		t.Fatalf("server did not become ready in 60s; log:\n%s", b)
	}
	select {
	case err := <-exited:
		b, _ := os.ReadFile(logPath)
		t.Fatalf("server exited during start: %v; log:\n%s", err, b)
	default:
	}
	s := &server{url: url}
	s.admin = login(t, url, aliceEmail, alicePass)
	return s
}

// client is an API client with a session cookie.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func login(t *testing.T, base, email, password string) *client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &client{t: t, base: base, http: &http.Client{Jar: jar, Timeout: 60 * time.Second}}
	c.do("POST", "/auth/login", map[string]string{"email": email, "password": password}, nil)
	return c
}

// do sends a JSON request and decodes the envelope's data into out.
func (c *client) do(method, path string, body, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		c.t.Fatalf("%s %s: HTTP %d: %s", method, path, res.StatusCode, b)
	}
	if out != nil {
		var env struct{ Data json.RawMessage }
		if err := json.Unmarshal(b, &env); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
		if err := json.Unmarshal(env.Data, out); err != nil {
			c.t.Fatalf("%s %s: decode data %q: %v", method, path, env.Data, err)
		}
	}
}

// createUser makes a member account through the admin API.
func (s *server) createUser(t *testing.T, email, password string) {
	t.Helper()
	s.admin.do("POST", "/auth/users", map[string]string{"email": email, "password": password, "role": "member"}, nil)
}

var _ = strings.TrimSpace
