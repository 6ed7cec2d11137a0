package blobtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Versity is a versitygw S3 server the test owns: started on a free
// loopback port over a posix directory, so the test can kill it and start
// it again on the same port and directory.
type Versity struct {
	Endpoint string // http://127.0.0.1:PORT
	Access   string
	Secret   string
	Dir      string
	bin      string
	addr     string
	cmd      *exec.Cmd
	done     chan struct{}
}

// RequireAll reports whether TECHBOSS_REQUIRE_ALL=1: missing dependencies
// fail tests instead of skipping them.
func RequireAll() bool { return os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" }

// StartVersity starts versitygw from TECHBOSS_VERSITYGW_BIN. Without it the
// test is skipped, or fails under TECHBOSS_REQUIRE_ALL=1. The server is
// killed when the test ends.
func StartVersity(t testing.TB) *Versity {
	t.Helper()
	bin := os.Getenv("TECHBOSS_VERSITYGW_BIN")
	if bin == "" {
		if RequireAll() {
			t.Fatal("TECHBOSS_VERSITYGW_BIN is not set (required by TECHBOSS_REQUIRE_ALL=1)")
		}
		t.Skip("why: TECHBOSS_VERSITYGW_BIN is not set; no S3 server to test against")
	}
	if _, err := os.Stat(bin); err != nil {
		if RequireAll() {
			t.Fatalf("versitygw binary: %v", err)
		}
		t.Skipf("why: versitygw binary missing: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := filepath.Join(t.TempDir(), "s3")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	v := &Versity{
		Endpoint: "http://" + addr, Access: "testaccess", Secret: "testsecret-0123456789",
		Dir: dir, bin: bin, addr: addr,
	}
	v.Start(t)
	t.Cleanup(v.Stop)
	return v
}

// Start (re)starts the server on its port and directory and waits until it
// accepts connections.
func (v *Versity) Start(t testing.TB) {
	t.Helper()
	if v.cmd != nil {
		t.Fatal("versitygw already running")
	}
	cmd := exec.Command(v.bin, "--access", v.Access, "--secret", v.Secret, "--port", v.addr, "posix", v.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.CreateTemp(t.TempDir(), "versitygw-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	v.cmd = cmd
	v.done = make(chan struct{})
	go func() { // owned by Stop, which waits on done
		cmd.Wait()
		logf.Close()
		close(v.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", v.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-v.done:
			b, _ := os.ReadFile(logf.Name())
			v.cmd = nil
			t.Fatalf("versitygw exited at start: %s", b)
		case <-ctx.Done():
			v.Stop()
			t.Fatalf("versitygw not listening on %s after 20s", v.addr)
		case <-tick.C:
		}
	}
}

// Stop kills the server (SIGKILL to its process group) and waits for it.
func (v *Versity) Stop() {
	if v.cmd == nil {
		return
	}
	syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
	<-v.done
	v.cmd = nil
}

// String names the server for messages.
func (v *Versity) String() string { return fmt.Sprintf("versitygw at %s", v.Endpoint) }
