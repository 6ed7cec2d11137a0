package modal

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/outring"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Managed processes on Modal. Modal's exec API is all there is inside a
// Modal sandbox (no agent of ours), so the driver keeps them: each is a
// background exec whose stdout and stderr the driver reads into a bounded
// ring, whose stdin it writes and whose exit code it waits for. Signals
// and the list of every process go through short execs of kill(1) and of
// a /bin/sh loop over /proc. The table lives in this server process; so
// that a restart does not lose the logs, the exec runs the process under
// proc.py, which also keeps them (and the exit code) in the sandbox
// (proclog.go), where a restarted server reads them and finds the
// processes again in the listing. Their stdin stays with the exec the
// old server held: gone after a restart.

var _ sandbox.Processes = (*Driver)(nil)

// Limits of managed processes (the local driver's agent has the same).
const (
	maxManagedRunning = 64
	maxManagedExited  = 64
	// procRingSize bounds the output kept per process (stdout and stderr
	// together); older output is overwritten.
	procRingSize = 1 << 20
	procChunk    = 32 << 10
	// stdinTimeout is how long a stdin write may wait.
	stdinTimeout = 10 * time.Second
	// drainWait bounds how long output is still read after the process
	// exited (a background child may hold its pipes open).
	drainWait = 5 * time.Second
)

// managed is one process started through StartProcess.
type managed struct {
	info sandbox.Process
	cp   *modalsdk.ContainerProcess

	stdinMu   sync.Mutex
	stdinDone bool // closed, exited, or stuck in a write

	out *outring.Ring
}

// read copies one output stream into the ring until it ends.
func (m *managed) read(r io.Reader, stream string) {
	buf := make([]byte, procChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m.out.Append(stream, bytes.Clone(buf[:n]))
		}
		if err != nil {
			return
		}
	}
}

// procTable is one sandbox's managed processes.
type procTable struct {
	mu     sync.Mutex
	byPid  map[int]*managed
	exited []int // oldest first
}

func (d *Driver) procTable(sandboxID string) *procTable {
	d.procMu.Lock()
	defer d.procMu.Unlock()
	t := d.procs[sandboxID]
	if t == nil {
		t = &procTable{byPid: map[int]*managed{}}
		d.procs[sandboxID] = t
	}
	return t
}

func (d *Driver) lookupManaged(sandboxID string, pid int) (*managed, error) {
	t := d.procTable(sandboxID)
	t.mu.Lock()
	defer t.mu.Unlock()
	if m := t.byPid[pid]; m != nil {
		return m, nil
	}
	return nil, errs.E(errs.NotFound, "process %d was not started through the API (only those have captured output and stdin), or it exited long ago, or (for stdin) the server restarted since it started", pid)
}

// StartProcess starts spec as a background exec and returns once its PID
// is known.
func (d *Driver) StartProcess(ctx context.Context, r sandbox.Ref, spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if len(spec.Command) == 0 {
		return sandbox.Process{}, errs.Field("command", "required")
	}
	h, x, err := d.handle(r)
	if err != nil {
		return sandbox.Process{}, err
	}
	t := d.procTable(x.SandboxID)
	t.mu.Lock()
	running := len(t.byPid) - len(t.exited)
	t.mu.Unlock()
	if running >= maxManagedRunning {
		return sandbox.Process{}, errs.E(errs.TooMany, "the sandbox already runs %d managed processes; stop one (signal) before starting another", maxManagedRunning)
	}
	dir := spec.Workdir
	if dir == "" {
		dir = "/workspace"
	}
	name := spec.Name
	if name == "" {
		name = spec.Command[0]
	}
	argv := append([]string{"/bin/sh", "-c", procWrapper, "sh", procScript,
		strconv.Itoa(procSegMax), strconv.Itoa(maxManagedExited), name}, spec.Command...)
	cp, err := h.Exec(ctx, argv, &modalsdk.SandboxExecParams{Workdir: dir, Env: spec.Env, Stdout: modalsdk.Pipe, Stderr: modalsdk.Pipe})
	if err != nil {
		return sandbox.Process{}, mapErr(err, "start process")
	}
	m := &managed{
		info: sandbox.Process{Name: name, Command: slices.Clone(spec.Command), State: "running", StartedAt: time.Now().UTC(), Managed: true},
		cp:   cp, out: outring.New(procRingSize),
	}
	stdout := bufio.NewReaderSize(cp.Stdout, procChunk)
	type started struct {
		info sandbox.Process
		err  error
	}
	first := make(chan started, 1)
	d.procWG.Add(1)
	go func() {
		defer d.procWG.Done()
		line, err := stdout.ReadString('\n')
		pid, perr := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || perr != nil || pid <= 0 {
			_ = cp.Stdout.Close()
			_ = cp.Stderr.Close()
			if err == nil {
				err = fmt.Errorf("bad PID line %q", line)
			}
			first <- started{err: err}
			return
		}
		m.info.PID = pid
		t.mu.Lock()
		if old := t.byPid[pid]; old != nil && old.info.State == "exited" {
			t.exited = slices.DeleteFunc(t.exited, func(p int) bool { return p == pid })
		}
		t.byPid[pid] = m
		t.mu.Unlock()
		first <- started{info: m.info}
		d.runManaged(t, m, stdout)
	}()
	select {
	case s := <-first:
		if s.err != nil {
			return sandbox.Process{}, fmt.Errorf("modal: start process: read its PID: %w", s.err)
		}
		return s.info, nil
	case <-ctx.Done():
		// It registers itself once its PID arrives and is listed then.
		return sandbox.Process{}, ctx.Err()
	}
}

// runManaged reads m's output and waits for its exit.
func (d *Driver) runManaged(t *procTable, m *managed, stdout io.Reader) {
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); m.read(stdout, "stdout") }()
	go func() { defer readers.Done(); m.read(m.cp.Stderr, "stderr") }()
	code, err := m.cp.Wait(d.procCtx, nil)
	if err != nil {
		code = -1
	}
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainWait):
	case <-d.procCtx.Done():
	}
	_ = m.cp.Stdout.Close()
	_ = m.cp.Stderr.Close()
	<-drained
	m.stdinMu.Lock()
	m.stdinDone = true
	m.stdinMu.Unlock()
	m.out.Exit(code)
	t.mu.Lock()
	if t.byPid[m.info.PID] == m {
		m.info.State = "exited"
		t.exited = append(t.exited, m.info.PID)
		for len(t.exited) > maxManagedExited {
			delete(t.byPid, t.exited[0])
			t.exited = t.exited[1:]
		}
	}
	t.mu.Unlock()
}

// ListProcesses lists every process the sandbox's /proc shows (through an
// exec of /bin/sh), then the exited managed ones.
func (d *Driver) ListProcesses(ctx context.Context, r sandbox.Ref) ([]sandbox.Process, error) {
	h, x, err := d.handle(r)
	if err != nil {
		return nil, err
	}
	out, err := d.shell(ctx, h, listScript)
	if err != nil {
		return nil, err
	}
	procs := parseProcList(out)

	t := d.procTable(x.SandboxID)
	t.mu.Lock()
	table := make(map[int]sandbox.Process, len(t.byPid))
	for pid, m := range t.byPid {
		info := m.info
		if exited, code := m.out.Exited(); exited {
			info.State, info.ExitCode = "exited", &code
		}
		table[pid] = info
	}
	t.mu.Unlock()
	// proc.py wrappers are plumbing, not listed; their children are
	// managed processes, also those a server before a restart started.
	wrappers := map[int]string{}
	for _, p := range procs {
		if name, ok := wrapperName(p); ok {
			wrappers[p.PID] = name
		}
	}
	procs = slices.DeleteFunc(procs, func(p sandbox.Process) bool { _, ok := wrappers[p.PID]; return ok })
	for i, p := range procs {
		if mi, ok := table[p.PID]; ok && mi.State != "exited" {
			procs[i].Name, procs[i].Managed, procs[i].StartedAt = mi.Name, true, mi.StartedAt
		} else if name, ok := wrappers[p.PPID]; ok && p.State != "exited" {
			procs[i].Name, procs[i].Managed = name, true
		}
	}
	var gone []sandbox.Process
	for _, p := range table {
		if p.State == "exited" {
			gone = append(gone, p)
		}
	}
	slices.SortFunc(gone, func(a, b sandbox.Process) int { return a.StartedAt.Compare(b.StartedAt) })
	return append(procs, gone...), nil
}

// listScript prints /proc/stat's btime, then, with one head(1) for all
// (forks per process made a listing of 200 processes take a second),
// every process's stat and cmdline file (but PID 1's and its own) under
// head's "==> 12/stat <==" headers, NULs turned into \002.
const listScript = `self=$$
while read -r k v; do [ "$k" = btime ] && echo "$v"; done < /proc/stat
cd /proc || exit 1
set --
for p in [0-9]*; do
  [ "$p" = 1 ] || [ "$p" = "$self" ] || set -- "$@" "$p/stat" "$p/cmdline"
done
[ $# -gt 0 ] || exit 0
head -v -c 65536 "$@" 2>/dev/null | tr '\000' '\002'
exit 0`

// clockTicks is USER_HZ, the unit of /proc/PID/stat's start time.
const clockTicks = 100

var headerRe = regexp.MustCompile(`(?m)^==> ([0-9]+)/(stat|cmdline) <==\n`)

func parseProcList(out string) []sandbox.Process {
	var boot time.Time
	first, rest, _ := strings.Cut(out, "\n")
	if n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64); err == nil {
		boot = time.Unix(n, 0).UTC()
	}
	byPid := map[int]*sandbox.Process{}
	var order []int
	hs := headerRe.FindAllStringSubmatchIndex(rest, -1)
	for i, h := range hs {
		end := len(rest)
		if i+1 < len(hs) {
			end = hs[i+1][0]
		}
		body := rest[h[1]:end]
		pid, err := strconv.Atoi(rest[h[2]:h[3]])
		if err != nil {
			continue
		}
		if rest[h[4]:h[5]] == "cmdline" {
			body = strings.TrimSuffix(body, "\n") // head's blank line before the next header
			if p := byPid[pid]; p != nil {
				if c := strings.TrimSuffix(body, "\002"); c != "" {
					p.Command = strings.Split(c, "\002")
				}
			}
			continue
		}
		stat := strings.TrimRight(body, "\n")
		lp, rp := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
		if lp < 0 || rp < lp {
			continue // gone before head read it
		}
		p := &sandbox.Process{PID: pid, Name: stat[lp+1 : rp], State: "running", Command: []string{}}
		sf := strings.Fields(stat[rp+1:])
		if len(sf) > 19 {
			if sf[0] == "Z" || sf[0] == "X" {
				p.State = "exited"
			}
			p.PPID, _ = strconv.Atoi(sf[1])
			if ticks, err := strconv.ParseInt(sf[19], 10, 64); err == nil && !boot.IsZero() {
				p.StartedAt = boot.Add(time.Duration(ticks) * time.Second / clockTicks)
			}
		}
		if byPid[pid] == nil {
			order = append(order, pid)
		}
		byPid[pid] = p
	}
	procs := make([]sandbox.Process, 0, len(order))
	for _, pid := range order {
		procs = append(procs, *byPid[pid])
	}
	slices.SortFunc(procs, func(a, b sandbox.Process) int { return a.PID - b.PID })
	return procs
}

// shell runs script with /bin/sh -c and args in the sandbox and returns
// its stdout; a non-zero exit is an error carrying its stderr.
func (d *Driver) shell(ctx context.Context, h *modalsdk.Sandbox, script string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	code, err := d.shellCode(ctx, h, &stdout, &stderr, script, args...)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("modal: sandbox command exited %d: %s", code, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (d *Driver) shellCode(ctx context.Context, h *modalsdk.Sandbox, stdout, stderr io.Writer, script string, args ...string) (int, error) {
	argv := append([]string{"/bin/sh", "-c", script, "sh"}, args...)
	cp, err := h.Exec(ctx, argv, &modalsdk.SandboxExecParams{Stdout: modalsdk.Pipe, Stderr: modalsdk.Pipe})
	if err != nil {
		return 0, mapErr(err, "exec")
	}
	_ = cp.Stdin.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(stdout, cp.Stdout); _ = cp.Stdout.Close() }()
	go func() { defer wg.Done(); _, _ = io.Copy(stderr, cp.Stderr); _ = cp.Stderr.Close() }()
	wg.Wait()
	code, err := cp.Wait(ctx, nil)
	if err != nil {
		return 0, mapErr(err, "exec wait")
	}
	return code, nil
}

// ProcessLogs streams a managed process's log from the driver's ring, or,
// for one it does not know (started before a restart), from the log the
// sandbox keeps.
func (d *Driver) ProcessLogs(ctx context.Context, r sandbox.Ref, pid int, follow bool, from int64, ready func(), fn func(sandbox.ProcessOutput) error) error {
	x, err := parseRef(r)
	if err != nil {
		return err
	}
	m, err := d.lookupManaged(x.SandboxID, pid)
	if errs.KindOf(err) == errs.NotFound {
		return d.keptLogs(ctx, r, pid, follow, from, ready, fn, err)
	}
	if err != nil {
		return err
	}
	off := m.out.Clamp(from)
	if ready != nil {
		ready()
	}
	for {
		chunks, gap, exited, code, changed := m.out.Since(off)
		if gap > 0 {
			off += gap
			if err := fn(sandbox.ProcessOutput{Gap: gap, Offset: off}); err != nil {
				return err
			}
		}
		for _, c := range chunks {
			off = c.Off + int64(len(c.Data))
			if err := fn(sandbox.ProcessOutput{Stream: c.Stream, Data: c.Data, Offset: off}); err != nil {
				return err
			}
		}
		if exited {
			return fn(sandbox.ProcessOutput{Exit: &code, Offset: off})
		}
		if !follow {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-d.procCtx.Done():
			return nil
		}
	}
}

// ProcessStdin writes to a managed process's stdin (the exec's).
func (d *Driver) ProcessStdin(ctx context.Context, r sandbox.Ref, pid int, data []byte, eof bool) error {
	x, err := parseRef(r)
	if err != nil {
		return err
	}
	m, err := d.lookupManaged(x.SandboxID, pid)
	if err != nil {
		return err
	}
	m.stdinMu.Lock()
	defer m.stdinMu.Unlock()
	exited, _ := m.out.Exited()
	if m.stdinDone || exited {
		return errs.E(errs.Conflict, "process %d has exited or its stdin was closed", pid)
	}
	done := make(chan error, 1)
	d.procWG.Add(1)
	go func() {
		defer d.procWG.Done()
		var err error
		if len(data) > 0 {
			_, err = chunkWriter{m.cp.Stdin}.Write(data)
		}
		if err == nil && eof {
			err = m.cp.Stdin.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if eof {
			m.stdinDone = true
		}
		if err != nil {
			m.stdinDone = true
			return errs.E(errs.Conflict, "process %d closed its stdin", pid)
		}
		return nil
	case <-time.After(stdinTimeout):
		m.stdinDone = true // the write may still be under way
		return errs.E(errs.Conflict, "process %d does not read its stdin", pid)
	case <-ctx.Done():
		m.stdinDone = true
		return ctx.Err()
	}
}

// SignalProcess signals any process of the sandbox through an exec of
// kill(1): Modal's exec API has no signal call.
func (d *Driver) SignalProcess(ctx context.Context, r sandbox.Ref, pid int, sig syscall.Signal) error {
	if pid <= 1 {
		return errs.E(errs.NotFound, "no process %d in the sandbox", pid)
	}
	h, _, err := d.handle(r)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(signalName(sig), "SIG")
	var stderr bytes.Buffer
	code, err := d.shellCode(ctx, h, io.Discard, &stderr, `[ -d "/proc/$1" ] || exit 3; kill -s "$2" "$1"`, strconv.Itoa(pid), name)
	if err != nil {
		return err
	}
	switch {
	case code == 3:
		return errs.E(errs.NotFound, "no process %d in the sandbox", pid)
	case code != 0:
		if _, serr := d.shell(ctx, h, `[ -d "/proc/$1" ]`, strconv.Itoa(pid)); serr != nil {
			return errs.E(errs.NotFound, "no process %d in the sandbox", pid)
		}
		return fmt.Errorf("modal: signal %d: %s", pid, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// closeProcs stops following every managed process (Close).
func (d *Driver) closeProcs() {
	d.procCancel()
	d.procMu.Lock()
	var all []*managed
	for _, t := range d.procs {
		t.mu.Lock()
		for _, m := range t.byPid {
			all = append(all, m)
		}
		t.mu.Unlock()
	}
	d.procs = map[string]*procTable{}
	d.procMu.Unlock()
	for _, m := range all {
		_ = m.cp.Stdout.Close()
		_ = m.cp.Stderr.Close()
	}
	d.procWG.Wait()
}

// forgetProcs drops a destroyed sandbox's table.
func (d *Driver) forgetProcs(sandboxID string) {
	d.procMu.Lock()
	delete(d.procs, sandboxID)
	d.procMu.Unlock()
}
