//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/techbossai/techboss/client"
)

// shellCmd attaches this terminal to a terminal session in the sandbox:
// raw mode while attached, the window size sent on SIGWINCH, and the
// session's exit code as techboss's. Without a terminal on stdin it pipes
// stdin in (a script for the shell) and the output out.
func shellCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "shell")
	o := addAPIFlags(fs)
	session := fs.String("session", "", "re-attach to this session (its scrollback comes first)")
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX [--session ID]")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	in, tty := stdinTerminal(e)
	cols, rows := 80, 24
	out, outTTY := e.stdout.(*os.File)
	if outTTY && term.IsTerminal(int(out.Fd())) {
		if w, h, err := term.GetSize(int(out.Fd())); err == nil {
			cols, rows = w, h
		}
	}
	t, err := c.PTY(ctx, pos[0], client.PTYOptions{Cols: cols, Rows: rows, SessionID: *session})
	if err != nil {
		return err
	}
	defer t.Close()
	if o.json {
		if err := writeJSON(e.stderr, map[string]string{"session_id": t.SessionID()}); err != nil {
			return err
		}
	}
	if tty {
		st, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return fmt.Errorf("raw mode: %w", err)
		}
		defer term.Restore(int(in.Fd()), st)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(int(in.Fd())); err == nil {
					rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_ = t.Resize(rctx, w, h)
					cancel()
				}
			}
		}()
	}
	go func() {
		_, _ = io.Copy(t, e.stdin)
		if !tty {
			_, _ = t.Write([]byte{4}) // stdin ended: ^D, as a terminal would send
		}
	}()
	go func() {
		<-ctx.Done() // SIGTERM (Ctrl-C is a keystroke in raw mode): detach
		t.Close()
	}()
	_, err = io.Copy(e.stdout, t)
	if code, exited := t.ExitCode(); exited {
		if o.json {
			_ = writeJSON(e.stderr, map[string]any{"session_id": t.SessionID(), "exit_code": code})
		}
		return exitWith(code)
	}
	if ctx.Err() != nil {
		fmt.Fprintf(e.stderr, "\r\ndetached from %s (`techboss shell %s --session %s` re-attaches)\r\n", t.SessionID(), pos[0], t.SessionID())
		return nil
	}
	if err == nil {
		err = errors.New("the terminal closed")
	}
	return err
}

func shellList(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "shell ls")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	ss, err := c.PTYSessions(ctx, pos[0])
	if err != nil {
		return err
	}
	if o.json {
		if ss == nil {
			ss = []client.PTYSession{}
		}
		return writeJSON(e.stdout, ss)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tATTACHED\tSIZE\tSTARTED")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%d\t%dx%d\t%s\n", s.SessionID, s.Attached, s.Cols, s.Rows, s.StartedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}
