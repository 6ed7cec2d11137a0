package gateway_test

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/llm/llmtest"
)

// BenchmarkGatewayFirstByte is the gateway's overhead for `make bench`:
// time from sending a streamed Anthropic Messages request to reading its
// first text delta, through the gateway (run-token auth, upstream call,
// metering tee) beside the same request straight to the loopback
// upstream (floor), 200 of each alternating, in one b.N iteration.
func BenchmarkGatewayFirstByte(b *testing.B) {
	text := make([]string, 20)
	for i := range text {
		text[i] = strings.Repeat("x", 64)
	}
	anth := llmtest.NewAnthropic(b, "sk-ant-bench")
	anth.SetDefault(llmtest.Reply{Text: text, Usage: llm.Usage{InputTokens: 100, OutputTokens: 20}})
	g, err := gateway.New(gateway.Config{
		Upstream:  gateway.NewAnthropic(anth.URL, "sk-ant-bench", nil),
		RunTokens: tokens{"tbr_bench": {UserID: "u", SandboxID: "s", RunID: "r"}},
		Recorder:  discardRecorder{},
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gateway.Prefix+"/", g)
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	client := &http.Client{}
	b.Cleanup(client.CloseIdleConnections)
	body := `{"model":"claude-test","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	first := []byte("event: content_block_delta")
	ttfb := func(url, key string) time.Duration {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("x-api-key", key)
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("Content-Type", "application/json")
		d, _ := firstLine(b, client, req, func(line []byte) bool { return bytes.HasPrefix(line, first) })
		return d
	}
	direct, via := anth.URL+"/v1/messages", srv.URL+gateway.Prefix+"/v1/messages"
	ttfb(direct, "sk-ant-bench") // warm both connections
	ttfb(via, "tbr_bench")
	const samples = 200
	var ours, floor []time.Duration
	b.ResetTimer()
	for range max(b.N, samples) {
		floor = append(floor, ttfb(direct, "sk-ant-bench"))
		ours = append(ours, ttfb(via, "tbr_bench"))
	}
	b.StopTimer()
	b.ReportMetric(quantileMS(ours, .5), "p50-ms")
	b.ReportMetric(quantileMS(ours, .99), "p99-ms")
	b.ReportMetric(quantileMS(floor, .5), "floor-p50-ms")
	b.ReportMetric(quantileMS(floor, .99), "floor-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// firstLine sends req and reads the streamed answer: first is the time
// until a line that match accepts, total until the end of the body.
func firstLine(b *testing.B, client *http.Client, req *http.Request, match func([]byte) bool) (first, total time.Duration) {
	b.Helper()
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReaderSize(res.Body, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatalf("%s: status %d, no first delta: %v", req.URL, res.StatusCode, err)
		}
		if match(line) {
			break
		}
	}
	first = time.Since(start)
	if _, err := io.Copy(io.Discard, br); err != nil {
		b.Fatal(err)
	}
	return first, time.Since(start)
}

// quantileMS is the q-th quantile (0..1) of ds in ms; it sorts ds.
func quantileMS(ds []time.Duration, q float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(float64(len(ds)-1)*q)]) / float64(time.Millisecond)
}
