package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/techbossai/techboss/internal/errs"
)

// Instruction is one parsed dockerfile_commands entry.
type Instruction struct {
	Cmd  string   // lower-case: run, env, workdir, user, arg, shell
	Args []string // RUN/SHELL exec-form words, or key,value pairs (ENV/ARG), or the single argument
	JSON bool     // RUN in exec (JSON) form
	Raw  string
}

var supported = map[string]bool{"run": true, "env": true, "workdir": true, "user": true, "arg": true, "shell": true}

// Parse parses dockerfile_commands with the real Dockerfile parser. Only
// RUN, ENV, WORKDIR, USER, ARG and SHELL are supported; anything else (and
// any flag, heredoc or multi-instruction entry) is an errs.Invalid error
// naming dockerfile_commands[i].
func Parse(cmds []string) ([]Instruction, error) {
	out := make([]Instruction, 0, len(cmds))
	for i, c := range cmds {
		field := fmt.Sprintf("dockerfile_commands[%d]", i)
		if strings.TrimSpace(c) == "" {
			return nil, errs.Field(field, "empty command")
		}
		res, err := parser.Parse(strings.NewReader(c))
		if err != nil {
			return nil, errs.Field(field, "cannot parse: "+err.Error())
		}
		if len(res.AST.Children) != 1 {
			return nil, errs.Field(field, "must hold exactly one instruction")
		}
		n := res.AST.Children[0]
		cmd := strings.ToLower(n.Value)
		if !supported[cmd] {
			return nil, errs.Field(field, fmt.Sprintf("%s not supported (supported: RUN, ENV, WORKDIR, USER, ARG, SHELL)", strings.ToUpper(cmd)))
		}
		if len(n.Flags) > 0 {
			return nil, errs.Field(field, fmt.Sprintf("flag %s not supported", n.Flags[0]))
		}
		if len(n.Heredocs) > 0 {
			return nil, errs.Field(field, "heredocs not supported")
		}
		in := Instruction{Cmd: cmd, Raw: c, JSON: n.Attributes["json"]}
		for x := n.Next; x != nil; x = x.Next {
			in.Args = append(in.Args, x.Value)
		}
		switch cmd {
		case "env":
			// key, value, separator triples.
			var kv []string
			for j := 0; j+1 < len(in.Args); j += 3 {
				kv = append(kv, in.Args[j], in.Args[j+1])
			}
			if len(kv) == 0 {
				return nil, errs.Field(field, "ENV needs name=value")
			}
			in.Args = kv
		case "arg":
			var kv []string
			for _, w := range in.Args {
				k, v, _ := strings.Cut(w, "=")
				kv = append(kv, k, v)
			}
			if len(kv) == 0 {
				return nil, errs.Field(field, "ARG needs a name")
			}
			in.Args = kv
		case "shell":
			if !in.JSON || len(in.Args) == 0 {
				return nil, errs.Field(field, `SHELL needs a JSON array, e.g. SHELL ["/bin/bash", "-c"]`)
			}
		default:
			if len(in.Args) == 0 {
				return nil, errs.Field(field, strings.ToUpper(cmd)+" needs an argument")
			}
		}
		out = append(out, in)
	}
	return out, nil
}

// Step is one RUN to execute during a build, with the environment, working
// directory and user in effect at that point.
type Step struct {
	Argv []string
	Env  []string
	Dir  string
	User string
	Raw  string
}

type envMap map[string]string

func (e envMap) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e envMap) Keys() []string {
	ks := make([]string, 0, len(e))
	for k := range e {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Plan turns instructions into RUN steps over base and returns the final
// image Config. ARG values are visible to RUN steps and to expansions but
// are not kept in the final environment; ENV values are.
func Plan(base Config, ins []Instruction) ([]Step, Config, error) {
	cfg := base
	cfg.Env = append([]string(nil), base.Env...)
	if len(cfg.Shell) == 0 {
		cfg.Shell = []string{"/bin/sh", "-c"}
	}
	if cfg.WorkingDir == "" {
		cfg.WorkingDir = "/"
	}
	args := envMap{}
	lex := shell.NewLex('\\')
	vars := func() envMap {
		m := envMap{}
		for k, v := range args {
			m[k] = v
		}
		for _, kv := range cfg.Env {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		return m
	}
	expand := func(i int, s string) (string, error) {
		w, _, err := lex.ProcessWord(s, vars())
		if err != nil {
			return "", errs.Field(fmt.Sprintf("dockerfile_commands[%d]", i), "bad variable expansion: "+err.Error())
		}
		return w, nil
	}
	var steps []Step
	for i, in := range ins {
		switch in.Cmd {
		case "run":
			var argv []string
			if in.JSON {
				argv = append(argv, in.Args...)
			} else {
				argv = append(append([]string(nil), cfg.Shell...), strings.Join(in.Args, " "))
			}
			env := append([]string(nil), cfg.Env...)
			for _, k := range args.Keys() {
				if !hasEnv(env, k) {
					env = append(env, k+"="+args[k])
				}
			}
			steps = append(steps, Step{Argv: argv, Env: env, Dir: cfg.WorkingDir, User: cfg.User, Raw: in.Raw})
		case "env":
			for j := 0; j+1 < len(in.Args); j += 2 {
				v, err := expand(i, in.Args[j+1])
				if err != nil {
					return nil, cfg, err
				}
				cfg.Env = setEnv(cfg.Env, in.Args[j], v)
			}
		case "arg":
			for j := 0; j+1 < len(in.Args); j += 2 {
				v, err := expand(i, in.Args[j+1])
				if err != nil {
					return nil, cfg, err
				}
				args[in.Args[j]] = v
			}
		case "workdir":
			w, err := expand(i, in.Args[0])
			if err != nil {
				return nil, cfg, err
			}
			if !path.IsAbs(w) {
				w = path.Join(cfg.WorkingDir, w)
			}
			cfg.WorkingDir = path.Clean(w)
		case "user":
			u, err := expand(i, in.Args[0])
			if err != nil {
				return nil, cfg, err
			}
			cfg.User = u
		case "shell":
			cfg.Shell = append([]string(nil), in.Args...)
		}
	}
	return steps, cfg, nil
}

func hasEnv(env []string, k string) bool {
	for _, kv := range env {
		if key, _, _ := strings.Cut(kv, "="); key == k {
			return true
		}
	}
	return false
}

func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if key, _, _ := strings.Cut(kv, "="); key == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// buildFormat versions the build cache key; bump it when build semantics change.
const buildFormat = "techboss-build-v1"

// BuildKey is the cache key of base + commands.
func BuildKey(baseDigest string, cmds []string) string {
	h := sha256.New()
	// Length-prefixed fields: no two inputs share an encoding.
	for _, s := range append([]string{buildFormat, baseDigest}, cmds...) {
		fmt.Fprintf(h, "%d:", len(s))
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}
