package netpolicy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
)

type probe struct {
	name  string
	addr  string
	reach bool
	// timeoutOK: the target is not ours (the host's real gateway), and
	// may drop rather than refuse.
	timeoutOK bool
}

func checkProbes(t *testing.T, nsPath string, probes []probe) {
	t.Helper()
	for _, p := range probes {
		err := dialFrom(t, nsPath, p.addr)
		switch {
		case p.reach && err != nil:
			t.Errorf("%s: dial %s from sandbox: %v, want a connection", p.name, p.addr, err)
		case !p.reach && err == nil:
			t.Errorf("%s: dial %s from sandbox connected, want it refused", p.name, p.addr)
		case !p.reach && !p.timeoutOK && !refused(err):
			t.Errorf("%s: dial %s from sandbox: %v, want a quick refusal, not a timeout", p.name, p.addr, err)
		}
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// defaultGateway is the host's IPv4 default gateway, which pasta gives the
// sandbox as its own.
func defaultGateway(t *testing.T) string {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 2 && f[1] == "00000000" {
			g, err := hex.DecodeString(f[2])
			if err == nil && len(g) == 4 {
				var a [4]byte
				binary.LittleEndian.PutUint32(a[:], binary.BigEndian.Uint32(g))
				return netip.AddrFrom4(a).String()
			}
		}
	}
	t.Skip("host has no IPv4 default route")
	return ""
}

// hostIP is an address of the host's default-route interface.
func hostIP(t *testing.T) string {
	c, err := net.Dial("udp4", defaultGateway(t)+":9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

func mustAllow(t *testing.T, entries ...string) []Rule {
	t.Helper()
	r, err := ParseAllow(entries)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustOperator(t *testing.T, entries ...string) []Rule {
	t.Helper()
	r, err := ParseOperatorAllow(entries)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFull: network "full" reaches public addresses and nothing of the
// host's, link-local or private.
func TestFull(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	ns := sandboxNS(t)
	startNet(t, ns, Policy{Mode: Full}, w, nil)
	var inside string
	if err := inNS(t, ns, func() error { inside = serve(t, "", "127.0.0.1:0"); return nil }); err != nil {
		t.Fatal(err)
	}
	hostAny := serve(t, "", "0.0.0.0:0")
	checkProbes(t, ns, []probe{
		{"public address through pasta", w.public, true, false},
		{"public address a name resolves to, unresolved", w.denied, true, false},
		{"sandbox's own loopback", inside, true, false},
		{"host loopback", "127.0.0.1:" + port(w.hostLo), false, false},
		{"host loopback through the gateway address", net.JoinHostPort(defaultGateway(t), port(w.hostLo)), false, true},
		{"host's default-route address", net.JoinHostPort(hostIP(t), port(hostAny)), false, false},
		{"host's own public-looking address", w.hostVeth, false, false},
		{"link-local on the host", w.linkLocal, false, false},
		{"metadata address", "169.254.169.254:80", false, false},
		{"RFC 1918 on the host", w.hostPrivate, false, false},
		{"RFC 1918 beyond the host", w.remote10, false, false},
	})
	// Every name resolves in full mode, through the proxy.
	if rcode, ips := resolveFrom(t, ns, "denied.test"); rcode != dns.RcodeSuccess || !slices.Equal(ips, []string{"198.51.100.3"}) {
		t.Errorf("resolve denied.test in full mode: rcode %s, %v; want NOERROR [198.51.100.3]", dns.RcodeToString[rcode], ips)
	}
}

// TestAllowedPrefixes: the operator's list opens anything, including the
// host's addresses and link-local; a sandbox's prefixes open private ranges
// but never link-local or the host's addresses. This is also the control
// for TestFull: the refused targets are routed and listening.
func TestAllowedPrefixes(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	t.Run("operator", func(t *testing.T) {
		ns := sandboxNS(t)
		startNet(t, ns, Policy{Mode: Full, Operator: mustOperator(t,
			"198.51.100.254", "169.254.77.1/32", "10.204.0.1", "10.203.0.0/24:"+port(w.remote10))}, w, nil)
		checkProbes(t, ns, []probe{
			{"host's own address, allowed", w.hostVeth, true, false},
			{"link-local, allowed", w.linkLocal, true, false},
			{"host private, allowed", w.hostPrivate, true, false},
			{"remote private, allowed on its port", w.remote10, true, false},
			{"host loopback stays closed", "127.0.0.1:" + port(w.hostLo), false, false},
		})
	})
	t.Run("sandbox", func(t *testing.T) {
		ns := sandboxNS(t)
		startNet(t, ns, Policy{Mode: Full, Allow: mustAllow(t,
			"10.203.0.0/24", "10.204.0.0/16", "169.254.0.0/16", "198.51.100.254/32")}, w, nil)
		checkProbes(t, ns, []probe{
			{"remote private, allowed", w.remote10, true, false},
			{"host private stays closed", w.hostPrivate, false, false},
			{"link-local stays closed", w.linkLocal, false, false},
			{"host's own address stays closed", w.hostVeth, false, false},
		})
	})
}

// TestPastaFlags shows what each of pasta's safety flags prevents: without
// -T none the host's loopback services appear on the sandbox's loopback,
// and without --no-map-gw they answer on the gateway address. TestFull
// passing with the flags is what they buy.
func TestPastaFlags(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	hostLo := "127.0.0.1:" + port(w.hostLo)
	t.Run("-T auto", func(t *testing.T) {
		ns := sandboxNS(t)
		unsafe := slices.Clone(pastaSafety)
		unsafe[slices.Index(unsafe, "-T")+1] = "auto"
		startNet(t, ns, Policy{Mode: Full}, w, unsafe)
		checkProbes(t, ns, []probe{{"host loopback via pasta's -T auto", hostLo, true, false}})
	})
	t.Run("map-gw", func(t *testing.T) {
		ns := sandboxNS(t)
		unsafe := slices.DeleteFunc(slices.Clone(pastaSafety), func(s string) bool { return s == "--no-map-gw" })
		startNet(t, ns, Policy{Mode: Full}, w, unsafe)
		checkProbes(t, ns, []probe{{"host loopback through the gateway address without --no-map-gw",
			net.JoinHostPort(defaultGateway(t), port(w.hostLo)), true, false}})
	})
}

// TestNoInboundForwarding: nothing the sandbox listens on appears on the
// host. pasta's default is -t/-u "auto" (this 2023-03 build did not bind
// anything for it with --netns, newer builds do); the control forwards the
// port explicitly, to show the probe sees an exposed port.
func TestNoInboundForwarding(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	for _, tc := range []struct {
		name   string
		tcp    string
		expose bool
	}{{"-t none", "none", false}, {"-t PORT (control)", "", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := sandboxNS(t)
			// Listening before pasta starts, so "auto" sees the port at once.
			var inside string
			if err := inNS(t, ns, func() error { inside = serve(t, "", "0.0.0.0:0"); return nil }); err != nil {
				t.Fatal(err)
			}
			safety := slices.Clone(pastaSafety)
			if tc.tcp == "" {
				tc.tcp = port(inside)
			}
			safety[slices.Index(safety, "-t")+1] = tc.tcp
			startNet(t, ns, Policy{Mode: Full}, w, safety)
			c, err := net.Dial("tcp", "127.0.0.1:"+port(inside))
			if err == nil {
				c.Close()
			}
			if exposed := err == nil; exposed != tc.expose {
				t.Errorf("dial the sandbox's port %s from the host: %v; want exposed=%v", port(inside), err, tc.expose)
			}
		})
	}
}

// TestAllowList: only allowed names resolve, and only their answers'
// addresses on the allowed port open, once resolved.
func TestAllowList(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	ns := sandboxNS(t)
	startNet(t, ns, Policy{Mode: AllowList, Allow: mustAllow(t,
		"allowed.test:"+port(w.allowed), "10.203.0.0/24", "rebind.test")}, w, nil)
	var inside string
	if err := inNS(t, ns, func() error { inside = serve(t, "", "127.0.0.1:0"); return nil }); err != nil {
		t.Fatal(err)
	}
	checkProbes(t, ns, []probe{
		{"allowed name's address before it is resolved", w.allowed, false, false},
		{"sandbox's own loopback", inside, true, false},
	})
	if rcode, ips := resolveFrom(t, ns, "allowed.test"); rcode != dns.RcodeSuccess || !slices.Equal(ips, []string{"198.51.100.2"}) {
		t.Fatalf("resolve allowed.test: rcode %s, %v; want NOERROR [198.51.100.2]", dns.RcodeToString[rcode], ips)
	}
	if rcode, ips := resolveFrom(t, ns, "denied.test"); rcode != dns.RcodeNameError || len(ips) != 0 {
		t.Errorf("resolve denied.test: rcode %s, %v; want NXDOMAIN", dns.RcodeToString[rcode], ips)
	}
	// An allowed name may resolve to anything; what is always closed stays
	// closed (DNS rebinding onto the host).
	if rcode, ips := resolveFrom(t, ns, "rebind.test"); rcode != dns.RcodeSuccess || !slices.Equal(ips, []string{"198.51.100.254"}) {
		t.Fatalf("resolve rebind.test: rcode %s, %v; want NOERROR [198.51.100.254]", dns.RcodeToString[rcode], ips)
	}
	checkProbes(t, ns, []probe{
		{"allowed name resolving to the host's own address", w.hostVeth, false, false},
		{"allowed name, allowed port", w.allowed, true, false},
		{"allowed name's address, another port", w.allowed2, false, false},
		{"denied name's address", w.denied, false, false},
		{"public address never resolved", w.public, false, false},
		{"allowed prefix", w.remote10, true, false},
		{"host loopback", "127.0.0.1:" + port(w.hostLo), false, false},
		{"link-local on the host", w.linkLocal, false, false},
		{"host's own address", w.hostVeth, false, false},
	})
}

// TestSandboxCannotChangeRules: code without capabilities in the sandbox's
// namespace cannot flush the rules; the control shows the same helper with
// capabilities can, and that the probe then connects.
func TestSandboxCannotChangeRules(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	pid := sandboxPID(t)
	ns := NetNSPath(pid)
	startNet(t, ns, Policy{Mode: Full}, w, nil)
	// Joining the sandbox's user namespace gives nsenter every capability
	// in it, which is exactly what the sandbox's uid 0 lacks: it runs with
	// an empty bounding set (bwrap --cap-drop ALL), as setpriv leaves it.
	bin := worldReadableCopy(t, os.Args[0])
	helper := func(dropCaps bool) (string, error) {
		args := []string{"--user=/proc/" + strconv.Itoa(pid) + "/ns/user", "--net=" + ns}
		if dropCaps {
			args = append(args, "setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--ambient-caps", "-all", "--")
		}
		args = append(args, bin, "-test.run=^$")
		cmd := exec.Command("nsenter", args...)
		cmd.Env = append(os.Environ(), helperEnv+"=flush")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := helper(true)
	if err != nil {
		t.Fatalf("helper without capabilities: %v: %s", err, out)
	}
	if c := capsOf(out); c != "0000000000000000" {
		t.Fatalf("helper CapEff %q, want none", c)
	}
	if !strings.Contains(out, "operation not permitted") {
		t.Errorf("flush without capabilities: %s; want EPERM", out)
	}
	checkProbes(t, ns, []probe{{"host's own address after the attempt", w.hostVeth, false, false}})

	out, err = helper(false)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("control: helper with capabilities: %v: %s; want the flush to work", err, out)
	}
	checkProbes(t, ns, []probe{{"host's own address once the rules are gone", w.hostVeth, true, false}})
}

// TestReadopt: a server restart detaches (Close) and re-attaches (Attach)
// without disturbing the sandbox; Attach restarts a pasta that died.
func TestReadopt(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	ns := sandboxNS(t)
	p := Policy{Mode: AllowList, Allow: mustAllow(t, "allowed.test")}
	o := Options{NetNS: ns, UserNS: userNS(ns), Policy: p, StateDir: t.TempDir(), Upstreams: []string{w.upstream}}
	n, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	st := n.State()
	t.Cleanup(func() { _ = n.Close(); _ = Stop(st) })
	if rcode, _ := resolveFrom(t, ns, "allowed.test"); rcode != dns.RcodeSuccess {
		t.Fatalf("resolve: %s", dns.RcodeToString[rcode])
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if !pastaAlive(st) {
		t.Fatal("pasta stopped with Close, want it to outlive the server")
	}
	checkProbes(t, ns, []probe{{"resolved address while detached", w.allowed, true, false}})

	n2, err := Attach(context.Background(), o, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.Close() })
	if got := n2.State(); got != st {
		t.Errorf("Attach state %+v, want %+v (same pasta)", got, st)
	}
	if rcode, _ := resolveFrom(t, ns, "denied.test"); rcode != dns.RcodeNameError {
		t.Errorf("after Attach, resolve denied.test: %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}
	checkProbes(t, ns, []probe{{"unresolved public address after Attach", w.public, false, false}})
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}

	if err := Stop(st); err != nil {
		t.Fatal(err)
	}
	if pastaAlive(st) {
		t.Fatal("pasta alive after Stop")
	}
	n3, err := Attach(context.Background(), o, st)
	if err != nil {
		t.Fatal(err)
	}
	st2 := n3.State()
	t.Cleanup(func() { _ = n3.Close(); _ = Stop(st2) })
	if st2 == st || !pastaAlive(st2) {
		t.Fatalf("Attach after pasta died: state %+v, want a new running pasta", st2)
	}
	if rcode, _ := resolveFrom(t, ns, "allowed.test"); rcode != dns.RcodeSuccess {
		t.Fatalf("resolve after pasta restart: %s", dns.RcodeToString[rcode])
	}
	checkProbes(t, ns, []probe{{"allowed address through the new pasta", w.allowed, true, false}})
	if err := n3.Destroy(); err != nil {
		t.Fatal(err)
	}
	if pastaAlive(st2) {
		t.Fatal("pasta alive after Destroy")
	}
}

// TestStartRefusesOwnNamespace: rules installed in the server's namespace
// would cut the host off.
func TestStartRefusesOwnNamespace(t *testing.T) {
	requireTools(t)
	_, err := Start(context.Background(), Options{NetNS: "/proc/self/ns/net", StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "own network namespace") {
		t.Fatalf("Start in own namespace: %v, want a refusal", err)
	}
}

// worldReadableCopy copies the test binary where the sandbox's unprivileged
// host ids can run it.
func worldReadableCopy(t *testing.T, path string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "netpolicy-helper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "helper")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestResolvedTimeouts: an answer opens its addresses for at least a minute
// and at least its TTL, and a shorter TTL for the same address (another
// name) never shortens what a longer one opened.
func TestResolvedTimeouts(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	ns := sandboxNS(t)
	startNet(t, ns, Policy{Mode: AllowList, Allow: mustAllow(t, "allowed.test", "long.test")}, w, nil)
	f, err := nsFile(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := openConn(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	expires := func() time.Duration {
		t.Helper()
		s, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}, setName(false, 0))
		if err != nil {
			t.Fatal(err)
		}
		els, err := c.GetSetElements(s)
		if err != nil || len(els) != 1 || !slices.Equal(els[0].Key, []byte{198, 51, 100, 2}) {
			t.Fatalf("set elements %+v, %v; want 198.51.100.2", els, err)
		}
		return els[0].Expires
	}
	resolveFrom(t, ns, "allowed.test") // TTL 5
	if e := expires(); e <= 50*time.Second || e > time.Minute {
		t.Errorf("after a TTL of 5 s the address expires in %v, want about a minute", e)
	}
	resolveFrom(t, ns, "long.test") // TTL 3600, same address
	if e := expires(); e <= 59*time.Minute {
		t.Errorf("after a TTL of 3600 s the address expires in %v, want about an hour", e)
	}
	resolveFrom(t, ns, "allowed.test")
	if e := expires(); e <= 59*time.Minute {
		t.Errorf("a shorter TTL cut the address's opening to %v, want about an hour", e)
	}
}

// TestPastaPrivileges: given the sandbox's user namespace, pasta's
// capabilities are held there, not in the host's user namespace; without
// it (the control) pasta stays in the host's with CAP_SYS_ADMIN.
func TestPastaPrivileges(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	hostNS, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	for _, withUserNS := range []bool{true, false} {
		t.Run(strconv.FormatBool(withUserNS), func(t *testing.T) {
			ns := sandboxNS(t)
			o := Options{NetNS: ns, Policy: Policy{Mode: Full}, StateDir: t.TempDir(), Upstreams: []string{w.upstream}}
			if withUserNS {
				o.UserNS = userNS(ns)
			}
			n, err := Start(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = n.Destroy() })
			got, err := os.Readlink("/proc/" + strconv.Itoa(n.State().PastaPID) + "/ns/user")
			if err != nil {
				t.Fatal(err)
			}
			sandboxUser, _ := os.Readlink(userNS(ns))
			want := hostNS
			if withUserNS {
				want = sandboxUser
			}
			if got != want {
				t.Errorf("pasta's user namespace %s, want %s (host %s, sandbox %s)", got, want, hostNS, sandboxUser)
			}
			checkProbes(t, ns, []probe{{"public address", w.public, true, false}})
		})
	}
}
