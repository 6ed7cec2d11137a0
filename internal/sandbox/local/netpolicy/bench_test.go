package netpolicy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkStart measures Start (rules, pasta, DNS proxy) and the sandbox's
// first outbound connection after it, per sandbox.
func BenchmarkStart(b *testing.B) {
	requireTools(b)
	w := newWorld(b)
	var start, first time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := sandboxNS(b)
		dir := b.TempDir()
		b.StartTimer()
		t0 := time.Now()
		n, err := Start(context.Background(), Options{NetNS: ns, UserNS: userNS(ns), Policy: Policy{Mode: Full}, StateDir: dir, Upstreams: []string{w.upstream}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Destroy() })
		t1 := time.Now()
		if err := dialFrom(b, ns, w.public); err != nil {
			b.Fatalf("first connect: %v", err)
		}
		t2 := time.Now()
		b.StopTimer()
		start += t1.Sub(t0)
		first += t2.Sub(t0)
		if err := n.Destroy(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(start.Microseconds())/float64(b.N)/1000, "start-ms")
	b.ReportMetric(float64(first.Microseconds())/float64(b.N)/1000, "first-connect-ms")
}

// BenchmarkConnect measures a TCP connect and close, from the host and from
// sandboxes, so the difference is what pasta and the rules add.
func BenchmarkConnect(b *testing.B) {
	requireTools(b)
	w := newWorld(b)
	full := sandboxNS(b)
	startNet(b, full, Policy{Mode: Full}, w, nil)
	allow := sandboxNS(b)
	startNet(b, allow, Policy{Mode: AllowList, Allow: []Rule{{Host: "allowed.test"}}}, w, nil)
	resolveFrom(b, allow, "allowed.test")
	var inside string
	if err := inNS(b, full, func() error { inside = serve(b, "", "127.0.0.1:0"); return nil }); err != nil {
		b.Fatal(err)
	}
	cases := []struct{ name, ns, addr string }{
		{"host/loopback", "", w.hostLo},
		{"host/remote", "", w.public},
		{"sandbox/own-loopback", full, inside},
		{"sandbox-full/remote", full, w.public},
		{"sandbox-allowlist/remote", allow, w.allowed},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// The median as well as the mean: this machine is shared and
			// the mean swings with its load.
			lat := make([]time.Duration, b.N)
			loop := func() error {
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					conn, err := net.Dial("tcp", c.addr)
					if err != nil {
						return err
					}
					lat[i] = time.Since(t0)
					conn.Close()
				}
				b.StopTimer()
				return nil
			}
			var err error
			if c.ns == "" {
				err = loop()
			} else {
				err = inNS(b, c.ns, loop)
			}
			if err != nil {
				b.Fatal(err)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1000, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*9/10].Nanoseconds())/1000, "p90-µs")
		})
	}
}

// BenchmarkResolve measures a lookup through the sandbox's DNS proxy (to
// an upstream on host loopback), against the same lookup from the host
// straight to the upstream.
func BenchmarkResolve(b *testing.B) {
	requireTools(b)
	w := newWorld(b)
	ns := sandboxNS(b)
	startNet(b, ns, Policy{Mode: AllowList, Allow: []Rule{{Host: "allowed.test"}}}, w, nil)
	for _, c := range []struct{ name, ns, server string }{
		{"host/upstream", "", w.upstream},
		{"sandbox/proxy", ns, DNSAddr},
	} {
		b.Run(c.name, func(b *testing.B) {
			loop := func() error {
				cl := &dns.Client{Timeout: 3 * time.Second}
				m := new(dns.Msg)
				m.SetQuestion("allowed.test.", dns.TypeA)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					r, _, err := cl.Exchange(m, c.server)
					if err != nil {
						return err
					}
					if r.Rcode != dns.RcodeSuccess {
						return fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
					}
				}
				b.StopTimer()
				return nil
			}
			var err error
			if c.ns == "" {
				err = loop()
			} else {
				err = inNS(b, c.ns, loop)
			}
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
