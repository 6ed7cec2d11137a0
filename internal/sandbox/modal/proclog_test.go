package modal_test

import (
	"context"
	"errors"
	"slices"
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

// restartSandbox starts the Modal stand-in, a sandbox (of spec) and a
// first driver; restarted returns a second driver on the same control
// plane, as a server started again would have, after closing the first.
func restartSandbox(t *testing.T, spec sandbox.Spec) (first *modal.Driver, ref sandbox.Ref, restarted func() *modal.Driver) {
	t.Helper()
	startServer(t, modaltest.Options{})
	first = newDriver(t, modal.Options{})
	if spec.ImageBase == "" {
		spec.ImageBase = "alpine:3.21"
	}
	ref, err := first.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	restarted = func() *modal.Driver {
		t.Helper()
		first.Close()
		d := newDriver(t, modal.Options{})
		t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
		if ok, err := d.Recover(testCtx(t), ref); !ok || err != nil {
			t.Fatalf("recover after the restart: %v %v", ok, err)
		}
		return d
	}
	return first, ref, restarted
}

// TestProcessLogsSurviveRestart: a managed process's log, its exit code
// and follow mode are served by a server started again (a second driver)
// from what the sandbox keeps; the process is still listed as managed;
// its stdin is gone (404).
func TestProcessLogsSurviveRestart(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{})
	ctx := testCtx(t)
	// The process's PYTHON* settings are its own, not the log wrapper's.
	waiter, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Name: "dev server", Command: []string{"sh", "-c",
		"echo ready; echo warming >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye; exit 5"},
		Env: map[string]string{"PYTHONHOME": "/nowhere", "PYTHONPATH": "/nowhere"}})
	if err != nil {
		t.Fatal(err)
	}
	// The wrapper's script does not reach the process's environment.
	done, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", `[ -z "${TECHBOSS_PROC_PY+set}" ] && echo done; exit 3`}})
	if err != nil {
		t.Fatal(err)
	}
	if o, _, exit, _ := logsOf(t, d1, ref, done.PID, true, 0); o != "done\n" || exit != 3 {
		t.Fatalf("before the restart: %q exit %d", o, exit)
	}
	// Both lines of the waiter are out before the restart.
	if _, st := run(t, d1, ref, "i=0; until grep -q warming /tmp/.techboss/procs/"+strconv.Itoa(waiter.PID)+"/cur 2>/dev/null; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.05; done"); st.Code != 0 {
		t.Fatal("the waiter's log did not appear")
	}

	d := restarted()
	if o, e, exit, end := logsOf(t, d, ref, waiter.PID, false, 0); o != "ready\n" || e != "warming\n" || exit != -1000 || end != 14 {
		t.Errorf("after the restart: stdout %q stderr %q exit %d end %d", o, e, exit, end)
	}
	if o, _, exit, end := logsOf(t, d, ref, done.PID, false, 0); o != "done\n" || exit != 3 || end != 5 {
		t.Errorf("an exited process after the restart: %q exit %d end %d", o, exit, end)
	}
	procs, err := d.ListProcesses(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := findProc(procs, waiter.PID); !ok || !p.Managed || p.Name != "dev server" || p.State != "running" {
		t.Errorf("list after the restart: the waiter is %+v (found %v)", p, ok)
	}
	for _, p := range procs {
		if slices.Contains(p.Command, "techboss-proc") && !strings.Contains(p.Command[0], "bwrap") {
			t.Errorf("list: the log wrapper is listed: %+v", p)
		}
	}
	if err := d.ProcessStdin(ctx, ref, waiter.PID, []byte("x"), false); errs.KindOf(err) != errs.NotFound {
		t.Errorf("stdin after the restart: %v, want a 404", err)
	}

	// Follow from after "ready\n" until it exits.
	type logs struct {
		out  string
		exit int
		end  int64
		err  error
	}
	followed := make(chan logs, 1)
	ready := make(chan struct{})
	go func() {
		var b strings.Builder
		l := logs{exit: -1000}
		l.err = d.ProcessLogs(ctx, ref, waiter.PID, true, 6, func() { close(ready) }, func(o sandbox.ProcessOutput) error {
			if o.Stream == "stdout" {
				b.Write(o.Data)
			}
			if o.Exit != nil {
				l.exit = *o.Exit
			}
			l.end = o.Offset
			return nil
		})
		l.out = b.String()
		followed <- l
	}()
	select {
	case <-ready:
	case l := <-followed:
		t.Fatalf("follow ended before it was ready: %+v", l)
	}
	run(t, d, ref, "touch /tmp/go")
	if l := <-followed; l.err != nil || l.out != "bye\n" || l.exit != 5 || l.end != 18 {
		t.Errorf("followed after the restart: %+v", l)
	}
	procs, err = d.ListProcesses(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := findProc(procs, waiter.PID); ok && p.State == "running" {
		t.Errorf("list: the waiter still runs: %+v", p)
	}
	// Resuming past the end gives the exit only, at the end.
	if o, _, exit, end := logsOf(t, d, ref, waiter.PID, false, 1000); o != "" || exit != 5 || end != 18 {
		t.Errorf("from past the end: %q exit %d end %d", o, exit, end)
	}
	// An unknown process is still a 404, also when the sandbox's /tmp has
	// no room for kept logs.
	if err := d.ProcessLogs(ctx, ref, 1<<22+7, false, 0, nil, func(sandbox.ProcessOutput) error { return nil }); errs.KindOf(err) != errs.NotFound {
		t.Errorf("logs of an unknown pid: %v", err)
	}
	run(t, d, ref, "mv /tmp/.techboss /tmp/.techboss.x && ln -s /etc /tmp/.techboss")
	if err := d.ProcessLogs(ctx, ref, waiter.PID, false, 0, nil, func(sandbox.ProcessOutput) error { return nil }); errs.KindOf(err) != errs.NotFound {
		t.Errorf("logs with /tmp/.techboss a link: %v, want a 404", err)
	}
}

// TestProcessLogsWithoutPython: an image without python3 runs managed
// processes as before, their log only in the server: gone (404) after a
// restart.
func TestProcessLogsWithoutPython(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{Env: map[string]string{"PATH": "/nowhere"}})
	ctx := testCtx(t)
	p, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"/bin/sh", "-c", "echo hi; echo ho >&2; exit 4"}})
	if err != nil {
		t.Fatal(err)
	}
	if o, e, exit, _ := logsOf(t, d1, ref, p.PID, true, 0); o != "hi\n" || e != "ho\n" || exit != 4 {
		t.Fatalf("before the restart: %q %q exit %d", o, e, exit)
	}
	d := restarted()
	if err := d.ProcessLogs(ctx, ref, p.PID, false, 0, nil, func(sandbox.ProcessOutput) error { return nil }); errs.KindOf(err) != errs.NotFound {
		t.Errorf("after the restart: %v, want a 404", err)
	}
}

// TestKeptLogOfAKilledWrapper: when the wrapper that keeps a process's
// log dies without writing its exit code (killed), a follower after a
// restart does not wait forever: the log ends with exit code -1.
func TestKeptLogOfAKilledWrapper(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{})
	ctx := testCtx(t)
	p, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "echo up; exec sleep 600"}})
	if err != nil {
		t.Fatal(err)
	}
	d := restarted()
	pid := strconv.Itoa(p.PID)
	if _, st := run(t, d, ref, "i=0; until grep -q up /tmp/.techboss/procs/"+pid+"/cur 2>/dev/null; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.05; done; set -e; w=$(cut -d' ' -f4 /proc/"+pid+"/stat); kill -9 $w; kill -9 "+pid+"; while [ -d /proc/$w ]; do sleep 0.05; done"); st.Code != 0 {
		t.Fatalf("kill the wrapper: exit %d", st.Code)
	}
	if o, _, exit, end := logsOf(t, d, ref, p.PID, true, 0); o != "up\n" || exit != -1 || end != 3 {
		t.Errorf("followed: %q exit %d end %d, want up, -1, 3", o, exit, end)
	}
}

// TestFollowKeptLogOfAChattyProcess: a follower after a restart keeps up
// with a process that writes without pause (its log turning over all the
// time): offsets add up, data and gaps, and nothing is refused as more
// than what is kept.
func TestFollowKeptLogOfAChattyProcess(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{})
	ctx := testCtx(t)
	p, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "while :; do seq 1 100000; done"}})
	if err != nil {
		t.Fatal(err)
	}
	d := restarted()
	t.Cleanup(func() { _ = d.SignalProcess(context.Background(), ref, p.PID, syscall.SIGKILL) })
	errEnough := errors.New("enough")
	var first, last int64 = -1, -1
	var data int64
	err = d.ProcessLogs(ctx, ref, p.PID, true, 0, nil, func(o sandbox.ProcessOutput) error {
		if o.Exit != nil {
			t.Fatalf("an exit %d", *o.Exit)
		}
		if last >= 0 && o.Offset != last+o.Gap+int64(len(o.Data)) {
			t.Fatalf("offset %d after %d with a gap of %d and %d bytes", o.Offset, last, o.Gap, len(o.Data))
		}
		if first < 0 {
			first = o.Offset
		}
		last = o.Offset
		data += int64(len(o.Data))
		if last-first > 8<<20 {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("follow: %v after %d bytes of data", err, data)
	}
}

// TestKeptProcessLogIsBounded: the sandbox keeps the last 1 MiB or so of
// a process's output (two segments of half that); after a restart a
// reader gets a gap for the rest, and what it gets is the output's tail.
func TestKeptProcessLogIsBounded(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{})
	ctx := testCtx(t)
	// seq 1 400000 writes 2,688,895 bytes.
	p, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"seq", "1", "400000"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, exit, _ := logsOf(t, d1, ref, p.PID, true, 0); exit != 0 {
		t.Fatalf("seq: exit %d", exit)
	}
	var want strings.Builder
	for i := 1; i <= 400000; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	total := int64(want.Len())

	d := restarted()
	var gap int64
	var data strings.Builder
	var last sandbox.ProcessOutput
	err = d.ProcessLogs(ctx, ref, p.PID, false, 0, nil, func(o sandbox.ProcessOutput) error {
		if o.Gap > 0 && data.Len() > 0 {
			t.Errorf("a gap of %d after %d bytes of data", o.Gap, data.Len())
		}
		gap += o.Gap
		data.Write(o.Data)
		last = o
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := int64(data.Len()); gap+n != total || n > 1<<20 || n < 512<<10 || last.Offset != total || last.Exit == nil || *last.Exit != 0 {
		t.Fatalf("after the restart: gap %d + data %d, want %d in all, 512 KiB to 1 MiB kept; last %+v", gap, n, total, last)
	}
	if !strings.HasSuffix(want.String(), data.String()) {
		t.Errorf("the kept log is not the tail of the output")
	}
}

// TestKeptProcessLogDistrustsTheSandbox: what the sandbox keeps is its
// code's to replace. After a restart, a log or exit file that is a
// symbolic link (onto a host-ish path), a FIFO, a 1 GiB sparse file, a
// forged exit code or a malformed record is a 502 naming the problem,
// quickly, with nothing of the link's target read; and so is a log
// reader (what runs as python3) that lies.
func TestKeptProcessLogDistrustsTheSandbox(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{Env: map[string]string{"PATH": "/workspace/bin:/usr/bin:/bin"}})
	ctx := testCtx(t)
	tamper := []struct{ name, script, msg string }{
		{"log is a link", `rm cur && ln -s /etc/passwd cur`, "cur is a symbolic link"},
		{"old log is a link", `cp cur prev && sed -i 's/^TBLOG1 0/TBLOG1 99/' cur && rm prev && ln -s /etc/passwd prev`, "prev is a symbolic link"},
		{"dir is a link", `cd .. && mv $P $P.x && ln -s /etc $P`, "symbolic link"},
		{"log is a FIFO", `rm cur && mkfifo cur`, "cur is not a regular file"},
		{"log is 1 GiB", `truncate -s 1G cur`, "larger"},
		{"old log is 1 GiB", `cp cur prev && truncate -s 1G prev && sed -i 's/^TBLOG1 0/TBLOG1 99/' cur`, "larger"},
		{"malformed record", `printf 'TBLOG1 0\nq5\nhello' > cur`, "malformed record"},
		{"no header", `printf 'root:x:0:0\n' > cur`, "no valid header"},
		{"exit is garbage", `printf 'zzz\n' > exit`, "exit code"},
		{"exit is huge", `printf '99999\n' > exit`, "exit code"},
		{"exit is a link", `rm exit && ln -s /dev/zero exit`, "exit is a symbolic link"},
		{"exit is a FIFO", `rm exit && mkfifo exit`, "exit is not a regular file"},
	}
	pids := make([]int, len(tamper))
	for i := range tamper {
		p, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "echo root-secret-marker; exit 0"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, exit, _ := logsOf(t, d1, ref, p.PID, true, 0); exit != 0 {
			t.Fatalf("process %d: exit %d", p.PID, exit)
		}
		pids[i] = p.PID
	}
	d := restarted()
	for i, c := range tamper {
		t.Run(c.name, func(t *testing.T) {
			dir := "/tmp/.techboss/procs/" + strconv.Itoa(pids[i])
			if _, st := run(t, d, ref, "P="+strconv.Itoa(pids[i])+"; cd "+dir+" && "+c.script); st.Code != 0 {
				t.Fatalf("tamper: exit %d", st.Code)
			}
			for _, follow := range []bool{false, true} {
				var got strings.Builder
				err := d.ProcessLogs(ctx, ref, pids[i], follow, 0, nil, func(o sandbox.ProcessOutput) error {
					got.Write(o.Data)
					return nil
				})
				if errs.KindOf(err) != errs.BadGateway || !strings.Contains(err.Error(), c.msg) {
					t.Errorf("follow %v: %v, want a 502 saying %q", follow, err, c.msg)
				}
				if strings.Contains(got.String()+errString(err), "root:") {
					t.Errorf("follow %v: the link's target was read: %q, %v", follow, got.String(), err)
				}
			}
		})
	}

	// What runs as python3 lies.
	run(t, d, ref, `mkdir -p /workspace/bin && printf '%s\n' '#!/bin/sh' 'cat /workspace/lines' > /workspace/bin/python3 && chmod +x /workspace/bin/python3`)
	for _, c := range []struct{ name, lines, msg string }{
		{"a record over the limit", `printf 'P 5\nK\nS 0\no99999999\n'`, "malformed line"},
		{"a record before the log is found", `printf 'P 5\nS 0\no1\na'`, "before finding"},
		{"a record outside a segment", `printf 'P 5\nK\no1\na'`, "outside a segment"},
		{"more than is kept", `printf 'P 5\nK\nS 0\n'; i=0; while [ $i -lt 40 ]; do printf 'o65536\n'; head -c 65536 /dev/zero; i=$((i+1)); done`, "more than"},
		{"endless zeros", `printf 'P 5\nK\nS 0\n'; head -c 3000000 /dev/zero`, "overlong line"},
		{"going back", `printf 'P 5\nK\nS 10\no1\naS 0\n'`, "goes back"},
		{"an exit code out of range", `printf 'P 5\nK\nS 0\nC\nX 300\n'`, "malformed line"},
		{"an exit before catching up", `printf 'P 5\nK\nS 0\nX 0\n'`, "before catching up"},
		{"a truncated record", `printf 'P 5\nK\nS 0\no10\nabc'`, "truncated"},
		{"an error with escapes", `printf 'P 5\nE bad \033[2J boom\n'`, "boom"},
		{"an early end", `printf 'P 5\nK\nS 0\n'`, "ended early"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, st := run(t, d, ref, "{ "+c.lines+"; } > /workspace/lines"); st.Code != 0 {
				t.Fatalf("lines: exit %d", st.Code)
			}
			err := d.ProcessLogs(ctx, ref, pids[0], false, 0, nil, func(sandbox.ProcessOutput) error { return nil })
			if errs.KindOf(err) != errs.BadGateway || !strings.Contains(err.Error(), c.msg) || strings.Contains(errString(err), "\x1b") {
				t.Errorf("%v, want a 502 saying %q", err, c.msg)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestKeptLogReadersAreBounded: each follower of a kept log is an exec in
// the sandbox, so they count against the sandbox's bound on watches: one
// more than that is refused, not another process in the sandbox.
func TestKeptLogReadersAreBounded(t *testing.T) {
	d1, ref, restarted := restartSandbox(t, sandbox.Spec{})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	p, err := d1.StartProcess(ctx, ref, sandbox.ProcessSpec{Command: []string{"sh", "-c", "echo up; exec sleep 600"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, st := run(t, d1, ref, "i=0; until grep -q up /tmp/.techboss/procs/"+strconv.Itoa(p.PID)+"/cur 2>/dev/null; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.05; done"); st.Code != 0 {
		t.Fatal("the process's log did not appear")
	}
	d := restarted()
	ended := make(chan error, modal.MaxWatches)
	for range modal.MaxWatches {
		ready := make(chan struct{})
		go func() {
			ended <- d.ProcessLogs(ctx, ref, p.PID, true, 0, func() { close(ready) }, func(sandbox.ProcessOutput) error { return nil })
		}()
		select {
		case <-ready:
		case err := <-ended:
			t.Fatalf("a follower of the kept log ended early: %v", err)
		}
	}
	err = d.ProcessLogs(ctx, ref, p.PID, true, 0, nil, func(sandbox.ProcessOutput) error { return nil })
	if errs.KindOf(err) != errs.TooMany {
		t.Errorf("follower %d of a kept log: %v, want too many", modal.MaxWatches+1, err)
	}
	cancel()
	for range modal.MaxWatches {
		<-ended
	}
}
