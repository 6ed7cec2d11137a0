package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/procfs"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/openapitest"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// sandboxInit is the techboss-sandbox-init helper built for these tests
// (the local sandbox driver needs it; `make build` puts it next to the server).
var sandboxInit string

func TestMain(m *testing.M) {
	os.Exit(sandboxtest.Main(m, &sandboxInit, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener")))
}

// instance is a server started by run in the background.
type instance struct {
	url    string
	cancel context.CancelFunc // begins shutdown without waiting
	msgs   chan string        // every log message, in order
	stop   func() string
}

// start runs the server with env; stop cancels it, waits for run to return
// nil and returns the whole log.
func start(t *testing.T, env map[string]string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		getenv := func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			switch k {
			case "TECHBOSS_SANDBOX_INIT":
				return sandboxInit
			case "TECHBOSS_CLAUDE_BIN":
				return os.Getenv(k)
			}
			return ""
		}
		done <- run(ctx, nil, getenv, strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	addr := make(chan string, 1)
	logs := make(chan string, 1)
	msgs := make(chan string, 10000)
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			all.WriteString(line + "\n")
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil {
				select {
				case msgs <- rec.Msg:
				default:
				}
				if !sent && rec.Msg == "listening" {
					addr <- rec.Addr
					sent = true
				}
			}
		}
		if !sent {
			close(addr)
		}
		close(msgs)
		logs <- all.String()
	}()
	a, ok := <-addr
	if !ok {
		cancel()
		err := <-done
		t.Fatalf("server did not start: %v\n%s", err, <-logs)
	}
	var once sync.Once
	var all string
	stop := func() string {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run returned %v", err)
			}
			all = <-logs
		})
		return all
	}
	t.Cleanup(func() { stop() })
	validateAnswers(t, a)
	return &instance{url: "http://" + a, cancel: cancel, msgs: msgs, stop: stop}
}

// validateAnswers checks every JSON answer the test's HTTP clients get
// from the server at addr against the server's own OpenAPI document
// (kin-openapi), for the rest of the test: http.DefaultClient and clients
// on http.DefaultTransport (the Go client's default) go through it.
func validateAnswers(t *testing.T, addr string) {
	t.Helper()
	res, err := http.Get("http://" + addr + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	v, err := openapitest.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var problems []error
	base := http.DefaultTransport
	http.DefaultTransport = v.Transport(base, addr, func(err error) {
		mu.Lock()
		problems = append(problems, err)
		mu.Unlock()
	})
	t.Cleanup(func() {
		http.DefaultTransport = base
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("OpenAPI: %v", p)
		}
	})
}

// waitLog blocks until the server logs msg.
func (in *instance) waitLog(t *testing.T, msg string) {
	t.Helper()
	for m := range in.msgs {
		if m == msg {
			return
		}
	}
	t.Fatalf("server never logged %q", msg)
}

func exercise(t *testing.T, env map[string]string) string {
	ctx := context.Background()
	in := start(t, env)
	url, stop := in.url, in.stop
	anon, _ := client.New(url)
	if err := anon.Ready(ctx); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	var ce *client.Error
	if _, err := anon.Me(ctx); !errors.As(err, &ce) || ce.StatusCode != 401 {
		t.Fatalf("me without auth: %v, want 401", err)
	}
	c, _ := client.New(url)
	u, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"])
	if err != nil {
		t.Fatalf("login as bootstrap admin: %v", err)
	}
	if u.Role != "admin" {
		t.Fatalf("bootstrap user role = %q, want admin", u.Role)
	}
	tok, err := c.CreateToken(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := client.New(url, client.WithToken(tok.Token))
	me, err := bc.Me(ctx)
	if err != nil || me.ID != u.ID {
		t.Fatalf("bearer me = %+v, %v", me, err)
	}
	logs := stop()
	if strings.Contains(logs, env["TECHBOSS_ADMIN_PASSWORD"]) || strings.Contains(logs, tok.Token) {
		t.Fatalf("secret in server logs")
	}
	for _, want := range []string{`"msg":"starting"`, `"msg":"shutting down"`, `"msg":"stopped"`, `"route":"/auth/login"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	return logs
}

func TestRunSQLite(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": dir,
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
	}
	exercise(t, env)
	if _, err := os.Stat(filepath.Join(dir, "techboss.db")); err != nil {
		t.Fatalf("sqlite database not in data dir: %v", err)
	}
	// A restart with a different bootstrap password does not touch the existing admin.
	env2 := map[string]string{}
	for k, v := range env {
		env2[k] = v
	}
	env2["TECHBOSS_ADMIN_PASSWORD"] = "another-password-2"
	in := start(t, env2)
	c, _ := client.New(in.url)
	if _, err := c.Login(context.Background(), "admin@example.com", "another-password-2"); err == nil {
		t.Fatal("bootstrap replaced the existing admin's password")
	}
	if _, err := c.Login(context.Background(), "admin@example.com", "bootstrap-password-1"); err != nil {
		t.Fatalf("original admin password: %v", err)
	}
	in.stop()
}

// TestGracefulShutdown starts a request, begins shutdown while the request
// body is still arriving, and checks that new connections are refused while
// the in-flight request still completes and run returns cleanly.
func TestGracefulShutdown(t *testing.T) {
	in := start(t, map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
	})
	host := strings.TrimPrefix(in.url, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"email":"admin@example.com","password":"bootstrap-password-1"}`
	// "Expect: 100-continue" makes the server answer 100 once the handler
	// starts reading the body: proof the request is in flight.
	fmt.Fprintf(conn, "POST /auth/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", host, len(body))
	br := bufio.NewReader(conn)
	cont, err := http.ReadResponse(br, nil)
	if err != nil || cont.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue, got %v %v", cont, err)
	}
	if !listeningHere(t, host) {
		t.Fatal("listeningHere does not see the server's listener")
	}
	in.cancel() // begin shutdown while the handler waits for the body
	in.waitLog(t, "listener closed; draining in-flight requests")
	// Dialling the port again would prove nothing: once it is closed, any
	// other test process on this machine may bind the same port. Ask the
	// kernel instead whether this process still listens on it.
	if listeningHere(t, host) {
		t.Fatal("the server still listens after it said the listener closed")
	}
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("in-flight request got no response: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("in-flight login: status %d, want 200", res.StatusCode)
	}
	logs := in.stop()
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Fatalf("run did not finish cleanly:\n%s", logs)
	}
}

func TestRunPostgres(t *testing.T) {
	exercise(t, map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"DATABASE_URL":         storetest.PostgresURL(t),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
	})
}

func TestRunBadConfig(t *testing.T) {
	var stderr strings.Builder
	err := run(context.Background(), []string{"-port", "http"}, func(string) string { return "" }, nil, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-port") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line naming -port", err)
	}
	err = run(context.Background(), nil, func(k string) string {
		return map[string]string{"TECHBOSS_SANDBOX_DRIVER": "kvm"}[k]
	}, nil, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "TECHBOSS_SANDBOX_DRIVER") {
		t.Fatalf("err = %v, want it to name TECHBOSS_SANDBOX_DRIVER", err)
	}
}

// listeningHere reports whether a socket of this process listens on the
// TCP address host ("127.0.0.1:port").
func listeningHere(t *testing.T, host string) bool {
	t.Helper()
	_, portStr, err := net.SplitHostPort(host)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	// The tables of this thread's network namespace, not /proc/self/net:
	// that is the main thread's, and a sandbox's Listen (earlier tests)
	// may leave the main thread in a sandbox's namespace (Go parks a
	// locked main thread instead of ending it).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fs, err := procfs.NewFS("/proc/thread-self")
	if err != nil {
		t.Fatal(err)
	}
	var inodes = map[uint64]bool{}
	for _, read := range []func() (procfs.NetTCP, error){fs.NetTCP, fs.NetTCP6} {
		lines, err := read()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, l := range lines {
			if l.St == 0x0A && l.LocalPort == port { // TCP_LISTEN
				inodes[l.Inode] = true
			}
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue // closed since the listing
		}
		var ino uint64
		if _, err := fmt.Sscanf(target, "socket:[%d]", &ino); err == nil && inodes[ino] {
			return true
		}
	}
	return false
}
