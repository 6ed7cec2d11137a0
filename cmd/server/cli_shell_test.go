package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

// TestCLIShellTerminal runs `techboss shell` on a real terminal (a pty
// pair; techboss is its session leader): the window size reaches the
// sandbox's terminal, a resize is passed on (SIGWINCH), Ctrl-C is a
// keystroke for the sandbox (raw mode), and the session's exit code is
// techboss's.
func TestCLIShellTerminal(t *testing.T) {
	bin := buildCLI(t)
	in, c, _ := cliServer(t, modeltest.New(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tok, err := c.CreateToken(ctx, "shell")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host"})
	if err != nil {
		t.Fatal(err)
	}
	master, slave, err := agent.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := agent.SetPTYSize(slave, 100, 30); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "shell", sb.SandboxID)
	cmd.Env = append(os.Environ(), "TECHBOSS_URL="+in.url, "TECHBOSS_TOKEN="+tok.Token, "XDG_CONFIG_HOME="+t.TempDir())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var mu sync.Mutex
	var out strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// await waits until the terminal has shown s (after what it showed before).
	from := 0
	await := func(s string) {
		t.Helper()
		for ctx.Err() == nil {
			mu.Lock()
			o := out.String()
			mu.Unlock()
			if i := strings.Index(o[from:], s); i >= 0 {
				from += i + len(s)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the terminal never showed %q:\n%s", s, out.String())
	}
	awaitRE := func(re *regexp.Regexp) string {
		t.Helper()
		for ctx.Err() == nil {
			mu.Lock()
			o := out.String()
			mu.Unlock()
			if loc := re.FindStringSubmatchIndex(o[from:]); loc != nil {
				m := o[from+loc[2] : from+loc[3]]
				from += loc[1]
				return m
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		t.Fatalf("the terminal never showed %s", re)
		return ""
	}
	send := func(s string) {
		t.Helper()
		if _, err := master.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send("echo \"size=$(stty size)\"\r")
	await("size=30 100")
	if err := agent.SetPTYSize(master, 120, 40); err != nil {
		t.Fatal(err)
	}
	// The resize travels on its own; ask until the shell sees it.
	now := regexp.MustCompile(`now=(\d+ \d+)`)
	for i := 0; ; i++ {
		send("echo \"now=$(stty size)\"\r")
		m := awaitRE(now)
		if m == "40 120" {
			break
		}
		if i == 100 {
			t.Fatalf("the sandbox's terminal is %s, never 40 120", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Ctrl-C interrupts the sandbox's foreground job, not techboss. The job
	// prints the marker itself, so it runs when ^C is sent (the echo of the
	// typed line came before the shell even started it, and a ^C then went
	// to the shell); its status 130 (128+SIGINT) shows the ^C ended it.
	send("echo SLEE\"\"PING > int.txt; tail -f int.txt\r")
	await("SLEEPING")
	send("\x03")
	send("echo alive-after-$?\r")
	await("alive-after-130")
	send("exit 4\r")
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
		t.Fatalf("techboss shell: %v, want exit 4", err)
	}
}
