package local

import (
	"bytes"
	"errors"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox"
)

// readPTYUntil reads p until its output contains want.
func readPTYUntil(t *testing.T, p sandbox.PTY, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 64<<10)
	for !bytes.Contains(got, []byte(want)) {
		n, err := p.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read before %q: %v; got %q", want, err, got)
		}
	}
	return string(got)
}

func ptyType(t *testing.T, p sandbox.PTY, s string) {
	t.Helper()
	if _, err := p.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// TestPTYSurvivesDriverRestart: a terminal session lives in the sandbox's
// agent, so a new driver (a server restart) attaches to it again. The
// shell runs without capabilities, as an exec does.
func TestPTYSurvivesDriverRestart(t *testing.T) {
	dir := t.TempDir()
	d1 := newTestDriver(t, dir)
	ref := create(t, d1, sandbox.Spec{})
	p, err := d1.AttachPTY(testCtx(t), ref, sandbox.PTYRequest{Cols: 80, Rows: 24, Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	ptyType(t, p, "X=1\"\"7; grep -E 'CapEff|NoNewPrivs' /proc/self/status; echo SE\"\"T\r")
	out := readPTYUntil(t, p, "SET\r\n")
	if !strings.Contains(out, "CapEff:\t0000000000000000") || !strings.Contains(out, "NoNewPrivs:\t1") {
		t.Errorf("the shell's privileges: %q", out)
	}
	id := p.SessionID()
	_ = p.Close()

	d2 := newTestDriver(t, dir)
	if alive, err := d2.Recover(testCtx(t), ref); err != nil || !alive {
		t.Fatalf("Recover: %v %v", alive, err)
	}
	p2, err := d2.AttachPTY(testCtx(t), ref, sandbox.PTYRequest{SessionID: id, Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	readPTYUntil(t, p2, "SET\r\n")
	ptyType(t, p2, "echo X=$X\r")
	readPTYUntil(t, p2, "X=17\r\n")
}

// TestPTYSlowViewer: a viewer that stops reading does not make the agent
// buffer without limit, nor hold up the shell or another viewer: it is
// cut (ErrPTYLagged) after a bounded amount, and may attach again.
func TestPTYSlowViewer(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	slow, err := d.AttachPTY(testCtx(t), ref, sandbox.PTYRequest{Cols: 80, Rows: 24, Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	attach := func() sandbox.PTY {
		p, err := d.AttachPTY(testCtx(t), ref, sandbox.PTYRequest{SessionID: slow.SessionID()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	fast := attach()
	const total = 64 << 20
	ptyType(t, fast, "head -c 67108864 /dev/zero | tr '\\0' x; echo; echo DO\"\"NE\r")
	// The fast viewer reads everything (re-attaching should it fall behind
	// on a busy machine: the end is in the scrollback).
	buf := make([]byte, 256<<10)
	var tail []byte
	for done := false; !done; {
		n, err := fast.Read(buf)
		tail = append(tail, buf[:n]...)
		if len(tail) > 64 {
			tail = tail[len(tail)-64:]
		}
		done = bytes.Contains(tail, []byte("DONE\r\n"))
		if errors.Is(err, sandbox.ErrPTYLagged) {
			_ = fast.Close()
			fast = attach()
		} else if err != nil {
			t.Fatal(err)
		}
	}
	_ = fast.Close()
	// The slow one gets what was on its way, then the cut.
	var got int
	for {
		n, err := slow.Read(buf)
		got += n
		if err != nil {
			if !errors.Is(err, sandbox.ErrPTYLagged) {
				t.Fatalf("slow viewer: %v after %d bytes, want ErrPTYLagged", err, got)
			}
			break
		}
	}
	if got >= total {
		t.Fatalf("the slow viewer got %d bytes: everything was buffered for it", got)
	}
	t.Logf("the slow viewer got %d of %d bytes before the cut", got, total)
	again := attach()
	defer again.Close()
	readPTYUntil(t, again, "DONE\r\n")
}

// TestChildSignals: what the agent starts, an exec or a terminal's shell,
// hands its children no blocked or ignored signal, so a ^C or a run's
// cancel (SIGINT) reaches them. Go resets only the signals it handles in
// a child, not ignored ones, and a child inherits the forking thread's
// mask (the spawner is a locked thread of its own).
func TestChildSignals(t *testing.T) {
	// What the server's parent ignored must not reach the sandbox's
	// commands: a server started in the background by a script has SIGINT
	// ignored (Go keeps an inherited SIG_IGN of SIGINT and SIGHUP, and of
	// signals 32 and 33, which GNU make ignores for the commands it runs).
	// Ignored here, so the check does not depend on how the tests ran.
	signal.Ignore(syscall.SIGINT)
	defer signal.Reset(syscall.SIGINT)
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	const none = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
	var out bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"}, Stdout: &out})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %+v %v", st, err)
	}
	if out.String() != none {
		t.Errorf("an exec's signal masks: got %q, want %q", out.String(), none)
	}
	// The shell sets its own (it ignores SIGQUIT, SIGTERM and the job
	// control signals), and gives a job what it was given.
	p, err := d.AttachPTY(testCtx(t), ref, sandbox.PTYRequest{Cols: 80, Rows: 24, Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ptyType(t, p, "grep -E '^Sig(Blk|Ign):' /proc/self/status; echo DO\"\"NE\r")
	got := readPTYUntil(t, p, "DONE\r\n")
	if want := strings.ReplaceAll(none, "\n", "\r\n"); !strings.Contains(got, want) {
		t.Errorf("a terminal job's signal masks: got %q, want %q", got, want)
	}
}
