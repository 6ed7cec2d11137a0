package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/techbossai/techboss/client"
)

// exitCode makes the process exit with that code and print nothing more
// (exec propagates its command's code this way).
type exitCode int

// exitWith is the process exit code for a command's exit code.
func exitWith(code int) error {
	if code == 0 {
		return nil
	}
	if code < 0 || code > 255 {
		code = 1
	}
	return exitCode(code)
}

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// kvFlag collects repeated K=V flags.
type kvFlag map[string]string

func (f kvFlag) String() string { return "" }
func (f kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	f[k] = v
	return nil
}

// listFlag collects a repeated flag.
type listFlag []string

func (f *listFlag) String() string     { return strings.Join(*f, ",") }
func (f *listFlag) Set(s string) error { *f = append(*f, s); return nil }

func loginCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "login")
	o := addAPIFlags(fs)
	email := fs.String("email", "", "log in with this email; the password is asked for (or read from stdin)")
	token := fs.String("token", "", "use this API token instead of a password (prefer --token-stdin: not in the process list)")
	tokenStdin := fs.Bool("token-stdin", false, "read the API token from stdin")
	if _, err := parseArgs(fs, args, 0, 0, "[--server URL] [--email E | --token-stdin]"); err != nil {
		return err
	}
	cfg, path, err := loadConfig(e)
	if err != nil {
		return err
	}
	base := serverURL(e, o, nil)
	if o.server == "" && e.getenv("TECHBOSS_URL") == "" && cfg.Server != "" {
		base = cfg.Server
	}
	in := bufio.NewReader(e.stdin)
	readLine := func(prompt string, secret bool) (string, error) {
		if f, tty := stdinTerminal(e); tty {
			fmt.Fprint(e.stderr, prompt)
			if secret {
				b, err := term.ReadPassword(int(f.Fd()))
				fmt.Fprintln(e.stderr)
				return string(b), err
			}
		}
		line, err := in.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	tok := *token
	if *tokenStdin {
		if tok, err = readLine("Token: ", true); err != nil {
			return fmt.Errorf("read token: %w", err)
		}
	}
	var me *client.User
	var tokenID string
	if tok != "" {
		c, err := client.New(base, client.WithToken(tok))
		if err != nil {
			return fmt.Errorf("server URL: %w", err)
		}
		if me, err = c.Me(ctx); err != nil {
			return err
		}
	} else {
		addr := *email
		if addr == "" {
			if addr, err = readLine("Email: ", false); err != nil {
				return fmt.Errorf("read email: %w", err)
			}
		}
		pw, err := readLine("Password: ", true)
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		if addr == "" || pw == "" {
			return errors.New("login: give --email and the password (or --token-stdin)")
		}
		c, err := client.New(base)
		if err != nil {
			return fmt.Errorf("server URL: %w", err)
		}
		if me, err = c.Login(ctx, addr, pw); err != nil {
			return err
		}
		host, _ := os.Hostname()
		nt, err := c.CreateToken(ctx, "techboss CLI on "+host)
		if err != nil {
			return err
		}
		_ = c.Logout(ctx)
		tok, tokenID = nt.Token, nt.ID
	}
	cfg = &cliConfig{Server: base, Token: tok, TokenID: tokenID, Email: me.Email}
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, map[string]any{"server": base, "user": me, "config": path})
	}
	fmt.Fprintf(e.stdout, "Logged in to %s as %s (token saved in %s)\n", base, me.Email, path)
	return nil
}

func logoutCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "logout")
	o := addAPIFlags(fs)
	if _, err := parseArgs(fs, args, 0, 0, ""); err != nil {
		return err
	}
	cfg, path, err := loadConfig(e)
	if err != nil {
		return err
	}
	if cfg.Token == "" {
		return errors.New("not logged in")
	}
	if cfg.TokenID != "" { // a token login made: revoke it
		if c, err := client.New(cfg.Server, client.WithToken(cfg.Token)); err == nil {
			if _, err := c.RevokeToken(ctx, cfg.TokenID); err != nil {
				fmt.Fprintf(e.stderr, "techboss: revoking the token: %v\n", err)
			}
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if o.json {
		return writeJSON(e.stdout, map[string]any{"logged_out": cfg.Server})
	}
	fmt.Fprintf(e.stdout, "Logged out of %s\n", cfg.Server)
	return nil
}

func sandboxCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "sandbox create")
	o := addAPIFlags(fs)
	var spec client.SandboxSpec
	envs, labels := kvFlag{}, kvFlag{}
	var cmds listFlag
	fs.StringVar(&spec.ImageBase, "image", "", "the image (e.g. python:3.12-slim, or host)")
	fs.Var(&cmds, "run", "a Dockerfile command to build the image with (repeatable)")
	fs.StringVar(&spec.Name, "name", "", "a name")
	fs.Var(envs, "env", "an environment variable KEY=VALUE (repeatable)")
	fs.Var(labels, "label", "a label KEY=VALUE (repeatable)")
	network := fs.String("network", "", "none (default), full, or a comma-separated allow-list of hosts and CIDRs")
	fs.Float64Var(&spec.CPU, "cpu", 0, "CPU cores")
	fs.IntVar(&spec.MemoryMB, "memory-mb", 0, "memory limit in MiB")
	fs.IntVar(&spec.DiskMB, "disk-mb", 0, "workspace size limit in MiB")
	fs.IntVar(&spec.IdleTimeoutS, "idle-timeout", 0, "terminate after this many idle seconds")
	fs.StringVar(&spec.VolumeName, "volume", "", "a named volume as the workspace")
	fs.StringVar(&spec.FromSnapshot, "from-snapshot", "", "start from this snapshot")
	if _, err := parseArgs(fs, args, 0, 0, "[flags]"); err != nil {
		return err
	}
	spec.DockerfileCommands = cmds
	if len(envs) > 0 {
		spec.Env = envs
	}
	if len(labels) > 0 {
		spec.Labels = labels
	}
	switch *network {
	case "":
	case "none", "full":
		spec.Network = *network
	default:
		spec.Network = client.NetworkAllow(strings.Split(*network, ",")...)
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	sb, err := c.CreateSandbox(ctx, spec)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, sb)
	}
	fmt.Fprintln(e.stdout, sb.SandboxID)
	return nil
}

func sandboxList(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "sandbox ls")
	o := addAPIFlags(fs)
	var states listFlag
	labels := kvFlag{}
	fs.Var(&states, "state", "only sandboxes in this state (repeatable)")
	fs.Var(labels, "label", "only sandboxes with this label KEY=VALUE (repeatable)")
	all := fs.Bool("all", false, "every page, not only the first 100")
	if _, err := parseArgs(fs, args, 0, 0, "[--state S] [--label K=V] [--all]"); err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	var sbs []client.Sandbox
	opts := client.ListSandboxesOptions{Limit: 100, States: states, Labels: labels}
	for {
		page, err := c.ListSandboxes(ctx, opts)
		if err != nil {
			return err
		}
		sbs = append(sbs, page.Sandboxes...)
		if !*all || page.NextCursor == "" {
			break
		}
		opts.Cursor = page.NextCursor
	}
	if o.json {
		if sbs == nil {
			sbs = []client.Sandbox{}
		}
		return writeJSON(e.stdout, sbs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tNAME\tIMAGE\tCREATED")
	for _, s := range sbs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Status, s.Spec.Name, s.Spec.ImageBase, s.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func sandboxGet(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "sandbox get")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, 1, "SANDBOX")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	sb, err := c.GetSandbox(ctx, pos[0])
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, sb)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\nstatus:\t%s\n", sb.ID, sb.Status)
	if sb.Reason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", sb.Reason)
	}
	fmt.Fprintf(tw, "name:\t%s\nimage:\t%s\ndriver:\t%s\ncreated:\t%s\nlast active:\t%s\n",
		sb.Spec.Name, sb.Spec.ImageBase, sb.Driver, sb.CreatedAt.Local().Format(time.DateTime), sb.LastActiveAt.Local().Format(time.DateTime))
	return tw.Flush()
}

func sandboxRemove(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "sandbox rm")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 1, -1, "SANDBOX...")
	if err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	var out []*client.Sandbox
	for _, id := range pos {
		sb, err := c.TerminateSandbox(ctx, id)
		if err != nil {
			return err
		}
		out = append(out, sb)
		if !o.json {
			fmt.Fprintf(e.stdout, "%s %s\n", sb.ID, sb.Status)
		}
	}
	if o.json {
		return writeJSON(e.stdout, out)
	}
	return nil
}

func execCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "exec")
	o := addAPIFlags(fs)
	envs := kvFlag{}
	workdir := fs.String("workdir", "", "the working directory (default /workspace)")
	fs.Var(envs, "env", "an environment variable KEY=VALUE (repeatable)")
	timeout := fs.Float64("timeout", 0, "kill the command after this many seconds")
	stdin := fs.Bool("stdin", false, "send this process's stdin to the command")
	pos, err := parseArgs(fs, args, 2, -1, "SANDBOX [flags] -- COMMAND [ARG...]")
	if err != nil {
		return err
	}
	req := client.ExecRequest{Command: pos[1:], Workdir: *workdir, TimeoutS: *timeout}
	if len(envs) > 0 {
		req.Env = envs
	}
	if *stdin {
		b, err := io.ReadAll(e.stdin)
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		if utf8.Valid(b) {
			s := string(b)
			req.Stdin = &s
		} else {
			req.StdinB64 = base64.StdEncoding.EncodeToString(b)
		}
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	if o.json {
		res, err := c.Exec(ctx, pos[0], req)
		if err != nil {
			return err
		}
		if err := writeJSON(e.stdout, map[string]any{
			"exit_code": res.ExitCode, "signal": res.Signal, "duration_ms": res.DurationMS, "oom_killed": res.OOMKilled, "timed_out": res.TimedOut,
			"stdout": string(res.Stdout), "stderr": string(res.Stderr), "stdout_truncated": res.StdoutTruncated, "stderr_truncated": res.StderrTruncated,
		}); err != nil {
			return err
		}
		return exitWith(res.ExitCode)
	}
	exit, err := c.ExecStream(ctx, pos[0], req, e.stdout, e.stderr)
	if err != nil {
		return err
	}
	return exitWith(exit.ExitCode)
}
