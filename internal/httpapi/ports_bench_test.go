package httpapi

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
)

// BenchmarkPreviewProxy: a small GET through the preview proxy (path form,
// API token) to an app in a network-none sandbox, against the floor: the
// same app reached directly over a connection dialled in the sandbox's
// network namespace (what the proxy's transport does), without the
// proxy. Both keep their connections alive. Reported: latency p50/p99 of
// sequential requests, the p50 the proxy adds, and requests/s with 8
// concurrent clients.
func BenchmarkPreviewProxy(b *testing.B) {
	h := newPreviewHarness(b)
	ctx := context.Background()
	u, err := h.auth.CreateUser(ctx, "bench@example.com", testPassword, auth.RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := h.auth.CreateToken(ctx, u.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}
	sb, err := h.m.Create(ctx, u.ID, sandbox.Spec{})
	if err != nil {
		b.Fatal(err)
	}
	bin, err := os.ReadFile(previewAppBin(b))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.m.WriteFile(ctx, u.ID, sb.ID, "/workspace/previewapp", 0o755, bytes.NewReader(bin)); err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	st, err := h.m.Exec(ctx, u.ID, sb.ID, sandbox.ExecRequest{Argv: []string{"sh", "-c", `(./previewapp -port 8000 >/dev/null 2>&1 &)
until grep -q ':1F40 00000000:0000 0A' /proc/net/tcp; do sleep 0.05; done`}, Stdout: &out, Stderr: &out})
	if err != nil || st.Code != 0 {
		b.Fatalf("start previewapp: %+v %v %s", st, err, out.String())
	}

	proxied := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	direct := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 16,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return h.m.DialPort(ctx, u.ID, sb.ID, 8000)
		},
	}}
	b.Cleanup(proxied.CloseIdleConnections)
	b.Cleanup(direct.CloseIdleConnections)
	get := func(c *http.Client, url string, auth bool) {
		req, _ := http.NewRequest("GET", url, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+string(tok))
		}
		res, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "previewapp /" {
			b.Fatalf("GET %s: %d %q", url, res.StatusCode, body)
		}
	}
	viaProxy := func() { get(proxied, h.srv.URL+"/sandbox/"+sb.ID+"/ports/8000/", true) }
	viaNetns := func() { get(direct, "http://sandbox/", false) }

	const seq, conc, perWorker = 1000, 8, 250
	latencies := func(f func()) []time.Duration {
		ds := make([]time.Duration, 0, seq)
		for range seq {
			t0 := time.Now()
			f()
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		return ds
	}
	throughput := func(f func()) float64 {
		var wg sync.WaitGroup
		t0 := time.Now()
		for range conc {
			wg.Go(func() {
				for range perWorker {
					f()
				}
			})
		}
		wg.Wait()
		return conc * perWorker / time.Since(t0).Seconds()
	}
	for range 50 { // warm both pools
		viaProxy()
		viaNetns()
	}
	b.ResetTimer()
	var ours, floor []time.Duration
	var oursRPS, floorRPS float64
	for range b.N {
		// Alternate, so both see the same machine load.
		floor = latencies(viaNetns)
		ours = latencies(viaProxy)
		floorRPS = throughput(viaNetns)
		oursRPS = throughput(viaProxy)
	}
	b.StopTimer()
	q := func(ds []time.Duration, p float64) float64 {
		return float64(ds[int(float64(len(ds)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(q(ours, .5), "p50-ms")
	b.ReportMetric(q(floor, .5), "floor-p50-ms")
	b.ReportMetric(q(ours, .99), "p99-ms")
	b.ReportMetric(q(floor, .99), "floor-p99-ms")
	b.ReportMetric(q(ours, .5)-q(floor, .5), "added-p50-ms")
	b.ReportMetric(oursRPS, "req/s")
	b.ReportMetric(floorRPS, "floor-req/s")
}
