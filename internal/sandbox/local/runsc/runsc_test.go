package runsc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
	"github.com/techbossai/techboss/internal/sandbox/local/netpolicy"
)

// initBin is the agent (techboss-sandbox-init) built once for the tests.
var initBin string

// testBin is where the tests bind the test binary inside the container,
// for the workload's side of attacks (runsc-rename, runsc-listen).
const testBin = "/run/techboss-test"

func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "runsc-rename" {
		// rename(2) itself, which mv only reaches after a stat.
		if err := os.Rename(os.Args[2], os.Args[3]); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "runsc-listen" {
		if err := impostorMain(os.Args[2]); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		return
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "techboss-runsc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	initBin = filepath.Join(dir, "techboss-sandbox-init")
	if err := buildAgent(initBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = filepath.Join(dir, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := copyBinaries(binDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	return code
}

// buildAgent builds techboss-sandbox-init as sandboxtest.BuildInit does.
func buildAgent(out string) error {
	cmd := exec.Command("go", "build", "-o", out, "github.com/techbossai/techboss/cmd/techboss-sandbox-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build techboss-sandbox-init: %v\n%s", err, out)
	}
	return nil
}

// runscBin is the runsc the tests use: TECHBOSS_RUNSC_BIN, or the one
// scripts/deps.sh builds into the checkout's .tools/bin.
func runscBin() string {
	if p := os.Getenv("TECHBOSS_RUNSC_BIN"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, ".tools", "bin", "runsc")
		}
	}
	return "runsc"
}

// impostorMain listens on path and answers every connection with an
// error reply, as a workload pretending to be the agent would.
func impostorMain(path string) error {
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	fmt.Println("bound")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		_, _ = c.Write([]byte(`{"error":"impostor"}` + "\n"))
		_ = c.Close()
	}
}

// requireRunsc skips (or fails under TECHBOSS_REQUIRE_ALL=1) without root
// and runsc.
func requireRunsc(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (runsc as root)"
	} else if _, err := exec.LookPath(runscBin()); err != nil {
		why = "runsc (gVisor) not found at " + runscBin() + ": run scripts/deps.sh test, or set TECHBOSS_RUNSC_BIN"
	}
	if why == "" {
		return
	}
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// testIDs is the local driver's default host range for sandbox ids.
var testIDs = sandbox.IDMap{HostBase: 1_000_000_000, Size: 65536}

// binDir holds copies of the test binary and the agent in a
// directory any user may read: runsc in a user namespace opens them as
// the namespace's root, who may not enter go's private build directory.
var binDir string

func copyBinaries(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for src, name := range map[string]string{self: "test", initBin: "agent"} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

type testOptions struct {
	network  bool
	env      []string
	ids      sandbox.IDMap
	launcher []string
	extra    []*os.File
	started  func(pid int) error
}

// startTest starts a container running the agent (runsc-agent). Its
// root shows the host's /usr and /etc, as the local driver's host image
// does, and a /workspace bound into it on the host before the start, as
// the driver binds it into its overlay.
func startTest(t testing.TB, o testOptions) *Container {
	t.Helper()
	requireRunsc(t)
	bin := binDir
	// Short paths: the agent's socket path must fit sun_path.
	dir, err := os.MkdirTemp("", "rs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "b", "container.log"))
			t.Logf("container log:\n%s", b)
		}
		if os.Getenv("TECHBOSS_RUNSC_DEBUG") != "1" {
			_ = os.RemoveAll(dir)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	root, ws := filepath.Join(dir, "root"), filepath.Join(dir, "ws")
	for _, d := range []string{root, ws, root + "/workspace", root + "/usr", root + "/etc", root + "/run"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(o.ids.ToHost(0)), int(o.ids.ToHost(0))); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if fi, err := os.Lstat("/" + l); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink("/" + l)
			if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(ws, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(ws, root+"/workspace", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(root+"/workspace", unix.MNT_DETACH) })
	bundle, agentDir := filepath.Join(dir, "b"), filepath.Join(dir, "a")
	for _, d := range []string{bundle, agentDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	seq++
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{
		Runsc:     runscBin(),
		Platform:  os.Getenv("TECHBOSS_RUNSC_PLATFORM"),
		StateRoot: filepath.Join(dir, "state"),
		ID:        fmt.Sprintf("t%d-%d", os.Getpid(), seq),
		Bundle:    bundle,
		Root:      root,
		Mounts: []Mount{
			{Source: "/usr", Target: "/usr", ReadOnly: true},
			{Source: "/etc", Target: "/etc", ReadOnly: true},
			{Source: filepath.Join(bin, "test"), Target: testBin, ReadOnly: true},
		},
		AgentBinary: filepath.Join(bin, "agent"),
		AgentArgs:   []string{"runsc-agent"},
		AgentDir:    agentDir,
		Env:         o.env,
		Network:     o.network,
		IDs:         o.ids,
		Launcher:    o.launcher,
		ExtraFiles:  o.extra,
		Started:     o.started,
		// The local driver puts the processes in its cgroups itself;
		// runsc in a user namespace could not create any.
		IgnoreCgroups: true,
		Debug:         os.Getenv("TECHBOSS_RUNSC_DEBUG") == "1",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Delete(ctx); err != nil {
			t.Error(err)
		}
	})
	return c
}

var seq int

// run execs argv through the agent protocol, as the local driver does:
// the command's stdout is a host pipe whose write end goes over the socket.
func run(ctx context.Context, socket string, argv ...string) (string, agent.Reply, error) {
	return runAs(ctx, socket, "", argv...)
}

// runAs is run as user (the agent's "name", "uid" or "uid:gid").
func runAs(ctx context.Context, socket, user string, argv ...string) (string, agent.Reply, error) {
	var rep agent.Reply
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", rep, err
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return "", rep, err
	}
	defer r.Close()
	frame, err := agent.EncodeRequest(agent.Request{Op: "exec", Argv: argv, Dir: "/", User: user, Fds: [3]bool{false, true, false}})
	if err != nil {
		w.Close()
		return "", rep, err
	}
	_, _, err = c.WriteMsgUnix(frame, unix.UnixRights(int(w.Fd())), nil)
	w.Close()
	if err != nil {
		return "", rep, err
	}
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	dec := json.NewDecoder(bufio.NewReader(c))
	for !rep.Exited && rep.Error == "" {
		rep = agent.Reply{}
		if err := dec.Decode(&rep); err != nil {
			r.Close()
			<-out
			return "", rep, fmt.Errorf("read reply: %w", err)
		}
	}
	return <-out, rep, nil
}

func TestAgentRunsUnderRunsc(t *testing.T) {
	for _, ids := range []sandbox.IDMap{{}, testIDs} {
		t.Run(fmt.Sprintf("ids=%d", ids.HostBase), func(t *testing.T) { testAgent(t, ids) })
	}
}

func testAgent(t *testing.T, ids sandbox.IDMap) {
	c := startTest(t, testOptions{env: []string{"GREETING=hi", "PATH=/usr/bin:/bin"}, ids: ids})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		argv []string
		out  string
		code int
	}{
		{[]string{"echo", "hi"}, "hi\n", 0},
		{[]string{"sh", "-c", "echo $GREETING; exit 3"}, "hi\n", 3},
		// gVisor's kernel answers, not the host's.
		{[]string{"sh", "-c", "dmesg | grep -c gVisor >/dev/null && echo gvisor"}, "gvisor\n", 0},
		{[]string{"sh", "-c", "cat /proc/self/status | grep CapEff"}, "CapEff:\t0000000000000000\n", 0},
		{[]string{"hostname"}, "sandbox\n", 0},
		{[]string{"sh", "-c", "echo x > /workspace/f && echo ok"}, "ok\n", 0},
	} {
		t.Run(strings.Join(tc.argv, " "), func(t *testing.T) {
			out, rep, err := run(ctx, c.Socket(), tc.argv...)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.out || rep.Code != tc.code {
				t.Errorf("got %q exit %d (%+v), want %q exit %d", out, rep.Code, rep, tc.out, tc.code)
			}
		})
	}
	if out, rep, err := runAs(ctx, c.Socket(), "1000:1000", "mkdir", "/workspace/d"); err != nil || rep.Code != 0 {
		t.Fatalf("mkdir as 1000: %v %+v %s", err, rep, out)
	}
	// Files the sandbox wrote belong to its ids on the host, shifted as
	// bubblewrap's are.
	ws := filepath.Join(filepath.Dir(filepath.Dir(c.State().Bundle)), filepath.Base(filepath.Dir(c.State().Bundle)), "ws")
	for name, want := range map[string]uint32{"f": ids.ToHost(0), "d": ids.ToHost(1000)} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(ws, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != want || st.Gid != want {
			t.Errorf("/workspace/%s: got owner %d:%d, want %d:%d", name, st.Uid, st.Gid, want, want)
		}
	}
}

func TestAdoptAfterRestart(t *testing.T) {
	c := startTest(t, testOptions{ids: testIDs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// What a restarted server has: the persisted state, round-tripped
	// through JSON, and no child.
	b, err := json.Marshal(c.State())
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	a, ok, err := Adopt(ctx, st)
	if err != nil || !ok {
		t.Fatalf("got adopted %v, err %v; want the running container", ok, err)
	}
	if out, rep, err := run(ctx, a.Socket(), "echo", "again"); err != nil || out != "again\n" || rep.Code != 0 {
		t.Fatalf("exec after adopt: got %q %+v %v, want %q", out, rep, err, "again\n")
	}
	if err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := Adopt(ctx, st); ok || err != nil {
		t.Errorf("after Delete: got adopted %v, err %v; want gone", ok, err)
	}
	if _, err := os.Stat(st.Socket); err == nil {
		if _, _, err := run(ctx, st.Socket, "true"); err == nil {
			t.Error("the agent still answers after Delete")
		}
	}
}

// The agent's socket is in a directory the sandbox can write: a workload
// (root without capabilities) may remove it, move it away or put its own
// in its place, but the driver must still reach the real agent, and only
// it.
func TestWorkloadCannotReplaceAgentSocket(t *testing.T) {
	c := startTest(t, testOptions{ids: testIDs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A listener of the workload's own at the socket's name (the test
	// binary's runsc-listen): it answers anything with an error reply.
	impostor := testBin + " runsc-listen " + AgentSocket
	for _, argv := range [][]string{
		{"rm", "-f", AgentSocket},
		{testBin, "runsc-rename", AgentSocket, AgentDir + "/moved"},
		{"sh", "-c", "touch " + AgentDir + "/x && exec " + testBin + " runsc-rename " + AgentDir + "/x " + AgentSocket},
		{"umount", "-l", AgentDir},
		{"sh", "-c", "rm -f " + AgentSocket + "; (" + impostor + ") > /tmp/impostor.log 2>&1 & for i in $(seq 100); do grep -q bound /tmp/impostor.log && exit 0; sleep 0.1; done; exit 1"},
	} {
		if _, _, err := run(ctx, c.Socket(), argv...); err != nil {
			t.Fatal(err)
		}
		if out, rep, err := run(ctx, c.Socket(), "echo", "still"); err != nil || out != "still\n" || rep.Code != 0 {
			t.Fatalf("after %v: got %q %+v %v, want the agent to answer", argv, out, rep, err)
		}
	}
	if out, _, _ := run(ctx, c.Socket(), "cat", "/tmp/impostor.log"); !strings.Contains(out, "bound") {
		t.Errorf("the impostor did not bind the socket's name (log %q): the test proves nothing", out)
	}
}

// The local driver starts its helper, moves it into the sandbox's cgroups
// and only then lets it exec: every runsc process must end up in them.
func TestLauncherPlacesRunscInCgroups(t *testing.T) {
	requireRunsc(t)
	parent := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(parent, "cgroup.procs")); err != nil {
		t.Skip("needs the cgroup v1 pids controller at " + parent)
	}
	cg := filepath.Join(parent, fmt.Sprintf("techboss-runsc-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) }) // after Delete: cleanups run last-in first-out
	syncR, syncW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer syncR.Close()
	defer syncW.Close()
	c := startTest(t, testOptions{
		ids:      testIDs,
		launcher: []string{"/bin/sh", "-c", `read go <&3 && exec "$@"`, "launcher"},
		extra:    []*os.File{syncR},
		started: func(pid int) error {
			if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
				return err
			}
			_, err := syncW.Write([]byte("go\n"))
			return err
		},
	})
	b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	procs := strings.Fields(string(b))
	for _, want := range []int{c.State().RunPid, c.Pid()} {
		if !slices.Contains(procs, strconv.Itoa(want)) {
			t.Errorf("cgroup.procs %v: %d missing", procs, want)
		}
	}
	// runsc run, its gofer, the sandbox (and its ptrace stubs).
	if len(procs) < 3 {
		t.Errorf("got %d processes in the cgroup, want runsc run, gofer and sandbox at least", len(procs))
	}
	if out, rep, err := run(context.Background(), c.Socket(), "echo", "placed"); err != nil || out != "placed\n" || rep.Code != 0 {
		t.Fatalf("got %q %+v %v, want %q", out, rep, err, "placed\n")
	}
}

// The driver writes into a running sandbox's root and workspace from the
// host (files, archives, volumes): the sandbox must see each change at
// once, not a cached view (--file-access=shared).
func TestHostWritesVisibleInside(t *testing.T) {
	c := startTest(t, testOptions{ids: testIDs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := filepath.Dir(c.State().Bundle)
	for _, p := range []struct{ host, inside string }{
		{filepath.Join(dir, "root", "from-host"), "/from-host"},
		{filepath.Join(dir, "ws", "from-host"), "/workspace/from-host"},
	} {
		for _, body := range []string{"one", "two, longer"} {
			if err := os.WriteFile(p.host, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, rep, err := run(ctx, c.Socket(), "cat", p.inside); err != nil || out != body || rep.Code != 0 {
				t.Errorf("cat %s: got %q %+v %v, want %q", p.inside, out, rep, err, body)
			}
		}
		if err := os.Remove(p.host); err != nil {
			t.Fatal(err)
		}
		if out, rep, err := run(ctx, c.Socket(), "cat", p.inside); err != nil || rep.Code == 0 {
			t.Errorf("cat %s after the host removed it: got %q %+v %v, want a failure", p.inside, out, rep, err)
		}
	}
}

// With a network, the sandbox uses the host kernel's sockets (gVisor's
// --network=host) in a namespace of its own, which netpolicy connects
// with pasta before runsc starts: the sandbox sees pasta's interface and
// default route, and netpolicy's rules apply. Without, only a loopback.
func TestNetworkThroughPasta(t *testing.T) {
	requireRunsc(t)
	if _, err := exec.LookPath("pasta"); err != nil {
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal("pasta not installed")
		}
		t.Skip("pasta not installed (apt-get install passt)")
	}
	const routes = "cat /proc/net/route | awk 'NR > 1 { print $1, $2 }'"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	none := startTest(t, testOptions{ids: testIDs})
	if out, rep, err := run(ctx, none.Socket(), "sh", "-c", routes); err != nil || out != "" || rep.Code != 0 {
		t.Errorf("without network: got routes %q %+v %v, want none", out, rep, err)
	}

	syncR, syncW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer syncR.Close()
	defer syncW.Close()
	var n *netpolicy.Net
	t.Cleanup(func() {
		if n != nil {
			if err := n.Destroy(); err != nil {
				t.Error(err)
			}
		}
	})
	state := t.TempDir()
	c := startTest(t, testOptions{
		ids:      testIDs,
		network:  true,
		launcher: []string{"/bin/sh", "-c", `read go <&3 && exec "$@"`, "launcher"},
		extra:    []*os.File{syncR},
		started: func(pid int) error {
			var err error
			n, err = netpolicy.Start(ctx, netpolicy.Options{
				NetNS: netpolicy.NetNSPath(pid), UserNS: "/proc/" + strconv.Itoa(pid) + "/ns/user",
				Policy: netpolicy.Policy{Mode: netpolicy.Full}, StateDir: state,
			})
			if err != nil {
				return err
			}
			_, err = syncW.Write([]byte("go\n"))
			return err
		},
	})
	out, rep, err := run(ctx, c.Socket(), "sh", "-c", routes)
	if err != nil || rep.Code != 0 || !strings.Contains(out, "eth0 00000000") {
		t.Errorf("with network: got routes %q %+v %v, want a default route on pasta's eth0", out, rep, err)
	}
}

// runsc and its processes run as the sandbox's root on the host: they
// must not carry the caller's environment (a server's holds its keys).
func TestCallerEnvironmentNotPassed(t *testing.T) {
	t.Setenv("TECHBOSS_TEST_SECRET", "do-not-leak")
	c := startTest(t, testOptions{ids: testIDs})
	for _, pid := range []int{c.State().RunPid, c.Pid()} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "do-not-leak") {
			t.Errorf("process %d holds the caller's environment", pid)
		}
	}
}
