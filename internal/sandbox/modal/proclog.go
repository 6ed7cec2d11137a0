package modal

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Managed processes' logs that outlive the server. A managed process runs
// under proc.py (when the image has python3), which passes its output
// through to the exec as before and also keeps it, and then its exit
// code, in files under /tmp/.techboss/procs/PID/ in the sandbox. The
// driver serves logs from its ring while it knows the process; a
// restarted server (or a driver that dropped it) reads those files through
// another exec of proc.py, which streams them, and with follow goes on
// until the exit code is written. What the sandbox keeps is the
// sandbox's to tamper with: proc.py never follows a link nor reads a
// FIFO or more than the writer writes, and the driver checks every line,
// bounds what it reads before the reader has caught up, and answers 502
// for a reader that says something it should not.

//go:embed proc.py
var procPy string

// procScript is proc.py without its comments (it is in the argv of every
// wrapper, which every listing reads).
var procScript = stripComments(procPy)

const (
	// procSegMax bounds one log segment in the sandbox; two are kept, so
	// about procRingSize of output, as in the ring.
	procSegMax = procRingSize / 2
	// procRecordMax bounds one record of the log (proc.py reads 32 KiB).
	procRecordMax = 64 << 10
	// procReadTimeout bounds a read of the kept log without follow, and
	// the wait for a follower to find the log.
	procReadTimeout = 30 * time.Second
	// procReadHeartbeat and procReadIdle: as for watches.
	procReadHeartbeat = watchHeartbeat
	procReadIdle      = watchIdle
)

// procWrapper starts the command under proc.py when python3 is there
// (args: script, segment size, exited dirs kept, name, command...; -I so
// that the process's PYTHON* environment leaves the wrapper alone, -S for
// a faster start; the script comes through the environment, which it
// leaves before it starts the command, so that it is not in the command
// line every listing reads), and
// else as before: the shell prints its PID (kept by exec) and becomes the
// command, whose output then lives only in the driver's ring.
const procWrapper = `if command -v python3 >/dev/null 2>&1; then export TECHBOSS_PROC_PY="$1"; shift; exec python3 -I -S -c 'import os; exec(os.environ.pop("TECHBOSS_PROC_PY"))' techboss-proc run "$@"; fi
shift 4; echo $$; exec "$@"`

// procReadWrapper reads a kept log with proc.py; without python3 there is
// none.
const procReadWrapper = `command -v python3 >/dev/null 2>&1 || { echo "P $$"; echo "E notfound"; exit 0; }
export TECHBOSS_PROC_PY="$1"; shift; exec python3 -I -S -c 'import os; exec(os.environ.pop("TECHBOSS_PROC_PY"))' techboss-proc read "$@"`

// procMarker is argv[5] (then "run") of a process's proc.py wrapper; its
// argv[9] is the process's name.
const procMarker = "techboss-proc"

func stripComments(s string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}

// wrapperName reports whether p is a proc.py wrapper, and the name of the
// process it runs.
func wrapperName(p sandbox.Process) (string, bool) {
	c := p.Command
	if len(c) < 11 || c[1] != "-I" || c[2] != "-S" || c[3] != "-c" || c[5] != procMarker || c[6] != "run" {
		return "", false
	}
	return c[9], true
}

// logItem is one piece of proc.py's read stream.
type logItem struct {
	kind   byte // 'P', 'E', 'K', 'S', 'C', 'X', 'o', 'e'
	n      int64
	text   string
	data   []byte
	stream string
}

// parseLogStream reads r (proc.py's read stream) into items until it ends
// or lies; it reads at most limit bytes before the 'C' line (what is kept
// is bounded) and at most one record of procRecordMax at a time.
func parseLogStream(r io.Reader, limit int64, emit func(logItem) bool) error {
	cr := &countReader{r: r}
	br := bufio.NewReaderSize(cr, 4096)
	caught := false
	for {
		if !caught && cr.n > limit {
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent more than the %d bytes kept", limit)
		}
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent an overlong line")
		}
		if err != nil {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent a truncated line")
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		it, ok := parseLogLine(line[:len(line)-1])
		if !ok {
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent a malformed line %.40q", line)
		}
		if it.kind == 'o' || it.kind == 'e' {
			it.data = make([]byte, it.n)
			if _, err := io.ReadFull(br, it.data); err != nil {
				return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent a truncated record")
			}
		}
		if it.kind == 'C' {
			caught = true
		}
		if !emit(it) {
			return nil
		}
	}
}

// parseLogLine parses one line of the read stream (without its newline).
func parseLogLine(l []byte) (logItem, bool) {
	if len(l) == 0 {
		return logItem{}, false
	}
	it := logItem{kind: l[0]}
	num := func(s []byte, maxDigits int) (int64, bool) {
		if len(s) == 0 || len(s) > maxDigits {
			return 0, false
		}
		neg := s[0] == '-'
		if neg {
			s = s[1:]
		}
		if len(s) == 0 {
			return 0, false
		}
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		n, err := strconv.ParseInt(string(s), 10, 64)
		if neg {
			n = -n
		}
		return n, err == nil
	}
	arg, hasArg := bytes.CutPrefix(l[1:], []byte(" "))
	var ok bool
	switch it.kind {
	case 'o', 'e':
		it.stream = map[byte]string{'o': "stdout", 'e': "stderr"}[it.kind]
		it.n, ok = num(l[1:], 6)
		return it, ok && it.n >= 0 && it.n <= procRecordMax
	case 'K', 'C':
		return it, len(l) == 1
	case 'P':
		it.n, ok = num(arg, 10)
		return it, hasArg && ok && it.n > 0
	case 'S':
		it.n, ok = num(arg, 18)
		return it, hasArg && ok && it.n >= 0
	case 'X':
		it.n, ok = num(arg, 4)
		return it, hasArg && ok && it.n >= -1 && it.n <= 255
	case 'E':
		it.text = string(arg)
		return it, hasArg
	}
	return it, false
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// keptLogs streams process pid's log as the sandbox keeps it (see
// Processes.ProcessLogs), through an exec of proc.py.
func (d *Driver) keptLogs(ctx context.Context, r sandbox.Ref, pid int, follow bool, from int64, ready func(), fn func(sandbox.ProcessOutput) error, notFound error) error {
	h, x, err := d.handle(r)
	if err != nil {
		return err
	}
	// A reader is an exec in the sandbox like a watcher: it counts against
	// the same per-sandbox bound, and Close waits for it the same way.
	if err := d.watchAcquire(x.SandboxID); err != nil {
		return err
	}
	defer d.watchRelease(x.SandboxID)
	fl := "0"
	if follow {
		fl = "1"
	}
	argv := []string{"/bin/sh", "-c", procReadWrapper, "sh", procScript, strconv.Itoa(pid), fl,
		strconv.Itoa(procSegMax), strconv.Itoa(int(procReadIdle / time.Second))}
	execCtx, stopExec := context.WithCancel(context.WithoutCancel(ctx))
	defer stopExec()
	cp, err := h.Exec(execCtx, argv, &modalsdk.SandboxExecParams{Workdir: "/", Stdout: modalsdk.Pipe, Stderr: modalsdk.Pipe})
	if err != nil {
		return mapErr(err, "process logs")
	}
	stopBeat := make(chan struct{})
	d.heartbeat(ctx, cp, procReadHeartbeat, stopBeat)
	var wg sync.WaitGroup
	stderr := &stderrTail{n: 4 << 10}
	wg.Go(func() { _, _ = io.Copy(stderr, cp.Stderr) })
	items := make(chan logItem)
	readErr := make(chan error, 1)
	wg.Go(func() {
		// Two segments, their headers and records' framing at worst.
		err := parseLogStream(cp.Stdout, 2*procSegMax+4096, func(it logItem) bool {
			select {
			case items <- it:
				return true
			case <-execCtx.Done():
				return false
			}
		})
		readErr <- err
	})
	readerPID := 0
	defer func() {
		close(stopBeat)
		d.endWatcher(ctx, h, cp, readerPID)
		stopExec()
		_ = cp.Stdout.Close()
		_ = cp.Stderr.Close()
		wg.Wait()
	}()

	// Without follow the whole read, and with it the wait for the log,
	// is bounded: a reader that hangs is a lying one.
	deadline := time.NewTimer(procReadTimeout)
	defer deadline.Stop()
	found, caught := false, false
	off := max(from, 0)
	pos := int64(-1) // offset of the next byte of the stream; -1 before a segment
	// gapTo reports the bytes from off to at as overwritten.
	gapTo := func(at int64) error {
		if at <= off {
			return nil
		}
		g := at - off
		off = at
		return fn(sandbox.ProcessOutput{Gap: g, Offset: off})
	}
	for {
		var it logItem
		select {
		case it = <-items:
		case err := <-readErr:
			if err != nil {
				if _, ok := errs.Public(err); ok {
					return err
				}
				return mapErr(err, "process logs")
			}
			if caught && !follow {
				return nil
			}
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader ended early: %s", printable(strings.TrimSpace(stderr.String())))
		case <-deadline.C:
			if follow && found {
				continue // live from here on
			}
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader did not answer within %s", procReadTimeout)
		case <-ctx.Done():
			return nil
		case <-d.procCtx.Done():
			return nil
		}
		if it.kind != 'P' && it.kind != 'E' && it.kind != 'K' && !found {
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent its log before finding it")
		}
		switch it.kind {
		case 'P':
			readerPID = int(it.n)
		case 'E':
			kind, msg, _ := strings.Cut(it.text, " ")
			if kind == "notfound" && !found {
				return notFound
			}
			if msg == "" {
				msg = kind
			}
			return errs.E(errs.BadGateway, "modal: process logs: the sandbox's kept log of process %d is unusable: %s", pid, printable(msg))
		case 'K':
			if !found {
				found = true
				if follow {
					deadline.Stop()
				}
				if ready != nil {
					ready()
				}
			}
		case 'S':
			if it.n < pos {
				return errs.E(errs.BadGateway, "modal: process logs: the sandbox's kept log of process %d goes back in its output", pid)
			}
			pos = it.n
		case 'o', 'e':
			if pos < 0 {
				return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent a record outside a segment")
			}
			start, end := pos, pos+int64(len(it.data))
			pos = end
			if end <= off || len(it.data) == 0 {
				continue
			}
			if err := gapTo(start); err != nil {
				return err
			}
			data := it.data[off-start:]
			off = end
			if err := fn(sandbox.ProcessOutput{Stream: it.stream, Data: data, Offset: off}); err != nil {
				return err
			}
		case 'C':
			caught = true
			if pos < 0 {
				return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader caught up without a segment")
			}
			if off > pos {
				off = pos // a resume past the end starts at the end
			}
			if err := gapTo(pos); err != nil {
				return err
			}
		case 'X':
			if !caught {
				return errs.E(errs.BadGateway, "modal: process logs: the sandbox's log reader sent the exit before catching up")
			}
			if err := gapTo(pos); err != nil {
				return err
			}
			code := int(it.n)
			return fn(sandbox.ProcessOutput{Exit: &code, Offset: off})
		}
	}
}
