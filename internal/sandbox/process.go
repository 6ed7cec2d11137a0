package sandbox

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// MaxStdinWrite bounds one write to a managed process's stdin.
const MaxStdinWrite = 1 << 20

// Process is one process of a sandbox: every process its /proc shows, and
// the managed ones (started through StartProcess) also after they exit.
type Process struct {
	PID       int       `json:"pid"`
	PPID      int       `json:"ppid"`
	Name      string    `json:"name"`
	Command   []string  `json:"command"`
	State     string    `json:"state"` // "running" | "exited"
	StartedAt time.Time `json:"started_at"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Managed   bool      `json:"managed"`
}

// ProcessSpec is a background command to start.
type ProcessSpec struct {
	Name    string            `json:"name,omitempty"`
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"` // default /workspace
}

// ProcessOutput is one piece of a managed process's log: output of
// Stream ("stdout" or "stderr"), a Gap (bytes the bounded log overwrote
// before the reader got them), or its Exit code (the last one).
type ProcessOutput struct {
	Stream string
	Data   []byte
	Gap    int64
	Exit   *int
	// Offset is where the log stands after this piece, in bytes of the
	// process's whole output: a reader that resumes from it misses nothing
	// the ring still holds.
	Offset int64
}

// Processes is a driver that runs background processes in its sandboxes,
// lists their processes and signals them.
type Processes interface {
	StartProcess(ctx context.Context, ref Ref, spec ProcessSpec) (Process, error)
	ListProcesses(ctx context.Context, ref Ref) ([]Process, error)
	// ProcessLogs calls ready once the process is found, then fn with its
	// log from offset from (0: the start of what is kept); with follow it
	// goes on until the process exits (the Exit output) or ctx is done.
	ProcessLogs(ctx context.Context, ref Ref, pid int, follow bool, from int64, ready func(), fn func(ProcessOutput) error) error
	// ProcessStdin writes data to a managed process's stdin, then closes
	// it if eof.
	ProcessStdin(ctx context.Context, ref Ref, pid int, data []byte, eof bool) error
	SignalProcess(ctx context.Context, ref Ref, pid int, sig syscall.Signal) error
}

// WatchEvent is one change under a watched path: Type "create", "write",
// "remove", "rename" (From is the old path) or "overflow" (events were
// lost); Kind is "file" or "dir".
type WatchEvent struct {
	Type string `json:"-"`
	// ID names the event for a reader resuming (Manager.Watch sets it).
	ID   string `json:"-"`
	Path string `json:"path,omitempty"`
	Kind string `json:"type,omitempty"`
	From string `json:"from,omitempty"`
}

// Watcher is a driver that reports file changes in its sandboxes.
type Watcher interface {
	// Watch calls ready once the watch is in place, then fn with every
	// change under path (below it too if recursive) until ctx is done,
	// fn fails or path goes away.
	Watch(ctx context.Context, ref Ref, path string, recursive bool, ready func(), fn func(WatchEvent) error) error
}

// signals are the signal names SignalProcess accepts.
var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGKILL": syscall.SIGKILL, "SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1,
	"SIGUSR2": syscall.SIGUSR2, "SIGSTOP": syscall.SIGSTOP, "SIGCONT": syscall.SIGCONT,
	"SIGWINCH": syscall.SIGWINCH, "SIGALRM": syscall.SIGALRM,
}

// ParseSignal resolves a signal name ("SIGTERM" or "TERM", any case).
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if s, ok := signals[n]; ok {
		return s, nil
	}
	return 0, errs.Field("signal", "not one of SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGTERM, SIGUSR1, SIGUSR2, SIGSTOP, SIGCONT, SIGWINCH, SIGALRM")
}

func (m *Manager) processes(ctx context.Context, ownerID, id string) (*Sandbox, Processes, error) {
	sb, p, _, err := capability[Processes](ctx, m, ownerID, id, "/", "processes")
	return sb, p, err
}

func checkPID(pid int) error {
	if pid <= 0 {
		return errs.Field("pid", "must be a positive process id")
	}
	return nil
}

// StartProcess starts a background command in the owner's sandbox.
func (m *Manager) StartProcess(ctx context.Context, ownerID, id string, spec ProcessSpec) (Process, error) {
	if err := CheckExec(spec.Command, spec.Env, spec.Workdir); err != nil {
		return Process{}, err
	}
	if len(spec.Name) > 128 || !isPrintable(spec.Name) {
		return Process{}, errs.Field("name", "at most 128 printable characters")
	}
	sb, p, err := m.processes(ctx, ownerID, id)
	if err != nil {
		return Process{}, err
	}
	m.Touch(id)
	return p.StartProcess(ctx, sb.Ref, spec)
}

// ListProcesses lists every process of the owner's sandbox.
func (m *Manager) ListProcesses(ctx context.Context, ownerID, id string) ([]Process, error) {
	sb, p, err := m.processes(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	return p.ListProcesses(ctx, sb.Ref)
}

// ProcessLogs streams a managed process's log (see Processes).
func (m *Manager) ProcessLogs(ctx context.Context, ownerID, id string, pid int, follow bool, from int64, ready func(), fn func(ProcessOutput) error) error {
	if err := checkPID(pid); err != nil {
		return err
	}
	sb, p, err := m.processes(ctx, ownerID, id)
	if err != nil {
		return err
	}
	return p.ProcessLogs(ctx, sb.Ref, pid, follow, from, ready, fn)
}

// ProcessStdin writes to a managed process's stdin.
func (m *Manager) ProcessStdin(ctx context.Context, ownerID, id string, pid int, data []byte, eof bool) error {
	if err := checkPID(pid); err != nil {
		return err
	}
	if len(data) > MaxStdinWrite {
		return errs.E(errs.TooLarge, "stdin writes are limited to %d bytes each", MaxStdinWrite)
	}
	sb, p, err := m.processes(ctx, ownerID, id)
	if err != nil {
		return err
	}
	m.Touch(id)
	return p.ProcessStdin(ctx, sb.Ref, pid, data, eof)
}

// SignalProcess sends the named signal to a process of the owner's sandbox.
func (m *Manager) SignalProcess(ctx context.Context, ownerID, id string, pid int, signal string) error {
	if err := checkPID(pid); err != nil {
		return err
	}
	sig, err := ParseSignal(signal)
	if err != nil {
		return err
	}
	sb, p, err := m.processes(ctx, ownerID, id)
	if err != nil {
		return err
	}
	m.Touch(id)
	return p.SignalProcess(ctx, sb.Ref, pid, sig)
}
