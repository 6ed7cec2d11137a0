package local

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 124 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 125 1 0000000000000000 20 4 30 10 -1
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
`

func TestParseListening(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []listenSock
	}{
		{procNetTCP, []listenSock{{netip.MustParseAddrPort("127.0.0.1:8000"), 123}, {netip.MustParseAddrPort("0.0.0.0:22"), 124}}},
		{procNetTCP6, []listenSock{{netip.MustParseAddrPort("[::1]:3000"), 1}, {netip.MustParseAddrPort("127.0.0.1:80"), 2}}},
	} {
		got, err := parseListening(strings.NewReader(c.in))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(c.want, got, cmp.AllowUnexported(listenSock{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
			t.Errorf("parseListening (-want +got):\n%s", d)
		}
	}
	if _, err := parseListening(strings.NewReader("hdr\n 0: zz:1F40 0 0A 0 0 0 0 0 1\n")); err == nil {
		t.Error("a bad address parsed")
	}
}

func FuzzParseListening(f *testing.F) {
	f.Add(procNetTCP)
	f.Add(procNetTCP6)
	f.Add("hdr\n 0: 0100007F:FFFFF 0 0A\n")
	f.Fuzz(func(t *testing.T, s string) {
		aps, err := parseListening(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, l := range aps {
			if !l.addr.IsValid() {
				t.Fatalf("invalid address %v from %q", l.addr, s)
			}
		}
	})
}

// TestPorts lists and dials a server inside a sandbox without network:
// the connection comes from inside its namespace, the host cannot reach it,
// and the server's own gateway listener is neither listed nor dialled.
func TestPorts(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	gw, err := d.Listen(testCtx(t), ref, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gwPort := gw.Addr().(*net.TCPAddr).Port

	ports, err := d.ListPorts(testCtx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 0 {
		t.Errorf("a fresh sandbox lists %+v, want no ports (not the gateway's %d)", ports, gwPort)
	}
	if _, err := d.DialPort(testCtx(t), ref, 8123); errs.KindOf(err) != errs.BadGateway {
		t.Errorf("dial of a closed port: %v, want a BadGateway error", err)
	}
	if _, err := d.DialPort(testCtx(t), ref, gwPort); errs.KindOf(err) != errs.BadGateway {
		t.Errorf("dial of the gateway's port: %v, want a BadGateway error", err)
	}

	mustSh(t, d, ref, `cd /tmp && echo hello-from-sandbox > index.txt && (python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 &)
for i in $(seq 100); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8123))' 2>/dev/null && exit 0; sleep 0.1; done; exit 1`)
	ports, err = d.ListPorts(testCtx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	want := sandbox.Port{Port: 8123, Address: "127.0.0.1", Process: "python3"}
	if os.Getenv("TECHBOSS_TEST_LOCAL_RUNTIME") == RuntimeRunsc {
		want.Process = "" // gVisor's Sentry holds every socket
	}
	if d := cmp.Diff([]sandbox.Port{want}, ports); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
	c, err := d.DialPort(testCtx(t), ref, 8123)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /index.txt HTTP/1.0\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "hello-from-sandbox\n" {
		t.Errorf("GET through DialPort: %d %q", res.StatusCode, body)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:8123", time.Second); err == nil {
		c.Close()
		t.Error("the sandbox's port 8123 is reachable from the host's loopback")
	}
}
