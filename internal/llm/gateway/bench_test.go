package gateway_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/llm/llmtest"
)

type discardRecorder struct{}

func (discardRecorder) RecordUsage(context.Context, agent.UsageRecord) error { return nil }

// BenchmarkOpenAIGatewayFirstByte is the OpenAI passthrough's overhead:
// a streamed Chat Completions answer (500 deltas of 64 B) read through the
// gateway (run-token auth, upstream call, metering tee) beside the same
// request straight to the loopback upstream (floor), 200 of each
// alternating in one run. p50/p99-ms are the time to the first text delta;
// MiB/s counts answer text over the whole stream.
func BenchmarkOpenAIGatewayFirstByte(b *testing.B) {
	const deltas, deltaLen = 500, 64
	text := make([]string, deltas)
	for i := range text {
		text[i] = strings.Repeat(string(rune('a'+i%26)), deltaLen)
	}
	oai := llmtest.NewOpenAI(b, "sk-oai-bench")
	oai.SetDefault(llmtest.Reply{Text: text, Usage: llm.Usage{InputTokens: 100, OutputTokens: deltas}})
	g, err := gateway.New(gateway.Config{
		Upstream:  gateway.NewAnthropic("http://127.0.0.1:1", "unused", nil),
		RunTokens: tokens{"tbr_bench": {UserID: "u", SandboxID: "s", RunID: "r"}},
		Recorder:  discardRecorder{},
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(gateway.OpenAIPrefix+"/", gateway.NewOpenAI(g, "openai", oai.URL+"/v1", "sk-oai-bench", nil))
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	client := &http.Client{}
	b.Cleanup(client.CloseIdleConnections)
	body := `{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	first := []byte(`"content":"a`)
	once := func(url, key string) (time.Duration, time.Duration) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		return firstLine(b, client, req, func(line []byte) bool { return bytes.Contains(line, first) })
	}
	direct, via := oai.URL+"/v1/chat/completions", srv.URL+gateway.OpenAIPrefix+"/v1/chat/completions"
	once(direct, "sk-oai-bench") // warm both connections
	once(via, "tbr_bench")
	const samples = 200
	var firstD, firstV []time.Duration
	var allD, allV time.Duration
	b.ResetTimer()
	for range max(b.N, samples) {
		f, a := once(direct, "sk-oai-bench")
		firstD, allD = append(firstD, f), allD+a
		f, a = once(via, "tbr_bench")
		firstV, allV = append(firstV, f), allV+a
	}
	b.StopTimer()
	p := quantileMS
	n := float64(len(firstV))
	mib := func(total time.Duration) float64 { return n * deltas * deltaLen / (1 << 20) / total.Seconds() }
	b.ReportMetric(p(firstV, .5), "p50-ms")
	b.ReportMetric(p(firstV, .99), "p99-ms")
	b.ReportMetric(p(firstD, .5), "floor-p50-ms")
	b.ReportMetric(p(firstD, .99), "floor-p99-ms")
	b.ReportMetric(p(firstV, .5)-p(firstD, .5), "added-p50-ms")
	b.ReportMetric(mib(allV), "MiB/s")
	b.ReportMetric(mib(allD), "floor-MiB/s")
	b.ReportMetric(0, "ns/op")
}
