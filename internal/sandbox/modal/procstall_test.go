package modal

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// A managed process whose wrapper's own output nobody reads any more (the
// server that started its exec is gone, and the exec's pipe is full) does
// not stall: the wrapper stops passing output through after its stall
// timeout, and the process runs to its end with its log kept. Run on the
// host under bubblewrap with a /tmp of its own (the wrapper keeps its log
// under /tmp/.techboss).
func TestProcWrapperDoesNotStallOnUnreadOutput(t *testing.T) {
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		if os.Getenv("TECHBOSS_REQUIRE_ALL") != "" {
			t.Fatal("bwrap is not installed (TECHBOSS_REQUIRE_ALL=1)")
		}
		t.Skip("why: bwrap (for a private /tmp) is not installed")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("why: python3 (the wrapper's interpreter) is not installed")
	}
	r, w, err := os.Pipe() // never read: fills at 64 KiB
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bwrap, append([]string{"--dev-bind", "/", "/", "--tmpfs", "/tmp", "--",
		"/bin/sh", "-c", procWrapper, "sh", procScript, strconv.Itoa(procSegMax), "4", "filler"},
		"sh", "-c", "head -c 1000000 /dev/zero; exit 3")...)
	cmd.Env = append(os.Environ(), "TECHBOSS_PROC_STALL=0.5")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("wrapper ended with %v, want the process's exit code 3", err)
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the wrapper stalled on output nobody reads (a minute, against a 0.5 s stall timeout)")
	}
}
