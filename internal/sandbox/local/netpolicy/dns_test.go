package netpolicy

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func rr(t testing.TB, s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestAnswerAddrs: only the query's name and its CNAME chain open
// addresses; records a hostile zone adds for other names do not.
func TestAnswerAddrs(t *testing.T) {
	m := new(dns.Msg)
	m.Answer = []dns.RR{
		rr(t, "other.example. 9999 IN A 192.0.2.66"),
		rr(t, "cdn.example. 120 IN A 192.0.2.10"),
		rr(t, "API.example. 30 IN CNAME edge.example."),
		rr(t, "edge.example. 60 IN CNAME cdn.example."),
		rr(t, "cdn.example. 120 IN AAAA 2001:db8::10"),
		rr(t, "unrelated.example. 60 IN CNAME other.example."),
	}
	m.Extra = []dns.RR{rr(t, "api.example. 60 IN A 192.0.2.77")}
	addrs, ttl := answerAddrs(m, "api.example.")
	want := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	if !slices.Equal(addrs, want) || ttl != 120 {
		t.Errorf("answerAddrs = %v, %d; want %v, 120", addrs, ttl, want)
	}
}

// FuzzAnswerAddrs: any message an upstream sends yields only addresses of
// A/AAAA records in its answer section, and never panics.
func FuzzAnswerAddrs(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.Answer = []dns.RR{
		&dns.CNAME{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: "b.example."},
		&dns.A{Hdr: dns.RR_Header{Name: "b.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP("192.0.2.1")},
	}
	b, _ := m.Pack()
	f.Add(b, "a.example.")
	f.Fuzz(func(t *testing.T, b []byte, qname string) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		addrs, _ := answerAddrs(m, qname)
		var all []netip.Addr
		for _, r := range m.Answer {
			switch r := r.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(r.A); ok {
					all = append(all, a.Unmap())
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(r.AAAA); ok {
					all = append(all, a.Unmap())
				}
			}
		}
		for _, a := range addrs {
			if !slices.Contains(all, a) {
				t.Fatalf("address %v not in the answer's A/AAAA records", a)
			}
		}
	})
}
