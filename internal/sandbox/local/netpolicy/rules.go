package netpolicy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/sandbox"
)

// The table the server owns inside a sandbox's namespace. Nothing else runs
// nftables there: the sandbox cannot (no CAP_NET_ADMIN).
const (
	tableName     = "techboss"
	outputChain   = "output"
	hostAddrChain = "host_addrs"
)

// Addresses no sandbox reaches unless allowed: sandbox.BlockedRanges
// (the sandbox's own lo is accepted before these rules, so for loopback
// this only stops routing tricks) and sandbox.PrivateRanges.
var (
	alwaysBlocked = sandbox.BlockedRanges
	privateRanges = sandbox.PrivateRanges
)

// Resolved addresses stay open at least this long, and at least as long as
// their TTL, so an answer a client caches never outlives its rule.
const (
	minResolvedTimeout = 60 * time.Second
	maxResolvedTimeout = 24 * time.Hour
	// maxResolved bounds each set: an allowed wildcard whose zone is
	// hostile could otherwise grow the kernel's memory use without end.
	maxResolved = 16384
)

// setName names the set of resolved addresses for one family and port.
func setName(v6 bool, port uint16) string {
	fam := "4"
	if v6 {
		fam = "6"
	}
	if port == 0 {
		return "resolved" + fam + "_any"
	}
	return "resolved" + fam + "_" + strconv.Itoa(int(port))
}

// namePorts lists the distinct ports of the policy's host-name rules.
func namePorts(rules []Rule) []uint16 {
	seen := map[uint16]bool{}
	var ports []uint16
	for _, r := range rules {
		if r.Host != "" && !seen[r.Port] {
			seen[r.Port] = true
			ports = append(ports, r.Port)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// openConn opens an nftables connection whose sockets live in the
// namespace behind nsFD.
func openConn(nsFD int) (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return nil, fmt.Errorf("nftables in sandbox namespace: %w", err)
	}
	return c, nil
}

// install replaces the server's table in the namespace with one built from
// p, in one atomic batch. hostAddrs are the host's own addresses.
func install(c *nftables.Conn, p Policy, hostAddrs []netip.Addr) error {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	// Add then delete: deleting a table that does not exist fails the batch.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	var sets []*nftables.Set
	if p.Mode == AllowList {
		for _, port := range namePorts(p.Allow) {
			for _, v6 := range []bool{false, true} {
				s := &nftables.Set{
					Table: t, Name: setName(v6, port), KeyType: nftables.TypeIPAddr,
					HasTimeout: true, Timeout: minResolvedTimeout, Size: maxResolved,
				}
				if v6 {
					s.KeyType = nftables.TypeIP6Addr
				}
				if err := c.AddSet(s, nil); err != nil {
					return fmt.Errorf("add set %s: %w", s.Name, err)
				}
				sets = append(sets, s)
			}
		}
	}

	hosts := c.AddChain(&nftables.Chain{Name: hostAddrChain, Table: t})
	addHostRules(c, hosts, hostAddrs)

	drop := nftables.ChainPolicyDrop
	out := c.AddChain(&nftables.Chain{
		Name: outputChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	add := func(e ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: e}) }

	// The sandbox's own loopback: the gateway listener, the DNS proxy, its
	// own servers. Nothing on lo leaves the namespace (pasta runs with
	// -T none -U none, so it binds nothing there).
	add(&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")}, accept())
	// Connections already let through stay open when a resolved address
	// expires from its set.
	add(&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}}, accept())
	// IPv6 neighbour discovery with pasta, the only other host on the link.
	add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{133}, ToData: []byte{136}}, accept())

	for _, r := range p.Operator {
		for _, m := range ruleMatches(r) {
			add(append(m, accept())...)
		}
	}
	add(&expr.Verdict{Kind: expr.VerdictJump, Chain: hostAddrChain})
	for _, pfx := range alwaysBlocked {
		for _, rr := range rejectRules(prefixMatch(pfx)) {
			add(rr...)
		}
	}
	for _, r := range p.Allow {
		if r.Host != "" {
			continue
		}
		for _, m := range ruleMatches(r) {
			add(append(m, accept())...)
		}
	}
	for _, pfx := range privateRanges {
		for _, rr := range rejectRules(prefixMatch(pfx)) {
			add(rr...)
		}
	}
	if p.Mode == Full {
		add(accept())
	} else {
		for _, s := range sets {
			port := portOfSet(p.Allow, s.Name)
			v6 := s.KeyType == nftables.TypeIP6Addr
			look := append(daddr(v6), &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
			if port == 0 {
				add(append(look, accept())...)
				continue
			}
			for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				add(append(append(portMatch(proto, port), look...), accept())...)
			}
		}
	}
	for _, rr := range rejectRules(nil) {
		add(rr...)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables rules: %w", err)
	}
	return nil
}

func portOfSet(rules []Rule, name string) uint16 {
	for _, port := range namePorts(rules) {
		if setName(false, port) == name || setName(true, port) == name {
			return port
		}
	}
	return 0
}

// refreshHostAddrs replaces the host-address rules in one batch.
func refreshHostAddrs(c *nftables.Conn, hostAddrs []netip.Addr) error {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	ch := &nftables.Chain{Name: hostAddrChain, Table: t}
	c.FlushChain(ch)
	addHostRules(c, ch, hostAddrs)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("refresh host addresses: %w", err)
	}
	return nil
}

func addHostRules(c *nftables.Conn, ch *nftables.Chain, addrs []netip.Addr) {
	for _, a := range addrs {
		for _, rr := range rejectRules(prefixMatch(netip.PrefixFrom(a, a.BitLen()))) {
			c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: rr})
		}
	}
}

// firewall is the server's handle on the rules of one sandbox's namespace.
type firewall struct {
	mu   sync.Mutex // one batch at a time on conn
	conn *nftables.Conn
	now  func() time.Time
	// expiry records when each resolved address's set element expires,
	// so that a shorter TTL (another name, the same address) never cuts
	// an element short, and repeated answers cost no netlink round trip.
	expiry map[opening]time.Time
}

type opening struct {
	set  string
	addr netip.Addr
}

func newFirewall(conn *nftables.Conn) *firewall {
	return &firewall{conn: conn, now: time.Now, expiry: map[opening]time.Time{}}
}

// load seeds the expiry records from the kernel's sets, after a restart.
func (fw *firewall) load(p Policy) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	now := fw.now()
	for _, port := range namePorts(p.Allow) {
		for _, v6 := range []bool{false, true} {
			s, err := fw.conn.GetSetByName(t, setName(v6, port))
			if err != nil {
				return fmt.Errorf("read resolved set: %w", err)
			}
			els, err := fw.conn.GetSetElements(s)
			if err != nil {
				return fmt.Errorf("read resolved set: %w", err)
			}
			for _, e := range els {
				if a, ok := netip.AddrFromSlice(e.Key); ok {
					fw.expiry[opening{s.Name, a}] = now.Add(e.Expires)
				}
			}
		}
	}
	return nil
}

// open lets addrs through on ports (0: any) for at least ttl, clamped to
// [minResolvedTimeout, maxResolvedTimeout]. An element is only ever
// extended: re-adding an element with a timeout replaces its timeout
// (Linux 6.10 and later; older kernels keep the first).
func (fw *firewall) open(addrs []netip.Addr, ports []uint16, ttl time.Duration) error {
	timeout := min(max(ttl, minResolvedTimeout), maxResolvedTimeout)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	now := fw.now()
	until := now.Add(timeout)
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	var added []opening
	for _, port := range ports {
		for _, v6 := range []bool{false, true} {
			name := setName(v6, port)
			var elems []nftables.SetElement
			for _, a := range addrs {
				k := opening{name, a}
				// A second of slack: refreshing an element for a second
				// more is not worth a round trip.
				if a.Is6() != v6 || fw.expiry[k].After(until.Add(-time.Second)) {
					continue
				}
				elems = append(elems, nftables.SetElement{Key: a.AsSlice(), Timeout: timeout})
				added = append(added, k)
			}
			if len(elems) == 0 {
				continue
			}
			s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, HasTimeout: true}
			if v6 {
				s.KeyType = nftables.TypeIP6Addr
			}
			if err := fw.conn.SetAddElements(s, elems); err != nil {
				return fmt.Errorf("add resolved addresses: %w", err)
			}
		}
	}
	if len(added) == 0 {
		return nil
	}
	if err := fw.conn.Flush(); err != nil {
		return fmt.Errorf("add resolved addresses: %w", err)
	}
	for _, k := range added {
		fw.expiry[k] = until
	}
	if len(fw.expiry) > 2*maxResolved {
		for k, e := range fw.expiry {
			if e.Before(now) {
				delete(fw.expiry, k)
			}
		}
	}
	return nil
}

// refreshHostAddrs replaces the host-address rules.
func (fw *firewall) refreshHostAddrs(hosts []netip.Addr) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return refreshHostAddrs(fw.conn, hosts)
}

// hostAddrs lists the addresses of every interface of the server's
// namespace (the host's), loopback included.
func hostAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// daddr loads the destination address of the family's packets into
// register 1 (and does not match the other family).
func daddr(v6 bool) []expr.Any {
	if v6 {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		}
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
	}
}

// prefixMatch matches packets to p.
func prefixMatch(p netip.Prefix) []expr.Any {
	e := daddr(p.Addr().Is6())
	n := p.Addr().BitLen() / 8
	switch {
	case p.Bits() == 0:
		return e[:2]
	case p.Bits() == p.Addr().BitLen():
		return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
	}
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(e,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// portMatch matches proto packets to port.
func portMatch(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// ruleMatches returns the expression lists matching a prefix rule: one, or
// one per transport protocol when the rule names a port.
func ruleMatches(r Rule) [][]expr.Any {
	if r.Port == 0 {
		return [][]expr.Any{prefixMatch(r.Prefix)}
	}
	var out [][]expr.Any
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		out = append(out, append(portMatch(proto, r.Port), prefixMatch(r.Prefix)...))
	}
	return out
}

// rejectRules rejects what match matches, quickly: a TCP reset for TCP (the
// connect fails with ECONNREFUSED at once), an ICMP "administratively
// prohibited" for the rest, instead of a silent drop that makes clients wait
// for their timeouts.
func rejectRules(match []expr.Any) [][]expr.Any {
	tcp := append(append([]expr.Any{}, match...),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	other := append(append([]expr.Any{}, match...),
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	return [][]expr.Any{tcp, other}
}

// nsFile opens a network namespace handle.
func nsFile(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		f.Close()
		return nil, fmt.Errorf("open network namespace: %s is not a namespace file", path)
	}
	return f, nil
}
