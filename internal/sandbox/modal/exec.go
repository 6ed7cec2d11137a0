package modal

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// wrapperScript records the command's PID (the shell's, kept by exec) in
// the file named by $0, then becomes the command. A read-only /tmp costs
// only signal delivery, never the command.
const wrapperScript = `echo $$ > "$0" 2>/dev/null; exec "$@"`

// killGrace is how long Exec waits for a command to die after its context
// was cancelled and SIGKILL was sent, before giving up on the wait.
const killGrace = 15 * time.Second

// maxStdinChunk bounds one stdin write message.
const maxStdinChunk = 4 << 20

// Exec runs argv in the sandbox, streaming output as it arrives.
func (d *Driver) Exec(ctx context.Context, r sandbox.Ref, req sandbox.ExecRequest) (sandbox.ExitStatus, error) {
	if len(req.Argv) == 0 {
		return sandbox.ExitStatus{}, errs.Field("argv", "required")
	}
	if req.User != "" && req.User != "root" && req.User != "0" {
		return sandbox.ExitStatus{}, errs.Field("user", "the modal driver runs commands as the image's user only")
	}
	h, _, err := d.handle(r)
	if err != nil {
		return sandbox.ExitStatus{}, err
	}
	dir := req.Dir
	if dir == "" {
		dir = "/workspace"
	}
	pidFile := "/tmp/.techboss-exec-" + newNonce() + ".pid"
	argv := append([]string{"/bin/sh", "-c", wrapperScript, pidFile}, req.Argv...)
	params := &modalsdk.SandboxExecParams{Workdir: dir, Env: req.Env, Stdout: modalsdk.Pipe, Stderr: modalsdk.Pipe}
	if req.Stdout == nil {
		params.Stdout = modalsdk.Ignore
	}
	if req.Stderr == nil {
		params.Stderr = modalsdk.Ignore
	}
	start := time.Now()
	cp, err := h.Exec(ctx, argv, params)
	if err != nil {
		return sandbox.ExitStatus{}, mapErr(err, "exec")
	}

	var wg sync.WaitGroup
	copyOut := func(w io.Writer, rc io.ReadCloser) {
		defer wg.Done()
		defer rc.Close()
		if _, err := io.Copy(w, rc); err != nil {
			d.log.DebugContext(ctx, "modal exec output copy", "error", err)
		}
	}
	if req.Stdout != nil {
		wg.Add(1)
		go copyOut(req.Stdout, cp.Stdout)
	}
	if req.Stderr != nil {
		wg.Add(1)
		go copyOut(req.Stderr, cp.Stderr)
	}
	// Stdin is fed by its own goroutine, which is not waited for: a reader
	// that never reaches EOF must not keep Exec from returning once the
	// command has exited. Its writes fail once the exec is gone.
	if req.Stdin != nil {
		go func() {
			_, err := io.CopyBuffer(chunkWriter{cp.Stdin}, io.LimitReader(req.Stdin, 1<<62), make([]byte, 1<<20))
			if err != nil {
				d.log.DebugContext(ctx, "modal exec stdin copy", "error", err)
			}
			_ = cp.Stdin.Close()
		}()
	} else if err := cp.Stdin.Close(); err != nil {
		d.log.DebugContext(ctx, "modal exec stdin close", "error", err)
	}

	// The waiter outlives a cancelled ctx until the kill has taken effect.
	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	waited := make(chan struct{})
	var code int
	var waitErr error
	go func() {
		defer close(waited)
		code, waitErr = cp.Wait(waitCtx, nil)
	}()

	var sent syscall.Signal
	sigs := req.Signals
	cancelled := false
	for done := false; !done; {
		select {
		case <-waited:
			done = true
		case s, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			sent = s
			d.signal(context.WithoutCancel(ctx), h, pidFile, s)
		case <-ctx.Done():
			if cancelled {
				continue
			}
			cancelled = true
			sent = syscall.SIGKILL
			d.signal(context.WithoutCancel(ctx), h, pidFile, syscall.SIGKILL)
			t := time.AfterFunc(killGrace, stopWait)
			defer t.Stop()
			// Keep waiting for the exit, without selecting on ctx again.
			<-waited
			done = true
		}
	}
	if waitErr != nil && !cancelled {
		wg.Wait()
		return sandbox.ExitStatus{}, mapErr(waitErr, "exec wait")
	}
	wg.Wait()
	st := sandbox.ExitStatus{Code: code, Duration: time.Since(start)}
	if code > 128 && code <= 128+64 {
		// Modal (like a shell) reports death by signal N as 128+N.
		st.Signal = signalName(syscall.Signal(code - 128))
	}
	if cancelled {
		if st.Signal == "" && waitErr != nil {
			st.Signal = signalName(sent)
		}
		return st, fmt.Errorf("exec cancelled: %w", ctx.Err())
	}
	return st, nil
}

// signal delivers s to the command whose PID the wrapper wrote to pidFile,
// and to its process group when it leads one.
func (d *Driver) signal(ctx context.Context, h *modalsdk.Sandbox, pidFile string, s syscall.Signal) {
	ctx, cancel := context.WithTimeout(ctx, killGrace)
	defer cancel()
	name := strings.TrimPrefix(signalName(s), "SIG")
	// The whole process group when the command leads one, else the process.
	script := `p=$(cat "$0" 2>/dev/null) || exit 0; kill -s "$1" -- "-$p" 2>/dev/null || kill -s "$1" "$p" 2>/dev/null; [ "$1" = KILL ] && rm -f "$0"; exit 0`
	cp, err := h.Exec(ctx, []string{"/bin/sh", "-c", script, pidFile, name}, &modalsdk.SandboxExecParams{Stdout: modalsdk.Ignore, Stderr: modalsdk.Ignore})
	if err != nil {
		d.log.WarnContext(ctx, "modal exec signal", "signal", name, "error", err)
		return
	}
	_ = cp.Stdin.Close()
	if _, err := cp.Wait(ctx, nil); err != nil {
		d.log.WarnContext(ctx, "modal exec signal wait", "signal", name, "error", err)
	}
}

func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGILL: "SIGILL",
		syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE",
		syscall.SIGKILL: "SIGKILL", syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
		syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM", syscall.SIGCHLD: "SIGCHLD",
		syscall.SIGCONT: "SIGCONT", syscall.SIGSTOP: "SIGSTOP", syscall.SIGTSTP: "SIGTSTP", syscall.SIGTTIN: "SIGTTIN",
		syscall.SIGTTOU: "SIGTTOU", syscall.SIGURG: "SIGURG", syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ",
		syscall.SIGVTALRM: "SIGVTALRM", syscall.SIGPROF: "SIGPROF", syscall.SIGWINCH: "SIGWINCH", syscall.SIGIO: "SIGIO",
		syscall.SIGPWR: "SIGPWR", syscall.SIGSYS: "SIGSYS",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("SIG%d", int(s))
}

// chunkWriter splits large writes so no single stdin message is huge.
type chunkWriter struct{ w io.Writer }

func (c chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), maxStdinChunk)
		m, err := c.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}
