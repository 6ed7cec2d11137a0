package local

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/netns"
)

var _ sandbox.Ports = (*Driver)(nil)

// dialTimeout bounds a connection to a port inside a sandbox. The peer is
// on the sandbox's loopback, so anything slower is a full listen backlog.
const dialTimeout = 5 * time.Second

// procNetLimit bounds how much of /proc/<pid>/net/tcp* is read (150 bytes
// a socket: tens of thousands of sockets).
const procNetLimit = 8 << 20

// ListPorts reads the listening TCP sockets of the sandbox's network
// namespace from /proc/<pid>/net/tcp and tcp6 of a process in it (under
// runsc too: gVisor uses host sockets in that namespace). The server's own
// listeners there (the LLM gateway) are left out.
func (d *Driver) ListPorts(ctx context.Context, ref sandbox.Ref) ([]sandbox.Port, error) {
	s, st, err := d.running(ref)
	if err != nil {
		return nil, err
	}
	own := ownPorts(s)
	dir := "/proc/" + strconv.Itoa(st.nsPID()) + "/net/"
	seen := map[string]bool{}
	out := []sandbox.Port{}
	var inodes []uint64 // out[i]'s socket
	for _, f := range []string{"tcp", "tcp6"} {
		ls, err := readListening(dir + f)
		if errors.Is(err, os.ErrNotExist) && f == "tcp6" {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			if !st.alive() {
				return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
			}
			return nil, fmt.Errorf("read listening ports: %w", err)
		}
		for _, l := range ls {
			p := int(l.addr.Port())
			key := l.addr.String()
			if own[p] || seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, sandbox.Port{Port: p, Address: l.addr.Addr().String()})
			inodes = append(inodes, l.inode)
		}
	}
	if st.Runsc == nil && len(out) > 0 {
		// Under bubblewrap the sandbox's processes are the host's too:
		// name each port by the process holding its socket. (Under gVisor
		// the Sentry holds every socket.)
		names := socketOwners(st.Cgroups, inodes)
		for i := range out {
			out[i].Process = names[inodes[i]]
		}
	}
	slices.SortFunc(out, func(a, b sandbox.Port) int {
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		return strings.Compare(a.Address, b.Address)
	})
	return out, nil
}

// DialPort connects to port on the sandbox's loopback (127.0.0.1, then
// ::1) from a thread inside its network namespace, as Listen does.
func (d *Driver) DialPort(ctx context.Context, ref sandbox.Ref, port int) (net.Conn, error) {
	s, st, err := d.running(ref)
	if err != nil {
		return nil, err
	}
	if ownPorts(s)[port] {
		return nil, errs.E(errs.BadGateway, "nothing the sandbox serves listens on port %d", port)
	}
	nsf, err := os.Open("/proc/" + strconv.Itoa(st.nsPID()) + "/ns/net")
	if err != nil {
		if !st.alive() {
			return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
		}
		return nil, fmt.Errorf("open sandbox network namespace: %w", err)
	}
	defer nsf.Close()
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var c net.Conn
	err = netns.Do(int(nsf.Fd()), func() error {
		var dl net.Dialer
		var err error
		for _, host := range []string{"127.0.0.1", "::1"} {
			c, err = dl.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err == nil || !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENETUNREACH) {
				break
			}
		}
		return err
	})
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENETUNREACH) {
			return nil, errs.E(errs.BadGateway, "nothing listens on port %d in the sandbox", port)
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, errs.E(errs.BadGateway, "port %d in the sandbox did not accept a connection within %s", port, dialTimeout)
		}
		return nil, fmt.Errorf("dial port %d in sandbox: %w", port, err)
	}
	return c, nil
}

// running returns the live sandbox behind ref and a copy of its state.
func (d *Driver) running(ref sandbox.Ref) (*sbx, state, error) {
	s, err := d.get(ref)
	if err != nil {
		return nil, state{}, err
	}
	s.mu.Lock()
	st, gone := s.st, s.gone
	s.mu.Unlock()
	if gone || !st.alive() {
		return nil, state{}, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
	}
	return s, st, nil
}

// maxNamedProcs bounds the processes whose descriptors ListPorts reads
// to name ports.
const maxNamedProcs = 4096

// socketOwners maps the socket inodes wanted to the name (comm) of a
// process of the sandbox's cgroup holding it. Best effort: processes that
// exit meanwhile, or descriptors that cannot be read, are skipped. Only
// readlink and a small read of comm touch the sandbox's /proc entries.
func socketOwners(cg cgroups, wanted []uint64) map[uint64]string {
	names := map[uint64]string{}
	want := map[string]uint64{}
	for _, in := range wanted {
		want["socket:["+strconv.FormatUint(in, 10)+"]"] = in
	}
	pids, err := cg.pids()
	if err != nil {
		return names
	}
	for i, pid := range pids {
		if i == maxNamedProcs || len(names) == len(wanted) {
			break
		}
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			target, err := os.Readlink(dir + "/" + e.Name())
			in, ok := want[target]
			if err != nil || !ok || names[in] != "" {
				continue
			}
			names[in] = procName(pid)
		}
	}
	return names
}

// procName is a process's comm, kept to printable ASCII (the sandbox
// chose it).
func procName(pid int) string {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 64)
	n, _ := f.Read(b)
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, strings.TrimSpace(string(b[:n])))
}

// ownPorts are the ports of the server's listeners in the sandbox (Listen).
func ownPorts(s *sbx) map[int]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	own := map[int]bool{}
	for _, l := range s.listeners {
		if a, ok := l.Addr().(*net.TCPAddr); ok {
			own[a.Port] = true
		}
	}
	return own
}

// listenSock is a socket in state LISTEN: its local address and inode.
type listenSock struct {
	addr  netip.AddrPort
	inode uint64
}

// readListening returns the sockets in state LISTEN in a /proc/net/tcp
// or tcp6 file.
func readListening(path string) ([]listenSock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseListening(io.LimitReader(f, procNetLimit))
}

// tcpListen is the kernel's TCP_LISTEN state as /proc/net/tcp prints it.
const tcpListen = "0A"

// parseListening parses the /proc/net/tcp format: a header line, then per
// socket "sl local_address rem_address st tx:rx tr:when retrnsmt uid
// timeout inode ...", addresses as hex ADDR:PORT with ADDR in the
// kernel's byte order (32-bit words in host order, little-endian here).
func parseListening(r io.Reader) ([]listenSock, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 4096)
	var out []listenSock
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return nil, fmt.Errorf("short line %q", sc.Text())
		}
		if f[3] != tcpListen {
			continue
		}
		ap, err := parseProcAddr(f[1])
		if err != nil {
			return nil, err
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("inode %q: %w", f[9], err)
		}
		out = append(out, listenSock{ap, inode})
	}
	return out, sc.Err()
}

func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: not an IPv4 or IPv6 address", s)
	}
	// Each 32-bit word is in host byte order (little-endian on the
	// architectures we build for).
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}
