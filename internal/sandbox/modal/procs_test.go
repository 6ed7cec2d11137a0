package modal_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/sandbox/modal/modaltest"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// logsOf reads a managed process's log from offset from: stdout and
// stderr text, and its exit code (-1000 if none came).
func logsOf(t *testing.T, d *modal.Driver, ref sandbox.Ref, pid int, follow bool, from int64) (stdout, stderr string, exit int, end int64) {
	t.Helper()
	var out, errOut strings.Builder
	exit = -1000
	err := d.ProcessLogs(testCtx(t), ref, pid, follow, from, nil, func(o sandbox.ProcessOutput) error {
		switch {
		case o.Exit != nil:
			exit = *o.Exit
		case o.Stream == "stdout":
			out.Write(o.Data)
		case o.Stream == "stderr":
			errOut.Write(o.Data)
		}
		end = o.Offset
		return nil
	})
	if err != nil {
		t.Fatalf("logs of %d: %v", pid, err)
	}
	return out.String(), errOut.String(), exit, end
}

func findProc(procs []sandbox.Process, pid int) (sandbox.Process, bool) {
	for _, p := range procs {
		if p.PID == pid {
			return p, true
		}
	}
	return sandbox.Process{}, false
}

// TestProcesses runs managed processes on the Modal stand-in: start, list
// (managed and not), logs followed and resumed by offset, stdin, signals
// and exit codes.
func TestProcesses(t *testing.T) {
	startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	ctx := testCtx(t)
	ref, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })

	shout, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Name: "shout", Command: []string{"sh", "-c", "echo ready; tr a-z A-Z"}})
	if err != nil {
		t.Fatal(err)
	}
	if shout.PID <= 1 || !shout.Managed || shout.Name != "shout" || shout.State != "running" {
		t.Fatalf("started: %+v", shout)
	}

	// A process the API did not start (a command's background child).
	out, _ := run(t, d, ref, "setsid sleep 600 >/dev/null 2>&1 < /dev/null & echo $!")
	other, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("background pid: %q", out)
	}
	procs, err := d.ListProcesses(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := findProc(procs, shout.PID); !ok || !p.Managed || p.Name != "shout" || p.State != "running" || p.StartedAt.IsZero() {
		t.Errorf("list: shout is %+v (found %v)", p, ok)
	}
	if p, ok := findProc(procs, other); !ok || p.Managed || p.Name != "sleep" || strings.Join(p.Command, " ") != "sleep 600" {
		t.Errorf("list: the background sleep is %+v (found %v)", p, ok)
	}

	// Follow the log while stdin is written and closed.
	type logs struct {
		out  string
		exit int
	}
	followed := make(chan logs, 1)
	ready := make(chan struct{})
	go func() {
		var b strings.Builder
		exit := -1000
		_ = d.ProcessLogs(ctx, ref, shout.PID, true, 0, func() { close(ready) }, func(o sandbox.ProcessOutput) error {
			b.Write(o.Data)
			if o.Exit != nil {
				exit = *o.Exit
			}
			return nil
		})
		followed <- logs{b.String(), exit}
	}()
	<-ready
	if err := d.ProcessStdin(ctx, ref, shout.PID, []byte("hello"), false); err != nil {
		t.Fatal(err)
	}
	if err := d.ProcessStdin(ctx, ref, shout.PID, []byte(" world"), true); err != nil {
		t.Fatal(err)
	}
	if got := <-followed; got.out != "ready\nHELLO WORLD" || got.exit != 0 {
		t.Errorf("followed logs: %+v", got)
	}
	// Resume after "ready\n".
	if o, _, exit, end := logsOf(t, d, ref, shout.PID, false, 6); o != "HELLO WORLD" || exit != 0 || end != 17 {
		t.Errorf("logs from 6: %q exit %d end %d", o, exit, end)
	}
	if err := d.ProcessStdin(ctx, ref, shout.PID, []byte("late"), false); errs.KindOf(err) != errs.Conflict {
		t.Errorf("stdin after exit: %v", err)
	}

	// Exit code and stderr.
	failing, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "echo oops >&2; exit 7"}, Env: map[string]string{"X": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if o, e, exit, _ := logsOf(t, d, ref, failing.PID, true, 0); o != "" || e != "oops\n" || exit != 7 {
		t.Errorf("failing: stdout %q stderr %q exit %d", o, e, exit)
	}

	// A signal ends a managed process: 128+15.
	sleeper, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SignalProcess(ctx, ref, sleeper.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, _, exit, _ := logsOf(t, d, ref, sleeper.PID, true, 0); exit != 143 {
		t.Errorf("sleeper after SIGTERM: exit %d, want 143", exit)
	}
	procs, err = d.ListProcesses(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := findProc(procs, sleeper.PID); !ok || p.State != "exited" || p.ExitCode == nil || *p.ExitCode != 143 || !p.Managed {
		t.Errorf("list: sleeper is %+v (found %v)", p, ok)
	}
	if p, ok := findProc(procs, failing.PID); !ok || p.ExitCode == nil || *p.ExitCode != 7 || p.Name != "sh" {
		t.Errorf("list: failing is %+v (found %v)", p, ok)
	}

	// Any process can be signalled; unknown ones are 404.
	if err := d.SignalProcess(ctx, ref, other, syscall.SIGKILL); err != nil {
		t.Errorf("signal the background sleep: %v", err)
	}
	if _, st := run(t, d, ref, "while [ -d /proc/"+strconv.Itoa(other)+" ] && ! grep -q '^State:.*Z' /proc/"+strconv.Itoa(other)+"/status; do sleep 0.05; done"); st.Code != 0 {
		t.Errorf("the background sleep survived SIGKILL")
	}
	if err := d.SignalProcess(ctx, ref, 1<<22+7, syscall.SIGTERM); errs.KindOf(err) != errs.NotFound {
		t.Errorf("signal an unknown pid: %v", err)
	}
	if err := d.ProcessLogs(ctx, ref, other, false, 0, nil, func(sandbox.ProcessOutput) error { return nil }); errs.KindOf(err) != errs.NotFound {
		t.Errorf("logs of an unmanaged process: %v", err)
	}
	if err := d.ProcessStdin(ctx, ref, other, []byte("x"), false); errs.KindOf(err) != errs.NotFound {
		t.Errorf("stdin of an unmanaged process: %v", err)
	}
}

// TestProcessLogRing: the driver keeps the last 1 MiB of a process's
// output; a reader gets gaps for what was overwritten before it read it
// (a follower may too, if it falls behind), and offsets count the whole
// output.
func TestProcessLogRing(t *testing.T) {
	startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	ctx := testCtx(t)
	ref, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
	const total = 3 << 20
	p, err := d.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "head -c " + strconv.Itoa(total) + " /dev/zero | tr '\\000' a"}})
	if err != nil {
		t.Fatal(err)
	}
	var gap, data int64
	var last sandbox.ProcessOutput
	exit := -1000
	err = d.ProcessLogs(ctx, ref, p.PID, true, 0, nil, func(o sandbox.ProcessOutput) error {
		gap += o.Gap
		data += int64(len(o.Data))
		if o.Exit != nil {
			exit = *o.Exit
		}
		last = o
		return nil
	})
	if err != nil || exit != 0 || gap+data != total || last.Offset != total {
		t.Fatalf("follow: gap %d + data %d, offset %d, exit %d, %v; want %d in all", gap, data, last.Offset, exit, err, total)
	}
	// Read again after the exit: most of it was overwritten.
	gap, data = 0, 0
	err = d.ProcessLogs(ctx, ref, p.PID, false, 0, nil, func(o sandbox.ProcessOutput) error {
		gap += o.Gap
		data += int64(len(o.Data))
		last = o
		return nil
	})
	if err != nil || gap < total-(1<<20) || data > 1<<20 || data == 0 || gap+data != total || last.Offset != total || last.Exit == nil {
		t.Errorf("replay: gap %d, data %d, offset %d, %v", gap, data, last.Offset, err)
	}
	// Resuming past the end gives only the exit.
	var n int
	_ = d.ProcessLogs(ctx, ref, p.PID, false, total, nil, func(o sandbox.ProcessOutput) error {
		if o.Exit == nil {
			t.Errorf("from the end: %d bytes, gap %d", len(o.Data), o.Gap)
		}
		n++
		return nil
	})
	if n != 1 {
		t.Errorf("from the end: %d outputs, want the exit only", n)
	}
}
