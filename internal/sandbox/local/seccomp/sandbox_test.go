package seccomp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// requireBwrap returns bubblewrap's path; without it the test skips, or
// fails under TECHBOSS_REQUIRE_ALL=1.
func requireBwrap(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("bwrap")
	if err == nil {
		return path
	}
	const why = "bubblewrap (bwrap) not installed"
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
	return ""
}

// hostProgram is Program, computed once as the driver does.
var hostProgram = sync.OnceValues(Program)

func program(t testing.TB) []byte {
	t.Helper()
	p, err := hostProgram()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sandboxArgs isolate like the driver's sandboxes: every namespace, no
// capabilities, the host's /usr and /etc read-only, a private /tmp.
var sandboxArgs = []string{
	"--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
	"--ro-bind", "/usr", "/usr",
	"--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
	"--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
	"--ro-bind", "/etc", "/etc",
	"--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
}

// sandboxEnv is the whole environment of sandboxed commands.
var sandboxEnv = []string{"PATH=/usr/local/go/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// run runs argv in a sandbox, filtered by prog unless it is nil, and
// returns its combined output. extra goes before the command (binds, env).
func run(t testing.TB, bwrap string, prog []byte, extra []string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append(append([]string{}, sandboxArgs...), extra...)
	var filter *os.File
	if prog != nil {
		// As bubblewrap reads the fd to its end, each start gets its own
		// pipe; the program fits in the pipe's buffer, so it is written
		// before the start.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		_, err = w.Write(prog)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		filter = r
		args = append(args, "--seccomp", "9")
	}
	cmd := exec.CommandContext(ctx, bwrap, append(append(args, "--"), argv...)...)
	cmd.Env = sandboxEnv
	if filter != nil {
		// ExtraFiles[i] is fd 3+i in the child.
		cmd.ExtraFiles = make([]*os.File, 7)
		cmd.ExtraFiles[6] = filter
	}
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestSandboxFilterInstalled(t *testing.T) {
	bwrap := requireBwrap(t)
	out, err := run(t, bwrap, program(t), nil, "grep", "Seccomp", "/proc/self/status")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(out, "Seccomp:\t2\n") {
		t.Errorf("got %q, want a line Seccomp:\\t2 (filter mode)", out)
	}
}

// TestSandboxRefusesNamespaces runs util-linux's unshare, a single-threaded
// C program as an attacker would use.
func TestSandboxRefusesNamespaces(t *testing.T) {
	bwrap := requireBwrap(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	for _, flag := range []string{"-U", "-m", "-n", "-p", "-i", "-u", "-C", "-T"} {
		t.Run(flag, func(t *testing.T) {
			out, err := run(t, bwrap, program(t), nil, "unshare", flag, "true")
			if err == nil {
				t.Fatalf("unshare %s true succeeded under the filter: %s", flag, out)
			}
			if !strings.Contains(out, "Operation not permitted") {
				t.Errorf("got %q, want EPERM (Operation not permitted)", out)
			}
		})
	}
	// Without the filter, the sandbox (root in its own user namespace, no
	// capabilities) can nest a user namespace: the filter is what stops it.
	if out, err := run(t, bwrap, nil, nil, "unshare", "-U", "true"); err != nil {
		t.Logf("without the filter, unshare -U fails too on this host: %v: %s", err, out)
	}
}

// TestSandboxProbe runs testdata/probe, which tries each refused system call
// with arguments the kernel itself would reject with something other than
// EPERM, once with the filter and once without.
func TestSandboxProbe(t *testing.T) {
	bwrap := requireBwrap(t)
	probe := filepath.Join(t.TempDir(), "probe")
	build := exec.Command("go", "build", "-o", probe, "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	bind := []string{"--ro-bind", probe, "/probe"}
	filtered, err := run(t, bwrap, program(t), bind, "/probe")
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, filtered)
	}
	control, err := run(t, bwrap, nil, bind, "/probe")
	if err != nil {
		t.Fatalf("probe without the filter: %v\n%s", err, control)
	}
	got, ctl := parseProbe(filtered), parseProbe(control)
	want := map[string]string{
		"getpid": "ok", "clone-plain": "ok", "ptrace": "ESRCH", // allowed: the kernel answers
		"personality-linux": "ok", "personality-query": "ok",
		"socket-inet": "ok", "socket-unix": "ok",

		"unshare-user": "EPERM", "unshare-mount": "EPERM", "unshare-net": "EPERM", "unshare-files": "EPERM",
		"clone-newuser": "EPERM", "clone-newns": "EPERM", "clone-newpid": "EPERM",
		"clone3-newuser": "ENOSYS", "clone3-plain": "ENOSYS",
		"setns": "EPERM", "mount": "EPERM", "umount2": "EPERM", "pivot_root": "EPERM", "chroot": "EPERM",
		"open_tree": "EPERM", "fsopen": "EPERM",
		"bpf": "EPERM", "perf_event_open": "EPERM",
		"keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM",
		"init_module": "EPERM", "finit_module": "EPERM", "delete_module": "EPERM",
		"kexec_load": "EPERM", "kexec_file_load": "EPERM",
		"open_by_handle_at": "EPERM", "reboot": "EPERM", "swapon": "EPERM", "swapoff": "EPERM",
		"userfaultfd": "EPERM", "io_uring_setup": "EPERM",
		"personality-read-implies-exec": "EPERM",
		"socket-vsock":                  "EPERM", "socket-alg": "EPERM", "socket-inet-high-bits": "EPERM",
		"file_getattr": "ENOSYS", "nr-1000": "ENOSYS",
		"x32-getpid": "killed:SIGSYS", "i386-getpid": "killed:SIGSYS",
	}
	if runtime.GOARCH != "amd64" {
		for _, m := range []map[string]string{want, got, ctl} {
			delete(m, "x32-getpid")
			delete(m, "i386-getpid")
		}
	}
	if c, ok := ctl["i386-getpid"]; ok && c != "ok" {
		// Without IA32 emulation int 0x80 faults before seccomp sees it.
		t.Logf("int 0x80 is not available on this kernel (%s); the i386 check rests on TestProgram", c)
		delete(want, "i386-getpid")
		delete(got, "i386-getpid")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("probe under the filter (-want +got):\n%s\nwithout the filter:\n%s", diff, control)
	}
	// These calls get another answer from the kernel itself, so the
	// refusals above come from the filter, not from missing capabilities.
	for _, name := range []string{
		"unshare-user", "unshare-files", "clone-newuser", "clone3-newuser", "clone3-plain", "setns",
		"mount", "umount2", "chroot", "open_tree", "bpf", "perf_event_open", "keyctl", "add_key",
		"request_key", "open_by_handle_at", "userfaultfd", "socket-vsock", "socket-alg", "x32-getpid",
	} {
		if c, ok := ctl[name]; ok && c == want[name] {
			t.Errorf("%s without the filter: got %s, the same as with it", name, c)
		}
	}
}

func parseProbe(out string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(out) {
		name, res, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if ok {
			m[name] = res
		}
	}
	return m
}

// TestSandboxWorkloads runs what agents run, under the filter.
func TestSandboxWorkloads(t *testing.T) {
	bwrap := requireBwrap(t)
	prog := program(t)
	type workload struct {
		name   string
		need   string // a command it needs: skip without it
		extra  []string
		script string
		want   string // in the output
	}
	tests := []workload{
		{"coreutils", "sh", nil, `set -eu
cd /tmp && mkdir d && cd d
printf 'b\na\nb\n' > f
sort f | uniq -c > g
test "$(wc -l < g)" -eq 2
cp f h && mv h i && ln -s i j && chmod 600 i && touch -d @0 i && stat -c %Y j >/dev/null
tar -cf t.tar f g i && mkdir x && tar -xf t.tar -C x && cmp f x/f
sha256sum f >/dev/null && find . -type f | wc -l >/dev/null
sed -n 1p f >/dev/null && ls -la >/dev/null && df /tmp >/dev/null && id -u >/dev/null
sleep 0.1 & wait
echo done`, "done\n"},
		{"git", "git", nil, `set -eu
cd /tmp && git init -q r && cd r
git config user.email t@example.com && git config user.name t
echo hello > f && git add f && git commit -qm first
echo more >> f && git commit -qam second
git gc -q && git fsck --no-progress
git log --oneline | wc -l`, "2\n"},
		{"node", "node", nil, `node -e '
const fs = require("fs"), cp = require("child_process"), { Worker } = require("worker_threads");
fs.writeFileSync("/tmp/n", "ok");
new Worker("process.exit(3)", { eval: true }).on("exit", (code) => {
  console.log(fs.readFileSync("/tmp/n", "utf8"), cp.execSync("echo child").toString().trim(), code);
});'`, "ok child 3\n"},
		{"python3", "python3", nil, `python3 -c '
import socket, subprocess, tempfile, threading
a, b = socket.socketpair(); a.send(b"x")
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(subprocess.check_output(["echo", "child"]).decode().strip(), b.recv(1).decode(), tempfile.mkdtemp().startswith("/tmp/"))'`, "child x True\n"},
		{"gcc", "gcc", nil, `set -eu
cd /tmp
cat > h.c <<'EOF'
#include <pthread.h>
#include <stdio.h>
static void *f(void *a) { return a; }
int main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0); puts("hello from c"); return 0; }
EOF
gcc -O2 -pthread -o h h.c && ./h`, "hello from c\n"},
	}
	if goroot, gocache, err := goEnv(); err == nil {
		// The host's build cache saves rebuilding the standard library;
		// compile and link of the module still run under the filter.
		extra := []string{"--bind", gocache, "/gocache", "--setenv", "GOCACHE", "/gocache",
			"--setenv", "GOPATH", "/tmp/gopath", "--setenv", "GOTOOLCHAIN", "local",
			"--setenv", "GOPROXY", "off", "--setenv", "CGO_ENABLED", "0",
			"--setenv", "PATH", filepath.Join(goroot, "bin") + ":/usr/bin:/bin"}
		if !strings.HasPrefix(goroot, "/usr/") {
			extra = append(extra, "--ro-bind", goroot, goroot)
		}
		tests = append(tests, workload{"go build", "", extra, `set -eu
mkdir /tmp/m && cd /tmp/m
printf 'module m\n\ngo 1.22\n' > go.mod
printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from go") }\n' > main.go
go build -o hello . && ./hello`, "hello from go\n"})
	}
	if claude, err := claudeBin(); err == nil {
		tests = append(tests, workload{"claude", "", []string{"--ro-bind", filepath.Dir(claude), filepath.Dir(claude)}, claude + " --version", "(Claude Code)"})
	} else {
		t.Run("claude", func(t *testing.T) {
			if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
				t.Fatal(err)
			}
			t.Skip(err)
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.need != "" {
				if _, err := exec.LookPath(tt.need); err != nil {
					if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
						t.Fatal(err)
					}
					t.Skip(err)
				}
			}
			out, err := run(t, bwrap, prog, tt.extra, "sh", "-c", tt.script)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("got %q, want it to contain %q", out, tt.want)
			}
		})
	}
}

func goEnv() (goroot, gocache string, err error) {
	out, err := exec.Command("go", "env", "GOROOT", "GOCACHE").Output()
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", "", &exec.Error{Name: "go env", Err: exec.ErrNotFound}
	}
	return f[0], f[1], nil
}

// claudeBin finds the Claude Code CLI as the Makefile does, resolved to the
// file it links to.
func claudeBin() (string, error) {
	bin := os.Getenv("TECHBOSS_CLAUDE_BIN")
	if bin == "" {
		bin = "../../../../.tools/claude/node_modules/.bin/claude"
	}
	bin, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return "", err
	}
	return filepath.Abs(bin)
}

// BenchmarkBwrapTrue measures what the filter adds to a sandbox start:
// compare the two sub-benchmarks.
func BenchmarkBwrapTrue(b *testing.B) {
	bwrap := requireBwrap(b)
	for _, bc := range []struct {
		name string
		prog []byte
	}{{"none", nil}, {"seccomp", program(b)}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if out, err := run(b, bwrap, bc.prog, nil, "true"); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
			}
		})
	}
}
