package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"syscall"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

var (
	_ sandbox.Processes = (*Driver)(nil)
	_ sandbox.Watcher   = (*Driver)(nil)
)

// agentState returns the running sandbox's state for a call to its agent.
func (d *Driver) agentState(ref sandbox.Ref) (*state, error) {
	s, err := d.get(ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	st := s.st
	gone := s.gone
	s.mu.Unlock()
	if gone {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox not found")
	}
	return &st, nil
}

// opCall sends op with args to ref's agent.
func (d *Driver) opCall(ctx context.Context, ref sandbox.Ref, op string, args any) (*json.Decoder, func(), error) {
	st, err := d.agentState(ref)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", op, err)
	}
	req := agent.Request{Op: op, Args: b}
	if op == "proc_start" {
		req.User = st.User
	}
	_, dec, done, err := d.callAgent(ctx, st, req)
	if err != nil {
		return nil, nil, err
	}
	return dec, done, nil
}

// agentError maps an op's failure line to an error kind.
func agentError(kind, field, msg string) error {
	switch kind {
	case "not_found":
		if field != "" {
			return &errs.Error{Kind: errs.NotFound, Message: msg, Fields: []errs.FieldError{{Field: field, Reason: msg}}}
		}
		return errs.E(errs.NotFound, "%s", msg)
	case "invalid":
		if field == "" {
			field = "body"
		}
		return errs.Field(field, msg)
	case "too_many":
		return errs.E(errs.TooMany, "%s", msg)
	case "conflict":
		return errs.E(errs.Conflict, "%s", msg)
	}
	return fmt.Errorf("sandbox agent: %s", msg)
}

// readLine decodes one reply line, mapping a failure line and a dropped
// connection to errors.
func (d *Driver) readLine(ctx context.Context, dec *json.Decoder, v any, failure func() (string, string, string)) error {
	if err := dec.Decode(v); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("sandbox agent: %w", err)
	}
	if kind, field, msg := failure(); msg != "" {
		return agentError(kind, field, msg)
	}
	return nil
}

func toProcess(p agent.ProcInfo) sandbox.Process {
	out := sandbox.Process{
		PID: p.Pid, PPID: p.PPid, Name: p.Name, Command: p.Command, State: "running",
		StartedAt: p.StartedAt, ExitCode: p.ExitCode, Managed: p.Managed,
	}
	if p.Exited {
		out.State = "exited"
	}
	if out.Command == nil {
		out.Command = []string{}
	}
	return out
}

// StartProcess starts a background command through the sandbox's agent,
// as the image's user; it and its log live in the agent.
func (d *Driver) StartProcess(ctx context.Context, ref sandbox.Ref, spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if err := checkEnv(spec.Env); err != nil {
		return sandbox.Process{}, err
	}
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var env []string
	for _, k := range keys {
		env = setEnv(env, k, spec.Env[k])
	}
	dir := spec.Workdir
	if dir == "" {
		dir = "/workspace"
	}
	dec, done, err := d.opCall(ctx, ref, "proc_start", agent.ProcStartArgs{Name: spec.Name, Argv: spec.Command, Env: env, Dir: dir})
	if err != nil {
		return sandbox.Process{}, err
	}
	defer done()
	var line agent.ProcLine
	if err := d.readLine(ctx, dec, &line, func() (string, string, string) { return line.Kind, line.Field, line.Error }); err != nil {
		return sandbox.Process{}, err
	}
	if line.Proc == nil {
		return sandbox.Process{}, errors.New("sandbox agent: no process in its reply")
	}
	return toProcess(*line.Proc), nil
}

// ListProcesses lists every process of the sandbox.
func (d *Driver) ListProcesses(ctx context.Context, ref sandbox.Ref) ([]sandbox.Process, error) {
	dec, done, err := d.opCall(ctx, ref, "proc_list", struct{}{})
	if err != nil {
		return nil, err
	}
	defer done()
	var line agent.ProcLine
	if err := d.readLine(ctx, dec, &line, func() (string, string, string) { return line.Kind, line.Field, line.Error }); err != nil {
		return nil, err
	}
	out := make([]sandbox.Process, 0, len(line.Procs))
	for _, p := range line.Procs {
		out = append(out, toProcess(p))
	}
	return out, nil
}

// ProcessLogs streams a managed process's log from its agent.
func (d *Driver) ProcessLogs(ctx context.Context, ref sandbox.Ref, pid int, follow bool, from int64, ready func(), fn func(sandbox.ProcessOutput) error) error {
	dec, done, err := d.opCall(ctx, ref, "proc_logs", agent.ProcLogsArgs{Pid: pid, Follow: follow, From: from})
	if err != nil {
		return err
	}
	defer done()
	// off follows the agent's replay through the process's whole output
	// (an agent older than from starts at 0 and says so).
	var off int64
	for {
		var line agent.ProcLine
		if err := d.readLine(ctx, dec, &line, func() (string, string, string) { return line.Kind, line.Field, line.Error }); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			return err
		}
		if line.End {
			return nil
		}
		if line.Proc != nil { // the first line
			off = line.Offset
			if ready != nil {
				ready()
			}
			continue
		}
		off += line.Gap + int64(len(line.Data))
		if err := fn(sandbox.ProcessOutput{Stream: line.Stream, Data: line.Data, Gap: line.Gap, Exit: line.Exit, Offset: off}); err != nil {
			return err
		}
	}
}

// ProcessStdin writes to a managed process's stdin through its agent.
func (d *Driver) ProcessStdin(ctx context.Context, ref sandbox.Ref, pid int, data []byte, eof bool) error {
	return d.simpleOp(ctx, ref, "proc_stdin", agent.ProcStdinArgs{Pid: pid, Data: data, EOF: eof})
}

// SignalProcess signals any process of the sandbox through its agent.
func (d *Driver) SignalProcess(ctx context.Context, ref sandbox.Ref, pid int, sig syscall.Signal) error {
	return d.simpleOp(ctx, ref, "proc_signal", agent.ProcSignalArgs{Pid: pid, Signal: int(sig)})
}

func (d *Driver) simpleOp(ctx context.Context, ref sandbox.Ref, op string, args any) error {
	dec, done, err := d.opCall(ctx, ref, op, args)
	if err != nil {
		return err
	}
	defer done()
	var line agent.ProcLine
	return d.readLine(ctx, dec, &line, func() (string, string, string) { return line.Kind, line.Field, line.Error })
}

// Watch streams inotify events from inside the sandbox (the agent's watch op).
func (d *Driver) Watch(ctx context.Context, ref sandbox.Ref, path string, recursive bool, ready func(), fn func(sandbox.WatchEvent) error) error {
	dec, done, err := d.opCall(ctx, ref, "watch", agent.WatchArgs{Path: path, Recursive: recursive})
	if err != nil {
		return err
	}
	defer done()
	first := true
	for {
		var line agent.WatchLine
		if err := d.readLine(ctx, dec, &line, func() (string, string, string) { return line.Kind, line.Field, line.Error }); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			if !first && errors.Is(err, io.ErrUnexpectedEOF) {
				return nil // the watched path went away
			}
			return err
		}
		if line.Ready {
			if first && ready != nil {
				ready()
			}
			first = false
			continue
		}
		if err := fn(sandbox.WatchEvent{Type: line.Event, Path: line.Path, Kind: line.Type, From: line.From}); err != nil {
			return err
		}
	}
}
