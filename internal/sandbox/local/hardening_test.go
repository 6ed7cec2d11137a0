package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Attacks from issue 14. TestExecOOMKilledChild, TestAgentThreadsBounded
// and TestExecPidsLimitError failed on the driver before their fixes;
// TestForkBomb and TestExecCancelKillsProcessGroup pin down containment
// that already held (the agent kills the command's process group).

// TestExecOOMKilledChild: the OOM killer takes a child of the exec's
// command, not the command itself; the exec still reports oom_killed.
func TestExecOOMKilledChild(t *testing.T) {
	d := newTestDriver(t, "")
	if d.cgMode == cgroupNone {
		t.Skip("no cgroups on this host")
	}
	ref := create(t, d, sandbox.Spec{MemoryMB: 64})
	// The inner shell holds the string and dies; the outer one reports it.
	r := sh(t, d, ref, `sh -c 'x=$(head -c 400000000 /dev/zero | tr "\0" a); echo ${#x}'; echo status $?`)
	if r.st.Signal != "" || r.st.Code != 0 {
		t.Fatalf("got %+v (stdout %q, stderr %q), want the outer shell to exit 0", r.st, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "status 137") {
		t.Fatalf("got stdout %q, want the inner shell killed (status 137)", r.stdout)
	}
	if !r.st.OOMKilled {
		t.Errorf("got %+v, want OOMKilled: a process of the exec was OOM-killed", r.st)
	}
	// The next exec, with no OOM kill of its own, reports none.
	if r := sh(t, d, ref, "echo ok"); r.st.OOMKilled || r.stdout != "ok\n" {
		t.Errorf("after the OOM kill: got %+v %q, want no OOM kill", r.st, r.stdout)
	}
}

// lineWaiter is an io.Writer that closes seen when a line equal to want
// has been written.
type lineWaiter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newLineWaiter(want string) *lineWaiter {
	return &lineWaiter{want: want, seen: make(chan struct{})}
}

func (w *lineWaiter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	for _, l := range strings.Split(w.buf.String(), "\n") {
		if l == w.want {
			w.once.Do(func() { close(w.seen) })
		}
	}
	return len(b), nil
}

func (w *lineWaiter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// blockingStdin is a stdin that gives the command nothing until the test
// ends: `read` blocks on it without using a process.
func blockingStdin(t *testing.T) io.Reader {
	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.Close() })
	return pr
}

// waitEcho runs `echo alive` until it works or the deadline passes and
// returns how many tries it took.
func waitEcho(t *testing.T, d *Driver, ref sandbox.Ref, deadline time.Time) int {
	t.Helper()
	var last string
	for i := 1; ; i++ {
		var out, errb bytes.Buffer
		st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"echo", "alive"}, Stdout: &out, Stderr: &errb})
		if err == nil && st.Code == 0 && out.String() == "alive\n" {
			return i
		}
		last = out.String() + errb.String()
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo alive failed %d times, last: %+v %s", i, st, last)
		}
	}
}

// TestForkBomb runs a real fork bomb under pids_limit 64 for two seconds:
// the agent survives it, cancelling the exec kills the bomb's whole
// process group, and the sandbox works again right after.
func TestForkBomb(t *testing.T) {
	d := newTestDriver(t, "")
	if d.cgMode == cgroupNone {
		t.Skip("no cgroups on this host")
	}
	ref := create(t, d, sandbox.Spec{PidsLimit: 64})
	before := len(sandboxPids(t, d, ref))
	agentPid, err := d.ping(testCtx(t), &d.sbs[string(ref)].st)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	// `read` (a builtin) keeps the exec running while the bomb rages in
	// the background; the bomb is in the exec's process group. It is lit
	// from a subshell: a shell whose own fork fails at the pids limit
	// exits (dash, code 2), and the exec must not end that way.
	w := newLineWaiter("lit")
	start := time.Now()
	bombErr := make(chan error, 1)
	var bombWG sync.WaitGroup
	defer bombWG.Wait()
	defer cancel()
	bombWG.Go(func() {
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{
			Argv:  []string{"sh", "-c", `echo lit; (bomb() { bomb | bomb & }; bomb) & read x`},
			Stdin: blockingStdin(t), Stdout: w, Stderr: io.Discard,
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("bomb exec: got %+v, %v; want the deadline to cancel it", st, err)
		} else {
			err = nil
		}
		bombErr <- err
	})
	select {
	case <-w.seen:
	case err := <-bombErr:
		t.Fatalf("bomb exec ended before lighting it: %v", err)
	}
	// Execs meanwhile either run or fail cleanly: the agent answers them all.
	var wg sync.WaitGroup
	var refused atomic.Int32
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"echo", "x"}, Stdout: io.Discard})
			if err != nil && errs.KindOf(err) != errs.TooMany && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("exec during the bomb: %v", err)
			}
			if errs.KindOf(err) == errs.TooMany {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := <-bombErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of 24 execs during the bomb refused for lack of PIDs", refused.Load())
	// The bomb did hit the limit (pids.events counts refused forks).
	s, _ := d.get(ref)
	ev, err := os.ReadFile(filepath.Join(s.st.Cgroups.dir("pids"), "pids.events"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(ev)); len(f) < 2 || f[0] != "max" || f[1] == "0" {
		t.Fatalf("pids.events %q: the bomb never reached pids_limit", ev)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("cancelling the bomb took %v", took)
	}
	if !d.sbs[string(ref)].st.alive() {
		t.Fatal("sandbox died under the fork bomb")
	}
	if pid, err := d.ping(testCtx(t), &d.sbs[string(ref)].st); err != nil || pid != agentPid {
		t.Fatalf("agent after the bomb: pid %d, %v; want the same agent (pid %d) answering", pid, err, agentPid)
	}
	deadline := time.Now().Add(30 * time.Second)
	tries := waitEcho(t, d, ref, deadline)
	t.Logf("echo alive after %d tries", tries)
	// The bomb died with its exec: nothing of it is left in the sandbox
	// once the sandbox's init has reaped the dead.
	for {
		n := len(sandboxPids(t, d, ref))
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d processes after the bomb, want %d as before it", n, before)
		}
		waitEcho(t, d, ref, deadline)
	}
}

// agentThreads counts the threads of the sandbox's agent.
func agentThreads(t testing.TB, d *Driver, ref sandbox.Ref) int {
	t.Helper()
	s, _ := d.get(ref)
	nsPid, err := d.ping(testCtx(t), &s.st)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range sandboxPids(t, d, ref) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		var ns []string
		threads := 0
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				switch k {
				case "NSpid":
					ns = strings.Fields(v)
				case "Threads":
					threads, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
		}
		if len(ns) > 0 && ns[len(ns)-1] == strconv.Itoa(nsPid) {
			return threads
		}
	}
	t.Fatal("agent not found in the sandbox's cgroup")
	return 0
}

// TestAgentThreadsBounded: the agent's threads count against the pids
// limit, and it must never need a new one while a bomb holds every PID
// (the Go runtime aborts when it cannot create a thread). Many commands
// running at once must not cost it a thread each.
func TestAgentThreadsBounded(t *testing.T) {
	d := newTestDriver(t, "")
	if d.cgMode == cgroupNone {
		t.Skip("no cgroups on this host")
	}
	ref := create(t, d, sandbox.Spec{PidsLimit: 128})
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	const n = 48
	started := make([]*lineWaiter, n)
	for i := range started {
		started[i] = newLineWaiter("up")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{
				Argv:  []string{"sh", "-c", "echo up; read x"},
				Stdin: blockingStdin(t), Stdout: started[i],
			})
		}()
	}
	for _, w := range started {
		<-w.seen
	}
	// bubblewrap's two processes share the overhead with the agent.
	got, max := agentThreads(t, d, ref), pidsOverhead-2
	t.Logf("agent threads: %d", got)
	if got > max {
		t.Errorf("agent has %d threads with %d commands running, want at most %d (the pids overhead)", got, n, max)
	}
}

// TestExecCancelKillsProcessGroup: cancelling an exec kills what it
// started in the background too; an exec that ends by itself leaves its
// background jobs running.
func TestExecCancelKillsProcessGroup(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	countSleeps := `n=0; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && n=$((n+1)); done; echo $n`

	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	w := newLineWaiter("started")
	done := make(chan error, 1)
	wg.Go(func() {
		_, err := d.Exec(ctx, ref, sandbox.ExecRequest{
			Argv:  []string{"sh", "-c", `sleep 1001 & sleep 1002 & echo started; read x`},
			Stdin: blockingStdin(t), Stdout: w,
		})
		done <- err
	})
	select {
	case <-w.seen:
	case err := <-done:
		t.Fatalf("exec ended early: %v, %q", err, w.String())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled exec: got %v, want context.Canceled", err)
	}
	if got := mustSh(t, d, ref, countSleeps); got != "0\n" {
		t.Errorf("after cancel: got %q sleep processes, want 0", got)
	}

	// A command that ends normally: its background job is a feature.
	mustSh(t, d, ref, `sleep 1003 >/dev/null 2>&1 & echo bg`)
	if got := mustSh(t, d, ref, countSleeps); got != "1\n" {
		t.Errorf("after a normal exit: got %q sleep processes, want the 1 background job", got)
	}
}

// TestExecPidsLimitError: an exec that cannot start because every PID of
// the sandbox is taken fails with a clear, retryable error.
func TestExecPidsLimitError(t *testing.T) {
	d := newTestDriver(t, "")
	if d.cgMode == cgroupNone {
		t.Skip("no cgroups on this host")
	}
	ref := create(t, d, sandbox.Spec{PidsLimit: 16})
	s, _ := d.get(ref)
	pidsDir := s.st.Cgroups.dir("pids")
	t.Cleanup(func() {
		if t.Failed() { // what the agent said before it went away
			b, _ := os.ReadFile(filepath.Join(s.st.Dir, "sandbox.log"))
			t.Logf("sandbox.log:\n%s", b)
		}
	})
	readInt := func(name string) int {
		b, err := os.ReadFile(filepath.Join(pidsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %q", name, b)
		}
		return n
	}
	// The filler takes every PID left, then waits on a builtin holding its
	// own: nothing in the sandbox exits and frees one.
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	w := newLineWaiter("full")
	done := make(chan error, 1)
	wg.Go(func() {
		_, err := d.Exec(ctx, ref, sandbox.ExecRequest{
			// dash exits when fork fails, hence the subshell; the sleep
			// after it takes the PID the subshell freed.
			Argv:  []string{"sh", "-c", `(while :; do sleep 1000 & done) 2>/dev/null; sleep 1000 & echo full; read x`},
			Stdin: blockingStdin(t), Stdout: w, Stderr: io.Discard,
		})
		done <- err
	})
	select {
	case <-w.seen:
	case err := <-done:
		t.Fatalf("filler ended early: %v, %q", err, w.String())
	}
	if cur, max := readInt("pids.current"), readInt("pids.max"); cur < max {
		t.Fatalf("filler left room: pids.current %d, pids.max %d", cur, max)
	}
	var errb bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}, Stderr: &errb})
	if err == nil {
		t.Fatalf("exec with every PID taken: got %+v, stderr %q, want an error", st, errb.String())
	}
	if k := errs.KindOf(err); k != errs.TooMany {
		t.Errorf("got %v (kind %v), want kind %v", err, k, errs.TooMany)
	}
	if e, ok := errs.Public(err); !ok || !strings.Contains(e.Message, "pids_limit") {
		t.Errorf("got %q, want a public message naming pids_limit", err)
	}
	cancel()
	<-done
	waitEcho(t, d, ref, time.Now().Add(30*time.Second))
}

// idleAgentThreads is the most threads an idle sandbox's agent may keep
// (one host task each: see docs/performance.md, "Memory and density").
const idleAgentThreads = 5

// waitAgentThreads polls the agent's thread count until ok accepts it, for
// up to a minute (the agent looks for an empty sandbox seconds after its
// last start, less often while the sandbox stays busy); it returns the
// last count and whether ok accepted it.
func waitAgentThreads(t *testing.T, d *Driver, ref sandbox.Ref, ok func(int) bool) (int, bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		n := agentThreads(t, d, ref)
		if ok(n) || time.Now().After(deadline) {
			return n, ok(n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIdleAgentThreads: the agent holds its spare threads (agent.WarmThreads)
// only while the sandbox runs something: an idle sandbox's agent, once its
// commands have come and gone, ends them; one whose command left a
// process running keeps them, until that process is gone. Every thread is
// a host task: 1,000 sandboxes of 19-thread agents took ~21,000 of the
// host's 32,768 PIDs, and pivot_root walks every task of the host.
func TestIdleAgentThreads(t *testing.T) {
	d := newTestDriver(t, "")
	if d.cgMode == cgroupNone {
		t.Skip("no cgroups on this host")
	}
	busy := create(t, d, sandbox.Spec{})
	idle := create(t, d, sandbox.Spec{})
	mustSh(t, d, busy, "sleep 1000 >/dev/null 2>&1 &")
	idleEnough := func(n int) bool { return n <= idleAgentThreads }
	// idle's agent starts later than busy's and so looks for an empty
	// sandbox later: twice over, busy's has looked at least once.
	for range 2 {
		for range 3 {
			mustSh(t, d, idle, "true")
		}
		if n, ok := waitAgentThreads(t, d, idle, idleEnough); !ok {
			t.Fatalf("idle agent has %d threads, want at most %d", n, idleAgentThreads)
		} else {
			t.Logf("idle agent threads: %d", n)
		}
	}
	if n := agentThreads(t, d, busy); n <= idleAgentThreads {
		t.Errorf("agent with a process running has %d threads, want its spare ones (more than %d)", n, idleAgentThreads)
	}
	mustSh(t, d, busy, "pkill -x sleep; while pgrep -x sleep >/dev/null; do :; done")
	if n, ok := waitAgentThreads(t, d, busy, idleEnough); !ok {
		t.Errorf("agent whose last process ended has %d threads, want at most %d", n, idleAgentThreads)
	}
	// Cold again, it makes its spare threads before the next command.
	mustSh(t, d, idle, "true")
	if n := agentThreads(t, d, idle); n <= idleAgentThreads {
		t.Errorf("agent after a start has %d threads, want its spare ones (more than %d)", n, idleAgentThreads)
	}
}

// TestSignalAsKeepsThreads: signalling a process of another user (the
// agent switches one thread's uid for the call) leaves the agent its
// threads; one ended per signal would have to be made again, which a fork
// bomb can deny.
func TestSignalAsKeepsThreads(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	var out bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{
		Argv: []string{"sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"}, User: "nobody", Stdout: &out,
	})
	if err != nil || st.Code != 0 {
		t.Fatalf("start sleep as nobody: %+v, %v", st, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	before := agentThreads(t, d, ref)
	// SIGWINCH: sleep ignores it, and unlike SIGCONT (allowed within a
	// session) it takes nobody's uid to send.
	for range 5 {
		if err := d.SignalProcess(testCtx(t), ref, pid, syscall.SIGWINCH); err != nil {
			t.Fatalf("SIGWINCH to nobody's sleep: %v", err)
		}
	}
	if after := agentThreads(t, d, ref); after < before {
		t.Errorf("agent threads: %d before 5 signals to another user's process, %d after; want none ended", before, after)
	}
	if err := d.SignalProcess(testCtx(t), ref, pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL to nobody's sleep: %v", err)
	}
	if got := mustSh(t, d, ref, "while pgrep -x sleep >/dev/null; do :; done; echo gone"); got != "gone\n" {
		t.Fatalf("got %q", got)
	}
}
