package sandboxtest

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FakeDNS serves A records on a loopback UDP port, for the local driver's
// DNSUpstreams (the resolver behind a sandbox's DNS proxy), and returns its
// address. answer gets each queried name (lower case, no trailing dot) and
// returns its address, or false for NXDOMAIN; tests also use the queries
// as signals from inside a sandbox, which reaches no host service. It stops
// at test cleanup.
func FakeDNS(t testing.TB, answer func(name string) (netip.Addr, bool)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		for _, q := range req.Question {
			ip, ok := answer(strings.TrimSuffix(strings.ToLower(q.Name), "."))
			switch {
			case !ok:
				m.Rcode = dns.RcodeNameError
			case q.Qtype == dns.TypeA && ip.Is4():
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: ip.AsSlice()})
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.ShutdownContext(context.Background()) })
	return pc.LocalAddr().String()
}
