package local

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

type procLog struct {
	stdout, stderr string
	gap            int64
	exit           *int
	chunks         int
	offset         int64 // of the last piece
}

func readLogs(t *testing.T, d *Driver, ref sandbox.Ref, pid int, follow bool) procLog {
	t.Helper()
	return readLogsFrom(t, d, ref, pid, follow, 0)
}

func readLogsFrom(t *testing.T, d *Driver, ref sandbox.Ref, pid int, follow bool, from int64) procLog {
	t.Helper()
	var l procLog
	err := d.ProcessLogs(testCtx(t), ref, pid, follow, from, nil, func(o sandbox.ProcessOutput) error {
		l.offset = o.Offset
		switch {
		case o.Exit != nil:
			l.exit = o.Exit
		case o.Gap > 0:
			l.gap += o.Gap
		case o.Stream == "stdout":
			l.stdout += string(o.Data)
		case o.Stream == "stderr":
			l.stderr += string(o.Data)
		}
		l.chunks++
		return nil
	})
	if err != nil {
		t.Fatalf("ProcessLogs(%d): %v", pid, err)
	}
	return l
}

func findProc(ps []sandbox.Process, pid int) (sandbox.Process, bool) {
	i := slices.IndexFunc(ps, func(p sandbox.Process) bool { return p.PID == pid })
	if i < 0 {
		return sandbox.Process{}, false
	}
	return ps[i], true
}

func TestProcesses(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx := testCtx(t)

	t.Run("StdinToLog", func(t *testing.T) {
		p, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Name: "echo", Command: []string{"cat"}})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Managed || p.Name != "echo" || p.State != "running" || p.PID <= 1 {
			t.Fatalf("started %+v", p)
		}
		if err := d.ProcessStdin(ctx, ref, p.PID, []byte("hello\n"), false); err != nil {
			t.Fatal(err)
		}
		if err := d.ProcessStdin(ctx, ref, p.PID, []byte("world\n"), true); err != nil {
			t.Fatal(err)
		}
		l := readLogs(t, d, ref, p.PID, true)
		if l.stdout != "hello\nworld\n" || l.exit == nil || *l.exit != 0 {
			t.Fatalf("log of cat: got %+v, want hello world and exit 0", l)
		}
		if err := d.ProcessStdin(ctx, ref, p.PID, []byte("late"), false); errs.KindOf(err) != errs.Conflict {
			t.Errorf("stdin after exit: got %v, want conflict", err)
		}
	})

	t.Run("ExitCodeListed", func(t *testing.T) {
		p, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "echo out; echo err >&2; pwd; exit 3"}, Env: map[string]string{"X": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		l := readLogs(t, d, ref, p.PID, true)
		if l.stdout != "out\n/workspace\n" || l.stderr != "err\n" || l.exit == nil || *l.exit != 3 {
			t.Fatalf("log: got %+v", l)
		}
		ps, err := d.ListProcesses(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := findProc(ps, p.PID)
		if !ok || got.State != "exited" || got.ExitCode == nil || *got.ExitCode != 3 || !got.Managed || got.Name != "sh" {
			t.Fatalf("listed %+v (found %v), want exited with 3", got, ok)
		}
		// Without follow: the same log, ending at once.
		if l2 := readLogs(t, d, ref, p.PID, false); l2.stdout != l.stdout || l2.exit == nil {
			t.Errorf("replay: got %+v", l2)
		}
	})

	t.Run("SignalManaged", func(t *testing.T) {
		p, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sleep", "1000"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SignalProcess(ctx, ref, p.PID, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if l := readLogs(t, d, ref, p.PID, true); l.exit == nil || *l.exit != 128+int(syscall.SIGTERM) {
			t.Fatalf("log: got %+v, want exit 143", l)
		}
	})

	t.Run("ExecStartedListedAndSignalled", func(t *testing.T) {
		// Wait on cmdline, not comm: exec sets the new comm before the new
		// argument list, so a listing between the two shows no command.
		pid, err := strconv.Atoi(strings.TrimSpace(mustSh(t, d, ref, `timeout 60 tail -f /dev/null >/dev/null 2>&1 & until [ "$(head -c 7 /proc/$!/cmdline)" = timeout ]; do :; done; echo $!`)))
		if err != nil {
			t.Fatal(err)
		}
		ps, err := d.ListProcesses(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := findProc(ps, pid)
		if !ok || got.Managed || got.State != "running" || !slices.Equal(got.Command, []string{"timeout", "60", "tail", "-f", "/dev/null"}) || got.StartedAt.IsZero() {
			t.Fatalf("exec's background job: got %+v (found %v) in %+v", got, ok, ps)
		}
		if err := d.ProcessStdin(ctx, ref, pid, []byte("x"), false); errs.KindOf(err) != errs.NotFound {
			t.Errorf("stdin of an unmanaged process: got %v, want not found", err)
		}
		if err := d.SignalProcess(ctx, ref, pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		mustSh(t, d, ref, "while kill -0 "+strconv.Itoa(pid)+" 2>/dev/null; do sleep 0.01; done")
		if err := d.SignalProcess(ctx, ref, 99999, syscall.SIGTERM); errs.KindOf(err) != errs.NotFound {
			t.Errorf("signal to no process: got %v, want not found", err)
		}
		if err := d.SignalProcess(ctx, ref, 1, syscall.SIGKILL); errs.KindOf(err) != errs.NotFound {
			t.Errorf("signal to PID 1: got %v, want not found", err)
		}
	})

	t.Run("SignalOtherUser", func(t *testing.T) {
		// The agent runs as root without CAP_KILL: a process of another
		// user is signalled under that user's uid.
		var out strings.Builder
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", `sleep 1000 >/dev/null 2>&1 & until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done; echo $!`}, User: "nobody", Stdout: &out})
		if err != nil || st.Code != 0 {
			t.Fatalf("exec as nobody: %v %+v", err, st)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(out.String()))
		if err := d.SignalProcess(ctx, ref, pid, syscall.SIGKILL); err != nil {
			t.Fatalf("signal a process of nobody: %v", err)
		}
		mustSh(t, d, ref, "while kill -0 "+strconv.Itoa(pid)+" 2>/dev/null; do sleep 0.01; done")
	})

	t.Run("RunningCap", func(t *testing.T) {
		var pids []int
		for range agent.MaxManagedRunning {
			p, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sleep", "1000"}})
			if err != nil {
				t.Fatalf("start %d: %v", len(pids), err)
			}
			pids = append(pids, p.PID)
		}
		_, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"true"}})
		if errs.KindOf(err) != errs.TooMany {
			t.Errorf("managed process %d: got %v, want too many", agent.MaxManagedRunning+1, err)
		}
		for _, pid := range pids {
			if err := d.SignalProcess(ctx, ref, pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			readLogs(t, d, ref, pid, true) // until it has exited
		}
		if _, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"true"}}); err != nil {
			t.Errorf("after the others exited: %v", err)
		}
	})

	t.Run("BadStart", func(t *testing.T) {
		_, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"no-such-program"}})
		var e *errs.Error
		if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) == 0 || e.Fields[0].Field != "command" {
			t.Errorf("unknown program: got %v, want invalid command", err)
		}
		_, err = d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"true"}, Workdir: "/no/such/dir"})
		if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) == 0 || e.Fields[0].Field != "workdir" {
			t.Errorf("bad workdir: got %v, want invalid workdir", err)
		}
	})
}

// TestProcessSurvivesRestart: a managed process and its log live in the
// agent, so a new driver (a server restart) finds both after Recover.
func TestProcessSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	d1 := newTestDriver(t, dir)
	ref := create(t, d1, sandbox.Spec{})
	p, err := d1.StartProcess(testCtx(t), ref, sandbox.ProcessSpec{Name: "web", Command: []string{"sh", "-c", "echo before; cat"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := newTestDriver(t, dir)
	if alive, err := d2.Recover(testCtx(t), ref); err != nil || !alive {
		t.Fatalf("Recover: %v, %v", alive, err)
	}
	ps, err := d2.ListProcesses(testCtx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := findProc(ps, p.PID); !ok || !got.Managed || got.Name != "web" || got.State != "running" {
		t.Fatalf("after restart: got %+v (found %v)", got, ok)
	}
	if err := d2.ProcessStdin(testCtx(t), ref, p.PID, []byte("after\n"), true); err != nil {
		t.Fatal(err)
	}
	if l := readLogs(t, d2, ref, p.PID, true); l.stdout != "before\nafter\n" || l.exit == nil || *l.exit != 0 {
		t.Fatalf("log after restart: got %+v", l)
	}
}

// TestProcessLogRing: a process writing 10 MiB leaves at most the ring's
// worth in the agent; a replay starts with a gap for the rest.
func TestProcessLogRing(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	const total = 10 << 20
	s, err := d.get(ref)
	if err != nil {
		t.Fatal(err)
	}
	// The agent is the first child of the sandbox's init.
	init := strconv.Itoa(s.st.InitPID)
	kids, _ := os.ReadFile("/proc/" + init + "/task/" + init + "/children")
	agentPID := init
	if f := strings.Fields(string(kids)); len(f) > 0 {
		agentPID = f[0]
	}
	rss := func() string {
		b, _ := os.ReadFile("/proc/" + agentPID + "/status")
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				return strings.Join(strings.Fields(l)[1:], " ")
			}
		}
		return "?"
	}
	before := rss()
	defer func() { t.Logf("agent RSS %s before, %s after 10 MiB of output", before, rss()) }()
	// The agent reads stdout and stderr on a goroutine each, so two streams
	// have no order shorter than a scheduling delay (on a loaded machine,
	// stdout's last newline was once kept after stderr's first b's): the
	// sleep orders them for the offsets checked below.
	p, err := d.StartProcess(testCtx(t), ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "head -c " + strconv.Itoa(total) + " /dev/zero | tr '\\0' a; echo; sleep 1; head -c 100000 /dev/zero | tr '\\0' b >&2"}})
	if err != nil {
		t.Fatal(err)
	}
	// Follow to the end, dropping the data (a reader that keeps up may get
	// it all, one that falls behind gets gaps).
	if l := readLogs(t, d, ref, p.PID, true); l.exit == nil || *l.exit != 0 || int64(len(l.stdout)+len(l.stderr))+l.gap != total+1+100000 {
		t.Fatalf("follow: exit %v, %d+%d bytes + gap %d, want %d", l.exit, len(l.stdout), len(l.stderr), l.gap, total+1+100000)
	}
	l := readLogs(t, d, ref, p.PID, false)
	kept := len(l.stdout) + len(l.stderr)
	if kept > agent.ProcRingSize || kept < agent.ProcRingSize/2 || l.gap == 0 || int64(kept)+l.gap != total+1+100000 {
		t.Fatalf("replay: kept %d bytes with gap %d, want at most %d and the rest as a gap", kept, l.gap, agent.ProcRingSize)
	}
	if !strings.HasSuffix(l.stderr, strings.Repeat("b", 100000)) || !strings.HasSuffix(l.stdout, "a\n") {
		t.Errorf("replay lost the newest output: stdout ends %q, stderr has %d bytes", l.stdout[max(0, len(l.stdout)-8):], len(l.stderr))
	}
	// Resuming at an offset (a reader's Last-Event-ID): inside the ring,
	// exactly what followed; before it, a gap to the ring's start; past
	// the end, nothing but the exit. Offsets count the whole output.
	const end = total + 1 + 100000
	if l.offset != end {
		t.Errorf("replay ended at offset %d, want %d", l.offset, end)
	}
	if r := readLogsFrom(t, d, ref, p.PID, false, end-50000); r.stderr != strings.Repeat("b", 50000) || r.stdout != "" || r.gap != 0 || r.offset != end || r.exit == nil {
		t.Errorf("from end-50000: %d stdout, %d stderr bytes, gap %d, offset %d, exit %v; want the last 50000 b's", len(r.stdout), len(r.stderr), r.gap, r.offset, r.exit)
	}
	if r := readLogsFrom(t, d, ref, p.PID, false, 10); r.gap != l.gap-10 || len(r.stdout)+len(r.stderr) != kept || r.offset != end {
		t.Errorf("from 10: gap %d, %d bytes, offset %d; want gap %d and the %d kept", r.gap, len(r.stdout)+len(r.stderr), r.offset, l.gap-10, kept)
	}
	if r := readLogsFrom(t, d, ref, p.PID, true, end+999); r.stdout+r.stderr != "" || r.gap != 0 || r.exit == nil || r.offset != end {
		t.Errorf("from past the end: %+v, want only the exit at %d", r, end)
	}
}

type watchRec struct {
	evs   chan sandbox.WatchEvent
	ready chan struct{}
	done  chan error
}

func startWatch(t *testing.T, d *Driver, ref sandbox.Ref, path string, recursive bool) (*watchRec, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	w := &watchRec{evs: make(chan sandbox.WatchEvent, 1024), ready: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		w.done <- d.Watch(ctx, ref, path, recursive, func() { close(w.ready) }, func(ev sandbox.WatchEvent) error {
			select {
			case w.evs <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	select {
	case <-w.ready:
	case err := <-w.done:
		cancel()
		t.Fatalf("watch %s: %v", path, err)
	}
	t.Cleanup(func() { cancel(); <-w.done })
	return w, cancel
}

// waitFor reads events until one matches want (Type, Path and, if set,
// Kind and From) and returns those before it.
func (w *watchRec) waitFor(t *testing.T, want sandbox.WatchEvent) []sandbox.WatchEvent {
	t.Helper()
	var seen []sandbox.WatchEvent
	ctx := testCtx(t)
	for {
		select {
		case ev := <-w.evs:
			if ev.Type == want.Type && ev.Path == want.Path && (want.Kind == "" || ev.Kind == want.Kind) && ev.From == want.From {
				return seen
			}
			seen = append(seen, ev)
		case err := <-w.done:
			t.Fatalf("watch ended (%v) before %+v; saw %+v", err, want, seen)
		case <-ctx.Done():
			t.Fatalf("no %+v; saw %+v", want, seen)
		}
	}
}

func TestWatch(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx := testCtx(t)

	t.Run("Events", func(t *testing.T) {
		mustSh(t, d, ref, "mkdir -p /workspace/w")
		w, _ := startWatch(t, d, ref, "/workspace/w", true)
		mustSh(t, d, ref, "cd /workspace/w && echo 1 > a && for i in 1 2 3 4 5; do echo $i >> a; done && mkdir -p sub/deeper && echo x > sub/deeper/f && mv a b && rm b")
		w.waitFor(t, sandbox.WatchEvent{Type: "create", Path: "/workspace/w/a", Kind: "file"})
		w.waitFor(t, sandbox.WatchEvent{Type: "write", Path: "/workspace/w/a", Kind: "file"})
		w.waitFor(t, sandbox.WatchEvent{Type: "create", Path: "/workspace/w/sub", Kind: "dir"})
		w.waitFor(t, sandbox.WatchEvent{Type: "create", Path: "/workspace/w/sub/deeper/f"})
		w.waitFor(t, sandbox.WatchEvent{Type: "rename", Path: "/workspace/w/b", From: "/workspace/w/a", Kind: "file"})
		w.waitFor(t, sandbox.WatchEvent{Type: "remove", Path: "/workspace/w/b", Kind: "file"})
		// A new subdirectory is watched too.
		mustSh(t, d, ref, "echo y > /workspace/w/sub/deeper/g")
		w.waitFor(t, sandbox.WatchEvent{Type: "create", Path: "/workspace/w/sub/deeper/g", Kind: "file"})
	})

	t.Run("CoalescedWrites", func(t *testing.T) {
		mustSh(t, d, ref, "mkdir -p /workspace/c && : > /workspace/c/f")
		w, _ := startWatch(t, d, ref, "/workspace/c", false)
		mustSh(t, d, ref, "for i in $(seq 200); do echo $i >> /workspace/c/f; done; touch /workspace/c/end")
		writes := 0
		for _, ev := range w.waitFor(t, sandbox.WatchEvent{Type: "create", Path: "/workspace/c/end"}) {
			if ev.Type == "write" {
				writes++
			}
		}
		// 200 appends (400 inotify events) became one write before the
		// create that followed them (a slow machine may split them over a few windows).
		if writes == 0 || writes > 10 {
			t.Errorf("got %d write events for 200 appends, want them coalesced", writes)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		mustSh(t, d, ref, "ln -sfn /etc /workspace/etc-link && mkdir -p /workspace/t && ln -sfn /tmp /workspace/t/inner")
		for _, tc := range []struct {
			path string
			kind errs.Kind
		}{
			{"/workspace/etc-link", errs.Invalid},
			{"/workspace/etc-link/passwd", errs.Invalid},
			{"/workspace/no-such", errs.NotFound},
		} {
			err := d.Watch(ctx, ref, tc.path, true, nil, func(sandbox.WatchEvent) error { return nil })
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind != tc.kind || len(e.Fields) == 0 || e.Fields[0].Field != "path" {
				t.Errorf("watch %s: got %v, want %v naming path", tc.path, err, tc.kind)
			}
		}
		// A link inside the tree is not followed: /tmp's changes stay unseen.
		w, _ := startWatch(t, d, ref, "/workspace/t", true)
		mustSh(t, d, ref, "touch /tmp/techboss-watch-probe /workspace/t/mark")
		w.waitFor(t, sandbox.WatchEvent{Type: "create", Path: "/workspace/t/mark"})
		for len(w.evs) > 0 {
			if ev := <-w.evs; strings.Contains(ev.Path, "probe") {
				t.Errorf("event through the symlink: %+v", ev)
			}
		}
	})

	t.Run("TooManyDirectories", func(t *testing.T) {
		mustSh(t, d, ref, "mkdir -p /workspace/many && cd /workspace/many && seq "+strconv.Itoa(agent.MaxWatchDirs+1)+" | xargs mkdir")
		err := d.Watch(ctx, ref, "/workspace/many", true, nil, func(sandbox.WatchEvent) error { return nil })
		var e *errs.Error
		if !errors.As(err, &e) || e.Kind != errs.Invalid || !strings.Contains(e.Message, "4096 directories") {
			t.Errorf("too many directories: got %v, want a clear invalid path error", err)
		}
		// Without recursive, one watch is enough.
		w, _ := startWatch(t, d, ref, "/workspace/many", false)
		mustSh(t, d, ref, "rmdir /workspace/many/1")
		w.waitFor(t, sandbox.WatchEvent{Type: "remove", Path: "/workspace/many/1", Kind: "dir"})
	})
}
