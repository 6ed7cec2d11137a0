package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// started runs the server with env and returns its base URL, the log lines
// seen so far (read after stop), and a stop function that waits for run.
func start(t *testing.T, env map[string]string) (string, func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	addr := make(chan string, 1)
	logs := make(chan string, 1)
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			all.WriteString(line + "\n")
			var rec struct{ Msg, Addr string }
			if !sent && json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
				sent = true
			}
		}
		if !sent {
			close(addr)
		}
		logs <- all.String()
	}()
	a, ok := <-addr
	if !ok {
		cancel()
		err := <-done
		t.Fatalf("server did not start: %v\n%s", err, <-logs)
	}
	stop := func() string {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v", err)
		}
		return <-logs
	}
	return "http://" + strings.Replace(a, "[::]", "127.0.0.1", 1), stop
}

func exercise(t *testing.T, env map[string]string) string {
	ctx := context.Background()
	url, stop := start(t, env)
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
	url, stop := start(t, env2)
	c, _ := client.New(url)
	if _, err := c.Login(context.Background(), "admin@example.com", "another-password-2"); err == nil {
		t.Fatal("bootstrap replaced the existing admin's password")
	}
	if _, err := c.Login(context.Background(), "admin@example.com", "bootstrap-password-1"); err != nil {
		t.Fatalf("original admin password: %v", err)
	}
	stop()
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
