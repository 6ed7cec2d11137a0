package netpolicy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/techbossai/techboss/internal/sandbox/local/netns"
)

// DNSAddr is where the proxy listens inside the sandbox's namespace (UDP
// and TCP). Port 53 is privileged, and the sandbox has no
// CAP_NET_BIND_SERVICE (nor CAP_NET_ADMIN to lower
// net.ipv4.ip_unprivileged_port_start), so the sandbox cannot take the
// address while the server is down and answer its own queries.
const DNSAddr = "127.0.0.53:53"

// ResolvConf is the /etc/resolv.conf to mount read-only into a sandbox
// with a network of its own, in every mode. No search domains: the host's
// would leak internal names and turn every lookup into several.
const ResolvConf = "nameserver 127.0.0.53\noptions edns0\n"

const (
	// maxInflight bounds concurrent upstream queries per sandbox; more are
	// answered SERVFAIL at once.
	maxInflight = 64
	// upstreamTimeout bounds one query to one upstream server.
	upstreamTimeout = 3 * time.Second
)

// proxy answers the sandbox's DNS queries: in AllowList mode only for
// allowed names, adding each answer's addresses to the sets the output
// chain accepts before the answer is sent, so the connect that follows
// succeeds; in Full mode for every name.
type proxy struct {
	policy    Policy
	upstreams []string
	log       *slog.Logger
	inflight  chan struct{}

	fw *firewall

	udp, tcp *dns.Server
	wg       sync.WaitGroup // the two serving goroutines
}

// startProxy opens the proxy's sockets inside the namespace nsf and serves
// them until close.
func startProxy(nsf int, fw *firewall, p Policy, upstreams []string, log *slog.Logger) (*proxy, error) {
	var pc net.PacketConn
	var l net.Listener
	err := netns.Do(nsf, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", DNSAddr); err != nil {
			return err
		}
		if l, err = net.Listen("tcp4", DNSAddr); err != nil {
			pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dns proxy: listen in sandbox: %w", err)
	}
	px := &proxy{
		policy: p, upstreams: upstreams, log: log, fw: fw,
		inflight: make(chan struct{}, maxInflight),
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	px.udp = &dns.Server{PacketConn: pc, Handler: px, NotifyStartedFunc: notify}
	px.tcp = &dns.Server{Listener: l, Handler: px, NotifyStartedFunc: notify,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }}
	errc := make(chan error, 2)
	for _, s := range []*dns.Server{px.udp, px.tcp} {
		px.wg.Add(1)
		go func() {
			defer px.wg.Done()
			if err := s.ActivateAndServe(); err != nil {
				errc <- err
			}
		}()
	}
	// Shutdown fails on a server that has not started: wait for both.
	for range 2 {
		select {
		case <-started:
		case err := <-errc:
			px.close()
			return nil, fmt.Errorf("dns proxy: %w", err)
		}
	}
	return px, nil
}

// close stops serving and waits for the serving goroutines.
func (px *proxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = px.udp.ShutdownContext(ctx)
	_ = px.tcp.ShutdownContext(ctx)
	// Shutdown of a server that never started leaves its socket open.
	if px.udp.PacketConn != nil {
		_ = px.udp.PacketConn.Close()
	}
	if px.tcp.Listener != nil {
		_ = px.tcp.Listener.Close()
	}
	px.wg.Wait()
}

// ServeDNS answers one query from the sandbox.
func (px *proxy) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	reply := func(rcode int) {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		_ = w.WriteMsg(m)
	}
	select {
	case px.inflight <- struct{}{}:
		defer func() { <-px.inflight }()
	default:
		reply(dns.RcodeServerFailure)
		return
	}
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 || req.Response {
		reply(dns.RcodeNotImplemented)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
	var ports []uint16
	if px.policy.Mode == AllowList {
		var ok bool
		if ports, ok = matchName(px.policy.Allow, name); !ok {
			// Not forwarded: a denied name must not carry data out
			// through the upstream resolvers either.
			reply(dns.RcodeNameError)
			return
		}
	}
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	resp, err := px.forward(req, proto)
	if err != nil {
		px.log.Debug("dns upstream failed", "name", name, "err", err)
		reply(dns.RcodeServerFailure)
		return
	}
	if px.policy.Mode == AllowList && len(ports) > 0 {
		if addrs, ttl := answerAddrs(resp, q.Name); len(addrs) > 0 {
			if err := px.fw.open(addrs, ports, time.Duration(ttl)*time.Second); err != nil {
				px.log.Error("dns proxy: open resolved addresses", "name", name, "err", err)
				reply(dns.RcodeServerFailure)
				return
			}
		}
	}
	resp.Id = req.Id
	if proto == "udp" {
		resp.Truncate(udpSize(req))
	}
	_ = w.WriteMsg(resp)
}

func udpSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil {
		return int(max(o.UDPSize(), dns.MinMsgSize))
	}
	return dns.MinMsgSize
}

// forward asks the upstream servers in turn, over TCP when the sandbox
// asked over TCP or the UDP answer was truncated.
func (px *proxy) forward(req *dns.Msg, proto string) (*dns.Msg, error) {
	var last error
	for _, up := range px.upstreams {
		for _, n := range []string{proto, "tcp"} {
			c := &dns.Client{Net: n, Timeout: upstreamTimeout}
			ctx, cancel := context.WithTimeout(context.Background(), upstreamTimeout)
			resp, _, err := c.ExchangeContext(ctx, req.Copy(), up)
			cancel()
			if err != nil {
				last = err
				break
			}
			if resp.Truncated && n == "udp" {
				continue
			}
			return resp, nil
		}
	}
	if last == nil {
		last = fmt.Errorf("no upstream resolver")
	}
	return nil, last
}

// answerAddrs returns the A and AAAA addresses an answer gives for qname,
// following its CNAME chain (records for other names are ignored), and the
// largest TTL among them.
func answerAddrs(resp *dns.Msg, qname string) ([]netip.Addr, uint32) {
	names := map[string]bool{strings.ToLower(dns.Fqdn(qname)): true}
	for changed := true; changed; {
		changed = false
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && names[strings.ToLower(c.Hdr.Name)] && !names[strings.ToLower(c.Target)] {
				names[strings.ToLower(c.Target)] = true
				changed = true
			}
		}
	}
	var addrs []netip.Addr
	var ttl uint32
	for _, rr := range resp.Answer {
		var ip net.IP
		switch r := rr.(type) {
		case *dns.A:
			ip = r.A
		case *dns.AAAA:
			ip = r.AAAA
		default:
			continue
		}
		if !names[strings.ToLower(rr.Header().Name)] {
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
			ttl = max(ttl, rr.Header().Ttl)
		}
	}
	return addrs, ttl
}
