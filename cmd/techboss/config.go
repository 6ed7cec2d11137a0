package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/term"

	"github.com/techbossai/techboss/client"
)

// cliConfig is what `techboss login` keeps in the user's config dir.
type cliConfig struct {
	Server  string `json:"server"`
	Token   string `json:"token"`
	TokenID string `json:"token_id,omitempty"`
	Email   string `json:"email,omitempty"`
}

// configPath is <user config dir>/techboss/config.json: on Linux
// $XDG_CONFIG_HOME, else $HOME/.config (os.UserConfigDir's rule, read
// through the command's environment).
func configPath(e *env) (string, error) {
	var dir string
	if runtime.GOOS == "linux" {
		if x := e.getenv("XDG_CONFIG_HOME"); x != "" {
			dir = x
		} else if h := e.getenv("HOME"); h != "" {
			dir = filepath.Join(h, ".config")
		}
	}
	if dir == "" {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("find the config dir: %w", err)
		}
		dir = d
	}
	return filepath.Join(dir, "techboss", "config.json"), nil
}

func loadConfig(e *env) (*cliConfig, string, error) {
	p, err := configPath(e)
	if err != nil {
		return nil, "", err
	}
	var cfg cliConfig
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &cfg, p, nil
	}
	if err != nil {
		return nil, p, fmt.Errorf("read %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, p, fmt.Errorf("read %s: %w", p, err)
	}
	return &cfg, p, nil
}

// saveConfig writes the config with mode 0600 (it holds a token).
func saveConfig(p string, cfg *cliConfig) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("create config dir: %w", err)
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	tmp, err := os.CreateTemp(filepath.Dir(p), ".config-*.json")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// apiOpts are the flags every client command takes.
type apiOpts struct {
	json   bool
	server string
}

func addAPIFlags(fs *flag.FlagSet) *apiOpts {
	o := &apiOpts{}
	fs.BoolVar(&o.json, "json", false, "machine-readable JSON output")
	fs.StringVar(&o.server, "server", "", "the server URL (default: TECHBOSS_URL, else the one you logged in to, else http://localhost:8080)")
	return o
}

// parseArgs parses flags anywhere among the arguments (`sandbox get SB
// --json`); everything after "--" is an argument. It returns the
// arguments and checks their count is in [minN, maxN] (maxN < 0: any).
func parseArgs(fs *flag.FlagSet, args []string, minN, maxN int, names string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < minN || (maxN >= 0 && len(pos) > maxN) {
		return nil, fmt.Errorf("usage: %s %s", fs.Name(), names)
	}
	return pos, nil
}

// serverURL picks --server, TECHBOSS_URL, the logged-in server, or the default.
func serverURL(e *env, o *apiOpts, cfg *cliConfig) string {
	switch {
	case o != nil && o.server != "":
		return o.server
	case e.getenv("TECHBOSS_URL") != "":
		return e.getenv("TECHBOSS_URL")
	case cfg != nil && cfg.Server != "":
		return cfg.Server
	}
	return "http://localhost:8080"
}

// connect returns a client for the chosen server with TECHBOSS_TOKEN, or
// the token `techboss login` saved for that server.
func connect(e *env, o *apiOpts) (*client.Client, error) {
	cfg, _, err := loadConfig(e)
	if err != nil {
		return nil, err
	}
	base := serverURL(e, o, cfg)
	tok := e.getenv("TECHBOSS_TOKEN")
	if tok == "" && cfg.Token != "" && strings.TrimRight(cfg.Server, "/") == strings.TrimRight(base, "/") {
		tok = cfg.Token
	}
	if tok == "" {
		return nil, fmt.Errorf("not logged in to %s: run `techboss login` or set TECHBOSS_TOKEN", base)
	}
	c, err := client.New(base, client.WithToken(tok))
	if err != nil {
		return nil, fmt.Errorf("server URL: %w", err)
	}
	return c, nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// stdinTerminal reports whether stdin is a terminal.
func stdinTerminal(e *env) (*os.File, bool) {
	f, ok := e.stdin.(*os.File)
	return f, ok && term.IsTerminal(int(f.Fd()))
}
