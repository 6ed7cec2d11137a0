// Package claude adapts the Claude Code CLI to agent runs: it builds the
// argv and environment of `claude -p ... --output-format stream-json
// --verbose` and parses its stream-json output into agent events.
package claude

import (
	"maps"
	"strconv"
	"strings"

	"github.com/techbossai/techboss/internal/agent"
)

// Defaults for paths inside the sandbox. The config dir lives in the
// workspace so the session file is snapshotted with it and --resume works
// in any restored sandbox (sessions resume only from the same cwd).
const (
	DefaultConfigDir = "/workspace/.techboss/claude"
	DefaultHome      = "/workspace/.techboss/home"
)

// PermissionModes are the values accepted for agent.Options.PermissionMode.
var PermissionModes = []string{"default", "acceptEdits", "bypassPermissions", "plan", "dontAsk", "ask"}

// Config configures the adapter.
type Config struct {
	// Bin is the CLI's path inside the sandbox ("claude" = found on PATH).
	Bin string
	// ConfigDir is CLAUDE_CONFIG_DIR (default DefaultConfigDir).
	ConfigDir string
	// Home is HOME for the CLI (default DefaultHome).
	Home string
	// Env is added to every run (e.g. CLAUDE_CODE_MAX_RETRIES); it cannot
	// override the credentials or the config dir.
	Env map[string]string
}

// CLI is the Claude Code adapter. It implements agent.CLI.
type CLI struct{ cfg Config }

var _ agent.CLI = (*CLI)(nil)

// New returns the adapter.
func New(cfg Config) *CLI {
	if cfg.Bin == "" {
		cfg.Bin = "claude"
	}
	if cfg.ConfigDir == "" {
		cfg.ConfigDir = DefaultConfigDir
	}
	if cfg.Home == "" {
		cfg.Home = DefaultHome
	}
	return &CLI{cfg: cfg}
}

// Command builds the argv and env of one run. The prompt goes last, after
// "--", so a prompt starting with "-" is never read as a flag.
func (c *CLI) Command(req agent.CommandRequest) ([]string, map[string]string) {
	o := req.Options
	// --include-partial-messages: the model's tokens as they arrive
	// (stream_event lines, parsed into delta events).
	argv := []string{c.cfg.Bin, "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages"}
	if req.ResumeSession != "" {
		argv = append(argv, "--resume", req.ResumeSession)
		if o.ForkSession {
			argv = append(argv, "--fork-session")
		}
	}
	if o.Model != "" {
		argv = append(argv, "--model", o.Model)
	}
	if o.FallbackModel != "" {
		argv = append(argv, "--fallback-model", o.FallbackModel)
	}
	if o.MaxTurns > 0 {
		argv = append(argv, "--max-turns", strconv.Itoa(o.MaxTurns))
	}
	switch {
	case req.Ask:
		// Tool calls wait for the approval server's answer.
		argv = append(argv, "--permission-prompt-tool", agent.ApprovalTool)
		if o.PermissionMode != "" && o.PermissionMode != "ask" && o.PermissionMode != "bypassPermissions" {
			argv = append(argv, "--permission-mode", o.PermissionMode)
		}
	case o.PermissionMode == "", o.PermissionMode == "bypassPermissions":
		// The isolated sandbox is the permission boundary: tools run
		// without prompts (a -p run cannot answer them anyway). As root
		// the CLI accepts this only with IS_SANDBOX=1 (see Root).
		argv = append(argv, "--dangerously-skip-permissions")
	case o.PermissionMode != "":
		argv = append(argv, "--permission-mode", o.PermissionMode)
	}
	if len(o.AllowedTools) > 0 {
		argv = append(argv, "--allowedTools="+strings.Join(o.AllowedTools, ","))
	}
	if len(o.DisallowedTools) > 0 {
		argv = append(argv, "--disallowedTools="+strings.Join(o.DisallowedTools, ","))
	}
	if o.SystemPrompt != "" {
		argv = append(argv, "--system-prompt", o.SystemPrompt)
	}
	if o.AppendSystemPrompt != "" {
		argv = append(argv, "--append-system-prompt", o.AppendSystemPrompt)
	}
	if req.MCPConfig != "" {
		argv = append(argv, "--mcp-config", req.MCPConfig)
	}
	if len(o.Settings) > 0 {
		argv = append(argv, "--settings", string(o.Settings))
	}
	if req.StreamInput {
		argv = append(argv, "--input-format", "stream-json")
	} else {
		argv = append(argv, "--", req.Prompt)
	}

	env := maps.Clone(c.cfg.Env)
	if env == nil {
		env = map[string]string{}
	}
	// The run's own variables, then what the server sets (the service
	// refuses runs that name those).
	maps.Copy(env, o.Env)
	env["CLAUDE_CONFIG_DIR"] = c.cfg.ConfigDir
	env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
	env["HOME"] = c.cfg.Home
	if req.Root {
		env["IS_SANDBOX"] = "1"
	}
	// Empty (direct mode without a server-side upstream): the CLI's own
	// default and the sandbox's env stand.
	if req.BaseURL != "" {
		env["ANTHROPIC_BASE_URL"] = req.BaseURL
	}
	if req.APIKey != "" {
		env["ANTHROPIC_API_KEY"] = req.APIKey
	}
	delete(env, "ANTHROPIC_AUTH_TOKEN")
	return argv, env
}

// NewParser returns a stream-json parser.
func (c *CLI) NewParser() agent.Parser { return &Parser{} }
