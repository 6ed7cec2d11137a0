package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/config"
	"github.com/techbossai/techboss/internal/store"
)

// env is what every command gets: the process's I/O and environment.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// command is one CLI command, named by one or more words ("user create").
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists every command. Client commands (sandbox, claude, ...)
// add one entry each.
func commands() []command {
	return []command{
		{"user create", "create a user: --email E [--password P | password on stdin] [--admin]", userCreate},
		{"token create", "create an API token for a user: --email E --name N (prints the token once)", tokenCreate},
		{"migrate", "run pending database migrations (DATABASE_URL or TECHBOSS_DATA_DIR)", migrate},
		{"version", "print the version", printVersion},
		{"whoami", "show the user you act as on the server", whoami},
		{"login", "log in: --email E (password asked, or on stdin) or --token-stdin; keeps the token in your config dir", loginCmd},
		{"logout", "revoke the login's token and forget it", logoutCmd},
		{"sandbox create", "create a sandbox: [--image I] [--name N] [--env K=V] [--network none|full|hosts] ...; prints its ID", sandboxCreate},
		{"sandbox ls", "list your sandboxes [--state S] [--label K=V] [--all]", sandboxList},
		{"sandbox get", "show a sandbox: SANDBOX", sandboxGet},
		{"sandbox rm", "terminate sandboxes: SANDBOX...", sandboxRemove},
		{"exec", "run a command, streaming its output: SANDBOX [--workdir D] [--env K=V] [--stdin] -- CMD [ARG...]; exits with its code", execCmd},
		{"shell", "a terminal in the sandbox (raw mode; the session's exit code): SANDBOX [--session ID]", shellCmd},
		{"shell ls", "a sandbox's terminal sessions: SANDBOX", shellList},
		{"cp", "copy files and directories: SRC DST, one of them SANDBOX:PATH", cpCmd},
		{"claude", "run Claude Code, streaming its answer: SANDBOX \"PROMPT\" (Ctrl-C cancels the run)", claudeCmd},
		{"runs ls", "list a sandbox's runs: SANDBOX", runsList},
		{"runs logs", "print a run's answer (follows it while it runs): RUN [--after N]", runsLogs},
		{"snapshot ls", "list a sandbox's snapshots: SANDBOX", snapshotList},
		{"snapshot create", "snapshot a sandbox's workspace now: SANDBOX", snapshotCreate},
		{"snapshot restore", "restore a snapshot into a sandbox: SANDBOX SNAPSHOT", snapshotRestore},
		{"snapshot diff", "paths added (+), removed (-) and changed (~) between snapshots: FROM TO", snapshotDiff},
		{"ports", "list a sandbox's listening ports and their preview URLs: SANDBOX", portsCmd},
		{"open", "print the web UI's URL [SANDBOX], or a port's preview URL SANDBOX PORT; --browser opens it", openCmd},
	}
}

// run dispatches args to the command with the longest matching name.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return nil
	}
	var best *command
	words := 0
	for _, c := range commands() {
		n := strings.Fields(c.name)
		if len(n) <= len(args) && strings.Join(args[:len(n)], " ") == c.name && len(n) > words {
			best, words = &c, len(n)
		}
	}
	if best == nil {
		usage(stderr)
		return fmt.Errorf("unknown command %q", strings.Join(args, " "))
	}
	err := best.run(ctx, e, args[words:])
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the command's flags
	}
	return err
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: techboss <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-17s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Database commands use DATABASE_URL, else SQLite in TECHBOSS_DATA_DIR (./data).")
	fmt.Fprintln(w, "Client commands talk to --server, else TECHBOSS_URL, else the server you logged in to (default")
	fmt.Fprintln(w, "http://localhost:8080), with TECHBOSS_TOKEN or the token `techboss login` saved. Each takes --json")
	fmt.Fprintln(w, "for machine-readable output. `techboss COMMAND -h` lists a command's flags.")
}

// newFlags returns a flag set for a command that reports errors instead of exiting.
func newFlags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("techboss "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// openStore opens and migrates the database the server would use.
func openStore(ctx context.Context, e *env) (*store.DB, error) {
	cfg, err := config.Load(nil, e.getenv, e.stderr)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cfg.Database(), "postgres") {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
	}
	db, err := store.Open(ctx, cfg.Database())
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func whoami(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "whoami")
	o := addAPIFlags(fs)
	if _, err := parseArgs(fs, args, 0, 0, ""); err != nil {
		return err
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	u, err := c.Me(ctx)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, u)
	}
	fmt.Fprintf(e.stdout, "%s (%s, %s)\n", u.Email, u.Role, u.ID)
	return nil
}

func authService(db *store.DB, e *env) *auth.Service {
	return auth.New(auth.Options{Store: db, Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
}

func userCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "user create")
	email := fs.String("email", "", "the user's email (required)")
	password := fs.String("password", "", "the password; omit to read it from stdin (safer: not in the process list)")
	admin := fs.Bool("admin", false, "give the user the admin role")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *email == "" {
		return errors.New("user create: --email is required")
	}
	pw := *password
	if pw == "" {
		line, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password from stdin: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
		if pw == "" {
			return errors.New("user create: give --password or the password on stdin")
		}
	}
	role := auth.RoleMember
	if *admin {
		role = auth.RoleAdmin
	}
	db, err := openStore(ctx, e)
	if err != nil {
		return err
	}
	defer db.Close()
	u, err := authService(db, e).CreateUser(ctx, *email, auth.Secret(pw), role)
	if err != nil {
		return fmt.Errorf("user create: %w", err)
	}
	fmt.Fprintf(e.stdout, "created %s %s (%s)\n", u.Role, u.Email, u.ID)
	return nil
}

func tokenCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "token create")
	email := fs.String("email", "", "the user the token acts as (required)")
	name := fs.String("name", "", "a name to recognise the token by (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *email == "" || *name == "" {
		return errors.New("token create: --email and --name are required")
	}
	db, err := openStore(ctx, e)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := authService(db, e)
	u, err := svc.UserByEmail(ctx, *email)
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	_, sec, err := svc.CreateToken(ctx, u.ID, *name)
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	// The token alone on stdout, so scripts can capture it.
	fmt.Fprintln(e.stdout, sec.Reveal())
	return nil
}

func migrate(ctx context.Context, e *env, args []string) error {
	if err := parse(newFlags(e, "migrate"), args); err != nil {
		return err
	}
	db, err := openStore(ctx, e)
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Fprintf(e.stdout, "migrated (%s)\n", db.Dialect())
	return nil
}

func printVersion(_ context.Context, e *env, args []string) error {
	if err := parse(newFlags(e, "version"), args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, version())
	return nil
}

// buildVersion is set by the Makefile (-X main.buildVersion=<git describe>).
var buildVersion string

// version is the version the build was given, else the module version or
// VCS revision of this binary.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return "dev"
}
