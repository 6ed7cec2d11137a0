package sandbox

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/techbossai/techboss/internal/errs"
)

// Limits are the server-side defaults and maximums every Spec is checked
// against. The zero value is not useful; start from DefaultLimits.
type Limits struct {
	// DefaultImage is used when a Spec leaves image_base empty.
	DefaultImage string

	DefaultCPU float64
	MaxCPU     float64

	DefaultMemoryMB int
	MaxMemoryMB     int

	DefaultPidsLimit int
	MaxPidsLimit     int

	DefaultDiskMB int
	MaxDiskMB     int

	DefaultIdleTimeout time.Duration
	MaxIdleTimeout     time.Duration

	DefaultLifetime time.Duration
	MaxLifetime     time.Duration

	// AllowFullNetwork permits network "full"; when false only "none" is accepted.
	AllowFullNetwork bool
	// AllowGPU permits a non-empty gpu field (drivers that cannot honour it refuse at create).
	AllowGPU bool

	// MaxRunningPerUser caps a user's sandboxes that are creating or running (0 = no cap).
	MaxRunningPerUser int

	// MaxDockerfileCommands caps the number of dockerfile_commands entries.
	MaxDockerfileCommands int
	// MaxEnv caps the number of env entries.
	MaxEnv int
	// MaxLabels caps the number of labels.
	MaxLabels int

	// CreateTimeout bounds one Create (image pull + build + start).
	CreateTimeout time.Duration
	// MaxExecTimeout bounds an exec's timeout_s.
	MaxExecTimeout time.Duration
	// ExecOutputCap caps stdout and stderr, each, in a non-streaming exec answer.
	ExecOutputCap int
	// ReapInterval is how often the reaper checks for idle and expired sandboxes.
	ReapInterval time.Duration
	// LivenessInterval is how often the reaper asks a driver whether a
	// running sandbox still runs (lost detection without an exec).
	LivenessInterval time.Duration
	// PTYGrace is how long a terminal session outlives its last connection.
	PTYGrace time.Duration
}

// DefaultLimits returns the limits a server starts with unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{
		DefaultImage:          "host",
		DefaultCPU:            1,
		MaxCPU:                8,
		DefaultMemoryMB:       2048,
		MaxMemoryMB:           16384,
		DefaultPidsLimit:      1024,
		MaxPidsLimit:          32768,
		DefaultDiskMB:         10240,
		MaxDiskMB:             102400,
		DefaultIdleTimeout:    30 * time.Minute,
		MaxIdleTimeout:        24 * time.Hour,
		DefaultLifetime:       24 * time.Hour,
		MaxLifetime:           7 * 24 * time.Hour,
		AllowFullNetwork:      true,
		MaxRunningPerUser:     10,
		MaxDockerfileCommands: 100,
		MaxEnv:                128,
		MaxLabels:             32,
		CreateTimeout:         15 * time.Minute,
		MaxExecTimeout:        24 * time.Hour,
		ExecOutputCap:         1 << 20,
		ReapInterval:          10 * time.Second,
		LivenessInterval:      time.Minute,
		PTYGrace:              DefaultPTYGrace,
	}
}

// Field limits that are not configurable: they bound stored sizes.
const (
	maxNameLen        = 63
	maxLabelKeyLen    = 63
	maxLabelValueLen  = 255
	maxEnvValueLen    = 32 << 10
	maxKeyPrefixLen   = 1024
	maxDockerLineLen  = 16 << 10
	maxImageRefLen    = 512
	maxSnapshotIDLen  = 128
	maxVolumeNameLen  = 63
	maxGPULen         = 32
	maxCommandArgs    = 4096
	maxCommandArgLen  = 128 << 10
	maxExecEnvEntries = 256
)

// AllowedDockerfileInstructions is the subset of Dockerfile instructions a
// spec may use: there is no build context, so COPY/ADD cannot work, and
// FROM is image_base.
var allowedInstructions = []string{"run", "env", "workdir", "user", "arg", "shell"}

var (
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	bucketRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*[a-z0-9]$`)
	snapshotRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	imageRefRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$`)
)

// maxSpecPorts bounds the tunnels a spec may ask Modal for.
const maxSpecPorts = 16

// secretNameRE is the secret store's name rule (internal/secrets).
var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// secretRefRE also takes a team's secret, "team:<team id>/<name>" (the
// API expands "team:<name>" in a team-scoped create; docs/teams.md).
var secretRefRE = regexp.MustCompile(`^(team:[A-Za-z0-9_]{1,64}/)?[A-Za-z0-9_.-]{1,64}$`)

// Validate checks a spec against the limits and returns an errs.Invalid
// error naming every bad field, or nil. It does not change s; see
// WithDefaults.
func (s Spec) Validate(l Limits) error {
	var fs []errs.FieldError
	bad := func(field, format string, args ...any) {
		fs = append(fs, errs.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}

	if s.ImageBase != "" && s.ImageBase != "host" {
		switch {
		case len(s.ImageBase) > maxImageRefLen:
			bad("image_base", "longer than %d characters", maxImageRefLen)
		case !imageRefRE.MatchString(s.ImageBase) || strings.Contains(s.ImageBase, ".."):
			bad("image_base", "not an image reference (e.g. alpine:3.20 or registry.example.com/team/img@sha256:...)")
		}
	}
	if s.RegistryCredential != "" {
		switch {
		case !secretRefRE.MatchString(s.RegistryCredential):
			bad("registry_credential", "must name a stored secret (1-64 letters, digits, '.', '_', '-'), or a team's as team:NAME")
		case s.ImageBase == "" || s.ImageBase == "host":
			bad("registry_credential", "needs an image_base from a registry")
		}
	}
	if len(s.Ports) > maxSpecPorts {
		bad("ports", "at most %d ports", maxSpecPorts)
	}
	for i, p := range s.Ports {
		if p < 1 || p > 65535 {
			bad(fmt.Sprintf("ports[%d]", i), "must be a TCP port number, 1 to 65535")
		}
	}
	if l.MaxDockerfileCommands > 0 && len(s.DockerfileCommands) > l.MaxDockerfileCommands {
		bad("dockerfile_commands", "more than %d commands", l.MaxDockerfileCommands)
	} else {
		for i, c := range s.DockerfileCommands {
			if err := checkDockerfileCommand(c); err != "" {
				bad(fmt.Sprintf("dockerfile_commands[%d]", i), "%s", err)
			}
		}
	}
	if s.VolumeName != "" && (len(s.VolumeName) > maxVolumeNameLen || !volumeNameRE.MatchString(s.VolumeName)) {
		bad("volume_name", "must be 1-%d characters of letters, digits, '.', '_', '-', starting with a letter or digit", maxVolumeNameLen)
	}
	if s.S3BucketName != "" {
		if r := checkBucketName(s.S3BucketName); r != "" {
			bad("s3_bucket_name", "%s", r)
		}
	}
	if s.S3KeyPrefix != "" {
		if r := checkKeyPrefix(s.S3KeyPrefix); r != "" {
			bad("s3_key_prefix", "%s", r)
		}
	}
	if l.MaxEnv > 0 && len(s.Env) > l.MaxEnv {
		bad("env", "more than %d variables", l.MaxEnv)
	}
	for _, k := range sortedKeys(s.Env) {
		if !envNameRE.MatchString(k) {
			bad("env."+printable(k), "not a valid variable name (letters, digits, '_', not starting with a digit)")
			continue
		}
		v := s.Env[k]
		if len(v) > maxEnvValueLen {
			bad("env."+k, "value longer than %d bytes", maxEnvValueLen)
		} else if strings.ContainsRune(v, 0) {
			bad("env."+k, "value contains a NUL byte")
		}
	}
	if s.CPU < 0 || s.CPU != s.CPU {
		bad("cpu", "must not be negative")
	} else if l.MaxCPU > 0 && s.CPU > l.MaxCPU {
		bad("cpu", "above the server maximum %g", l.MaxCPU)
	}
	checkInt := func(field string, v, maxV int) {
		if v < 0 {
			bad(field, "must not be negative")
		} else if maxV > 0 && v > maxV {
			bad(field, "above the server maximum %d", maxV)
		}
	}
	checkInt("memory_mb", s.MemoryMB, l.MaxMemoryMB)
	if s.MemoryMB > 0 && s.MemoryMB < 16 {
		bad("memory_mb", "below the minimum 16")
	}
	checkInt("pids_limit", s.PidsLimit, l.MaxPidsLimit)
	if s.PidsLimit > 0 && s.PidsLimit < 8 {
		bad("pids_limit", "below the minimum 8")
	}
	checkInt("disk_mb", s.DiskMB, l.MaxDiskMB)
	checkInt("idle_timeout_s", s.IdleTimeoutS, int(l.MaxIdleTimeout/time.Second))
	checkInt("max_lifetime_s", s.MaxLifetimeS, int(l.MaxLifetime/time.Second))
	switch s.Network.Mode {
	case "", NetworkNone:
	case NetworkFull:
		if !l.AllowFullNetwork {
			bad("network", "\"full\" is disabled on this server")
		}
	case NetworkAllow:
		if !l.AllowFullNetwork {
			bad("network", "outbound networking is disabled on this server")
		} else if len(s.Network.Allow) == 0 {
			bad("network.allow", "must name at least one host or CIDR")
		} else if len(s.Network.Allow) > 256 {
			bad("network.allow", "at most 256 entries")
		}
	default:
		bad("network", "must be \"none\", \"full\" or {\"allow\": [...]}")
	}
	if len(s.Name) > maxNameLen {
		bad("name", "longer than %d characters", maxNameLen)
	} else if !isPrintable(s.Name) {
		bad("name", "contains control characters or invalid UTF-8")
	}
	if l.MaxLabels > 0 && len(s.Labels) > l.MaxLabels {
		bad("labels", "more than %d labels", l.MaxLabels)
	}
	for _, k := range sortedKeys(s.Labels) {
		if len(k) > maxLabelKeyLen || !labelKeyRE.MatchString(k) {
			bad("labels."+printable(k), "key must be 1-%d characters of letters, digits, '.', '_', '/', '-'", maxLabelKeyLen)
			continue
		}
		if v := s.Labels[k]; len(v) > maxLabelValueLen || !isPrintable(v) {
			bad("labels."+k, "value must be at most %d printable characters", maxLabelValueLen)
		}
	}
	if s.FromSnapshot != "" && (len(s.FromSnapshot) > maxSnapshotIDLen || !snapshotRE.MatchString(s.FromSnapshot)) {
		bad("from_snapshot", "not a snapshot ID")
	}
	if s.GPU != "" {
		switch {
		case !l.AllowGPU:
			bad("gpu", "GPUs are not available on this server")
		case len(s.GPU) > maxGPULen || !labelKeyRE.MatchString(s.GPU):
			bad("gpu", "not a GPU type (e.g. T4, A100:2)")
		}
	}
	fs = append(fs, validateRepos(s.Repos)...)
	return errs.Fields(fs)
}

// WithDefaults returns s with server defaults filled in for every field the
// user left empty. Call it after Validate.
func (s Spec) WithDefaults(l Limits) Spec {
	if s.ImageBase == "" {
		s.ImageBase = l.DefaultImage
	}
	if s.CPU == 0 {
		s.CPU = l.DefaultCPU
	}
	if s.MemoryMB == 0 {
		s.MemoryMB = l.DefaultMemoryMB
	}
	if s.PidsLimit == 0 {
		s.PidsLimit = l.DefaultPidsLimit
	}
	if s.DiskMB == 0 {
		s.DiskMB = l.DefaultDiskMB
	}
	if s.Network.Mode == "" {
		s.Network.Mode = NetworkNone
	}
	if s.IdleTimeoutS == 0 {
		s.IdleTimeoutS = int(l.DefaultIdleTimeout / time.Second)
	}
	if s.MaxLifetimeS == 0 {
		s.MaxLifetimeS = int(l.DefaultLifetime / time.Second)
	}
	for i, g := range s.Repos {
		if i == 0 {
			s.Repos = slices.Clone(s.Repos)
		}
		s.Repos[i] = g.WithDefaults()
	}
	return s
}

// checkDockerfileCommand parses one entry with the real Dockerfile parser
// and returns why it is refused, or "".
func checkDockerfileCommand(c string) string {
	if strings.TrimSpace(c) == "" {
		return "empty command"
	}
	if len(c) > maxDockerLineLen {
		return fmt.Sprintf("longer than %d bytes", maxDockerLineLen)
	}
	if strings.ContainsRune(c, 0) || !utf8.ValidString(c) {
		return "contains a NUL byte or invalid UTF-8"
	}
	res, err := parser.Parse(strings.NewReader(c))
	if err != nil {
		return "does not parse: " + err.Error()
	}
	if len(res.AST.Children) != 1 {
		return fmt.Sprintf("must hold exactly one instruction, got %d", len(res.AST.Children))
	}
	n := res.AST.Children[0]
	instr := strings.ToLower(n.Value)
	if !slices.Contains(allowedInstructions, instr) {
		return fmt.Sprintf("instruction %s is not supported (supported: RUN, ENV, WORKDIR, USER, ARG, SHELL)", printable(strings.ToUpper(instr)))
	}
	if n.Next == nil {
		return fmt.Sprintf("%s needs an argument", strings.ToUpper(instr))
	}
	return ""
}

// checkBucketName applies the S3 general-purpose bucket naming rules.
func checkBucketName(b string) string {
	switch {
	case len(b) < 3 || len(b) > 63:
		return "must be 3-63 characters"
	case !bucketRE.MatchString(b):
		return "must be lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
	case strings.Contains(b, ".."):
		return "must not contain two adjacent periods"
	case strings.HasPrefix(b, "xn--") || strings.HasPrefix(b, "sthree-") || strings.HasPrefix(b, "amzn-s3-demo-"):
		return "uses a reserved prefix"
	case strings.HasSuffix(b, "-s3alias") || strings.HasSuffix(b, "--ol-s3") || strings.HasSuffix(b, ".mrap") || strings.HasSuffix(b, "--x-s3"):
		return "uses a reserved suffix"
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return "must not be formatted as an IP address"
	}
	return ""
}

// checkKeyPrefix refuses prefixes that could name keys outside the
// intended tree when joined with relative paths.
func checkKeyPrefix(p string) string {
	switch {
	case len(p) > maxKeyPrefixLen:
		return fmt.Sprintf("longer than %d bytes", maxKeyPrefixLen)
	case !isPrintable(p):
		return "contains control characters or invalid UTF-8"
	case strings.HasPrefix(p, "/"):
		return "must not start with '/'"
	case strings.Contains(p, "\\"):
		return "must not contain '\\'"
	case strings.Contains(p, "//"):
		return "must not contain empty path segments"
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." || seg == "." {
			return "must not contain '.' or '..' segments"
		}
	}
	return ""
}

// CleanPath validates a user-supplied absolute or relative path inside a
// sandbox and returns it absolute and cleaned. It refuses '..' segments
// outright rather than resolving them, NUL bytes and invalid UTF-8; an empty
// path is the root. Drivers still refuse symlink escapes.
func CleanPath(p string) (string, error) {
	if len(p) > 4096 {
		return "", errs.Field("path", "longer than 4096 bytes")
	}
	if strings.ContainsRune(p, 0) || !utf8.ValidString(p) {
		return "", errs.Field("path", "contains a NUL byte or invalid UTF-8")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." {
			return "", errs.Field("path", "must not contain '..'")
		}
	}
	if !strings.HasPrefix(p, "/") {
		p = "/workspace/" + p
	}
	return path.Clean(p), nil
}

// CheckExec validates an exec request's user-controlled parts.
func CheckExec(argv []string, env map[string]string, dir string) error {
	var fs []errs.FieldError
	if len(argv) == 0 || argv[0] == "" {
		fs = append(fs, errs.FieldError{Field: "command", Reason: "must name a program"})
	} else if len(argv) > maxCommandArgs {
		fs = append(fs, errs.FieldError{Field: "command", Reason: fmt.Sprintf("more than %d arguments", maxCommandArgs)})
	}
	for i, a := range argv {
		if len(a) > maxCommandArgLen || strings.ContainsRune(a, 0) {
			fs = append(fs, errs.FieldError{Field: fmt.Sprintf("command[%d]", i), Reason: "too long or contains a NUL byte"})
		}
	}
	if len(env) > maxExecEnvEntries {
		fs = append(fs, errs.FieldError{Field: "env", Reason: fmt.Sprintf("more than %d variables", maxExecEnvEntries)})
	}
	for _, k := range sortedKeys(env) {
		if !envNameRE.MatchString(k) {
			fs = append(fs, errs.FieldError{Field: "env." + printable(k), Reason: "not a valid variable name"})
		} else if len(env[k]) > maxEnvValueLen || strings.ContainsRune(env[k], 0) {
			fs = append(fs, errs.FieldError{Field: "env." + k, Reason: "value too long or contains a NUL byte"})
		}
	}
	if dir != "" {
		if _, err := CleanPath(dir); err != nil {
			fs = append(fs, errs.FieldError{Field: "workdir", Reason: "must not contain '..', NUL bytes or invalid UTF-8"})
		}
	}
	return errs.Fields(fs)
}

func isPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// printable quotes a key for use in a field name when it is not printable.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	if isPrintable(s) {
		return s
	}
	return fmt.Sprintf("%q", s)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
