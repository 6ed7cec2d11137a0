package netpolicy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/sandbox/local/netns"
)

// The helper mode runs inside a sandbox's namespace without capabilities,
// as the sandbox's code would: it tries to remove the server's rules.
const helperEnv = "NETPOLICY_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "flush" {
		os.Exit(helperFlush())
	}
	// Every test's state dir (t.TempDir) is under a directory of this run,
	// so pasta processes of other packages' tests running at the same time
	// (go test -p 2) are not taken for this package's leaks.
	tmp, err := os.MkdirTemp("", "netpolicy-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Sandboxed helpers (unprivileged on the host) run binaries from it.
	_ = os.Chmod(tmp, 0o755)
	os.Setenv("TMPDIR", tmp)
	stopForker := startForker()
	code := m.Run()
	stopForker()
	for _, p := range pastaProcs() {
		if strings.Contains(p, tmp+"/") {
			fmt.Fprintf(os.Stderr, "FAIL: tests left pasta running: %s\n", p)
			code = 1
		}
	}
	_ = os.RemoveAll(tmp)
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: leaked goroutines: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// helperFlush tries to delete every rule of its namespace over netlink.
// Exit 0: refused, 3: it worked.
func helperFlush() int {
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "CapEff:") {
			fmt.Println(l)
		}
	}
	c, err := nftables.New()
	if err == nil {
		c.FlushRuleset()
		err = c.Flush()
	}
	if err != nil {
		fmt.Println("flush:", err)
		return 0
	}
	fmt.Println("flush: ok")
	return 3
}

// requireTools skips (or fails under TECHBOSS_REQUIRE_ALL=1) without root,
// bubblewrap, pasta and the iproute2/util-linux tools the tests drive.
func requireTools(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (network namespaces, nftables, dummy interfaces)"
	}
	for _, bin := range []string{"bwrap", "pasta", "ip", "nsenter", "setpriv"} {
		if _, err := exec.LookPath(bin); err != nil && why == "" {
			why = bin + " not installed (apt: bubblewrap, passt, iproute2, util-linux)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatalf("missing dependency (TECHBOSS_REQUIRE_ALL=1): %s", why)
	}
	t.Skip(why)
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// bwrap --die-with-parent ties the sandbox to the thread that forked it
// (PR_SET_PDEATHSIG fires when that thread exits, not the process), and Go
// ends threads whose goroutine exits locked. The sandboxes are forked from
// one thread that lives as long as the tests.
var forks chan func()

func startForker() (stop func()) {
	forks = make(chan func())
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for f := range forks {
			f()
		}
		close(done)
	}()
	return func() { close(forks); <-done }
}

func forkOnStableThread(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	forks <- func() { errc <- cmd.Start() }
	return <-errc
}

// sandboxNS starts a real sandbox as the local driver does: bubblewrap as
// uid 0 of a new user namespace mapped onto unprivileged host ids, with its
// own network and PID namespaces and no capabilities. It returns the
// sandbox init's pid; the sandbox dies with the test.
func sandboxNS(t testing.TB) string {
	return NetNSPath(sandboxPID(t))
}

func sandboxPID(t testing.TB) int {
	t.Helper()
	// Under load (other packages' sandboxes starting beside these tests),
	// bubblewrap now and then fails to set up the new namespace's
	// loopback ("Failed RTM_NEWADDR"), after it reported its child: start
	// again then, a few times.
	for attempt := 1; ; attempt++ {
		pid, stderr := sandboxPIDOnce(t)
		if pid > 0 {
			return pid
		}
		if attempt == 3 {
			t.Fatalf("bubblewrap did not start a sandbox in %d attempts: %s", attempt, stderr)
		}
		t.Logf("bubblewrap did not start the sandbox (starting again): %s", stderr)
	}
}

// sandboxPIDOnce starts one sandbox and returns its init's pid once it runs
// its command, or 0 and bubblewrap's stderr if it ended before.
func sandboxPIDOnce(t testing.TB) (int, string) {
	t.Helper()
	infoR, infoW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer infoR.Close()
	cmd := exec.Command("bwrap", "--unshare-net", "--unshare-pid", "--die-with-parent", "--cap-drop", "ALL",
		"--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--info-fd", "3", "--", "sleep", "infinity")
	cmd.ExtraFiles = []*os.File{infoW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1_000_000_000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1_000_000_000, Size: 65536}},
		Credential:  &syscall.Credential{Uid: 0, Gid: 0},
	}
	// A strings.Builder would race with the read in Cleanup: the pipe's
	// copier finishes before Wait returns, so a plain buffer read after the
	// waiter's send is safe.
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := forkOnStableThread(cmd); err != nil {
		t.Fatal(err)
	}
	infoW.Close()
	exited := make(chan error, 1) // one send, by the waiter
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := <-exited
		if t.Failed() {
			t.Logf("sandbox bwrap ended: %v; stderr: %s", err, stderr.String())
		}
	})
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.NewDecoder(infoR).Decode(&info); err != nil {
		err := <-exited
		exited <- err // for the cleanup
		return 0, fmt.Sprintf("%v: %s", err, stderr.String())
	}
	// bubblewrap's init (the reported child) starts the command once the
	// namespaces are set up: ready when it has a child.
	children := fmt.Sprintf("/proc/%d/task/%d/children", info.ChildPID, info.ChildPID)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(children)
		if err != nil {
			err := <-exited
			exited <- err
			return 0, fmt.Sprintf("%v: %s", err, stderr.String())
		}
		if len(strings.TrimSpace(string(b))) > 0 {
			return info.ChildPID, ""
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox init %d started no command in 30 s", info.ChildPID)
		}
		runtime.Gosched()
	}
}

// world is the network around the sandboxes: a "remote" namespace behind
// a veth pair standing for the internet and a private network, and dummy
// addresses on the host carrying link-local and private addresses, each
// with a TCP listener, so a refused connection means a rule and not a
// missing route.
type world struct {
	hostLo      string // host 127.0.0.1
	hostVeth    string // 198.51.100.254: an address of the host's own, public-looking
	linkLocal   string // 169.254.77.1 on a host dummy interface
	hostPrivate string // 10.204.0.1 on a host dummy interface
	public      string // 198.51.100.1 in the remote namespace
	allowed     string // 198.51.100.2: allowed.test
	allowed2    string // 198.51.100.2, another port
	denied      string // 198.51.100.3: denied.test
	remote10    string // 10.203.0.1 in the remote namespace
	upstream    string // a DNS server for allowed.test and denied.test
}

var worldSeq int

func newWorld(t testing.TB) *world {
	t.Helper()
	worldSeq++
	sfx := strconv.Itoa(os.Getpid()%100000) + strconv.Itoa(worldSeq)
	ns, vh, vp := "tbnp"+sfx, "tbh"+sfx, "tbp"+sfx
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "link", "add", vh, "type", "veth", "peer", "name", vp)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", vh).Run() })
	run(t, "ip", "link", "set", vp, "netns", ns)
	run(t, "ip", "addr", "add", "198.51.100.254/24", "dev", vh)
	run(t, "ip", "link", "set", vh, "up")
	run(t, "ip", "route", "add", "10.203.0.0/24", "via", "198.51.100.1", "dev", vh)
	for _, a := range []string{"198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24", "10.203.0.1/24"} {
		run(t, "ip", "-n", ns, "addr", "add", a, "dev", vp)
	}
	run(t, "ip", "-n", ns, "link", "set", vp, "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns, "route", "add", "default", "via", "198.51.100.254")
	// This kernel has no dummy interfaces: the host's extra addresses
	// live on its end of the veth pair.
	run(t, "ip", "addr", "add", "169.254.77.1/32", "dev", vh)
	run(t, "ip", "addr", "add", "10.204.0.1/32", "dev", vh)

	w := &world{}
	w.hostLo = serve(t, "", "127.0.0.1:0")
	w.hostVeth = serve(t, "", "198.51.100.254:0")
	w.linkLocal = serve(t, "", "169.254.77.1:0")
	w.hostPrivate = serve(t, "", "10.204.0.1:0")
	remote := "/run/netns/" + ns
	w.public = serve(t, remote, "198.51.100.1:0")
	w.allowed = serve(t, remote, "198.51.100.2:0")
	w.allowed2 = serve(t, remote, "198.51.100.2:0")
	w.denied = serve(t, remote, "198.51.100.3:0")
	w.remote10 = serve(t, remote, "10.203.0.1:0")
	w.upstream = testUpstream(t, map[string]string{
		"allowed.test.": "198.51.100.2", "denied.test.": "198.51.100.3", "rebind.test.": "198.51.100.254",
		"long.test.": "198.51.100.2 3600"})
	return w
}

// serve listens on addr (in the namespace at nsPath, or the host's) and
// accepts and closes connections until the test ends.
func serve(t testing.TB, nsPath, addr string) string {
	t.Helper()
	var l net.Listener
	listen := func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}
	var err error
	if nsPath == "" {
		err = listen()
	} else {
		err = inNS(t, nsPath, listen)
	}
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}

func inNS(t testing.TB, nsPath string, fn func() error) error {
	t.Helper()
	f, err := os.Open(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return netns.Do(int(f.Fd()), fn)
}

// testUpstream serves A records for names ("ip" with TTL 5, or "ip ttl")
// on host loopback, as the host's resolver would.
func testUpstream(t testing.TB, names map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		v, ok := names[strings.ToLower(q.Name)]
		ip, ttlS, _ := strings.Cut(v, " ")
		ttl, err := strconv.Atoi(ttlS)
		if err != nil {
			ttl = 5
		}
		if !ok {
			m.Rcode = dns.RcodeNameError
		} else if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: uint32(ttl)}, A: net.ParseIP(ip)})
		}
		_ = w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown(); wg.Wait() })
	return pc.LocalAddr().String()
}

// dialFrom connects to addr from inside the namespace at nsPath.
func dialFrom(t testing.TB, nsPath, addr string) error {
	t.Helper()
	return inNS(t, nsPath, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// resolveFrom asks the sandbox's resolver (per ResolvConf) for name's A
// records from inside the namespace.
func resolveFrom(t testing.TB, nsPath, name string) (int, []string) {
	t.Helper()
	var resp *dns.Msg
	err := inNS(t, nsPath, func() error {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		var err error
		resp, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, DNSAddr)
		return err
	})
	if err != nil {
		t.Fatalf("resolve %s in sandbox: %v", name, err)
	}
	var ips []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return resp.Rcode, ips
}

// startNet starts a network for the sandbox and checks at the end of the
// test that Destroy leaves no pasta behind.
func startNet(t testing.TB, nsPath string, p Policy, w *world, safety []string) *Net {
	t.Helper()
	n, err := Start(context.Background(), Options{
		NetNS: nsPath, UserNS: userNS(nsPath), Policy: p, StateDir: t.TempDir(), Upstreams: []string{w.upstream}, pastaSafety: safety,
	})
	if err != nil {
		t.Fatal(err)
	}
	st := n.State()
	t.Cleanup(func() {
		if err := n.Destroy(); err != nil {
			t.Error(err)
		}
		if pastaAlive(st) {
			t.Errorf("pasta %d still running after Destroy", st.PastaPID)
		}
	})
	return n
}

// pastaProcs lists running pasta processes (zombies excluded).
func pastaProcs() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if err != nil || filepath.Base(argv0) != "pasta" {
			continue
		}
		if _, err := procStart(pid); err != nil {
			continue
		}
		out = append(out, e.Name()+" "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}

// capsOf returns the CapEff line the helper printed.
func capsOf(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "CapEff:") {
			return strings.TrimSpace(strings.TrimPrefix(sc.Text(), "CapEff:"))
		}
	}
	return ""
}

// refused reports a dial error that is not a timeout: the rules reject
// with a TCP reset, so a refusal is immediate.
func refused(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// userNS is the user namespace of the process whose network namespace is
// nsPath (/proc/<pid>/ns/net).
func userNS(nsPath string) string { return strings.TrimSuffix(nsPath, "net") + "user" }
