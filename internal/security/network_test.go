package security

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// listenHost starts a TCP server on the host at addr that accepts and
// closes connections, and returns its port.
func listenHost(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// hostIP is the address of the host's default-route interface.
func hostIP(t *testing.T) string {
	t.Helper()
	c, err := net.Dial("udp4", "192.0.2.1:9") // no packet is sent
	if err != nil {
		t.Skipf("no IPv4 route on this host: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// connects reports whether a TCP connect from the sandbox to host:port
// succeeds (bash's /dev/tcp, bounded by timeout).
func connects(t *testing.T, d sandbox.Driver, ref sandbox.Ref, host string, port int) bool {
	t.Helper()
	r := sh(t, d, ref, fmt.Sprintf("timeout 5 bash -c 'exec 3<>/dev/tcp/%s/%d' 2>&1", host, port))
	return r.st.Code == 0
}

// network "full" reaches the internet, not the host: host loopback, the
// host's own address and the link-local metadata address are unreachable,
// and the server's gateway listener inside the sandbox still works.
func TestNetworkFullIsNotTheHost(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		ref := create(t, d, sandbox.Spec{Network: sandbox.Network{Mode: sandbox.NetworkFull}})
		loop := listenHost(t, "127.0.0.1:0")
		ip := hostIP(t)
		// The sandbox does have a network: pasta's interface, with an address.
		if got := mustSh(t, d, ref, "ip -o -4 addr show scope global"); !strings.Contains(got, "inet ") {
			t.Fatalf("no global IPv4 address inside a sandbox with network full: %q", got)
		}
		any := listenHost(t, "0.0.0.0:0")
		for _, c := range []struct {
			name string
			host string
			port int
		}{
			{"host loopback", "127.0.0.1", loop},
			{"host loopback through the host's address", ip, loop},
			{"a service on all the host's addresses", ip, any},
			{"cloud metadata", "169.254.169.254", 80},
			{"RFC 1918", "10.0.0.1", 80},
		} {
			if connects(t, d, ref, c.host, c.port) {
				t.Errorf("%s (%s:%d) is reachable from a sandbox with network full", c.name, c.host, c.port)
			}
		}
		// The host's own control: the listeners do answer.
		if c, err := net.Dial("tcp", net.JoinHostPort(ip, fmt.Sprint(any))); err != nil {
			t.Fatalf("control: the host cannot reach its own listener: %v", err)
		} else {
			c.Close()
		}
		// The gateway listener the server opens inside the sandbox works.
		ln, err := d.Listen(testCtx(t), ref, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if !connects(t, d, ref, "127.0.0.1", ln.Addr().(*net.TCPAddr).Port) {
			t.Error("the sandbox cannot reach the server's listener on its own loopback")
		}
		// And the sandbox cannot change its rules.
		if r := sh(t, d, ref, "nft flush ruleset 2>&1 || ip link set lo down 2>&1"); r.st.Code == 0 {
			t.Errorf("the sandbox changed its network configuration: %q", r.stdout)
		}
	})
}

// network {"allow": [...]} resolves only the allowed names (through the
// server's DNS proxy) and never opens the host or link-local.
func TestNetworkAllowList(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		records := map[string]string{"allowed.test": "198.51.100.7", "denied.test": "198.51.100.8", "rebind.test": "169.254.169.254"}
		upstream := sandboxtest.FakeDNS(t, func(name string) (netip.Addr, bool) {
			ip, ok := records[name]
			if !ok {
				return netip.Addr{}, false
			}
			return netip.MustParseAddr(ip), true
		})
		d := newDriverWith(t, rt, local.Options{DNSUpstreams: []string{upstream}})
		ref := create(t, d, sandbox.Spec{Network: sandbox.Network{Mode: sandbox.NetworkAllow, Allow: []string{"allowed.test:443", "rebind.test"}}})
		if got := mustSh(t, d, ref, "getent hosts allowed.test"); !strings.Contains(got, "198.51.100.7") {
			t.Errorf("allowed.test resolved to %q, want 198.51.100.7", got)
		}
		if r := sh(t, d, ref, "getent hosts denied.test"); r.st.Code == 0 {
			t.Errorf("denied.test resolved inside an allow-list sandbox: %q", r.stdout)
		}
		// A name on the list that resolves to the metadata address (DNS
		// rebinding) stays closed.
		mustSh(t, d, ref, "getent hosts rebind.test >/dev/null || true")
		if connects(t, d, ref, "169.254.169.254", 80) {
			t.Error("the metadata address is reachable through an allowed name")
		}
		if connects(t, d, ref, "198.51.100.8", 443) {
			t.Error("a denied name's address is reachable directly")
		}
		// Bad entries are refused with the field named.
		_, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: "bad-allow", OwnerID: "attacker",
			Spec: sandbox.Spec{ImageBase: "host", Network: sandbox.Network{Mode: sandbox.NetworkAllow, Allow: []string{"ok.example", "not a host!"}}}})
		if err == nil || !strings.Contains(err.Error(), "network.allow[1]") {
			t.Errorf("bad allow entry: got %v, want an error naming network.allow[1]", err)
		}
	})
}
