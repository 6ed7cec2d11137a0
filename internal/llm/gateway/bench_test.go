package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
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

// BenchmarkPassthroughStream compares a streamed answer read straight from
// the loopback upstream with the same answer through the gateway, for the
// Anthropic Messages and OpenAI Chat Completions passthroughs. ttfb-µs is
// the time from sending the request to the first text delta; MB/s counts
// answer text; the gateway's share is the difference within one run.
func BenchmarkPassthroughStream(b *testing.B) {
	const deltas, deltaLen = 500, 64
	text := make([]string, deltas)
	for i := range text {
		text[i] = strings.Repeat(string(rune('a'+i%26)), deltaLen)
	}
	reply := llmtest.Reply{Text: text, Usage: llm.Usage{InputTokens: 100, OutputTokens: deltas}}
	anth := llmtest.NewAnthropic(b, "sk-ant-bench")
	anth.SetDefault(reply)
	oai := llmtest.NewOpenAI(b, "sk-oai-bench")
	oai.SetDefault(reply)
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
	mux.Handle(gateway.OpenAIPrefix+"/", gateway.NewOpenAI(g, "openai", oai.URL+"/v1", "sk-oai-bench", nil))
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)

	run := func(b *testing.B, url string, hdr map[string]string, body string, first []byte) {
		client := &http.Client{}
		b.SetBytes(deltas * deltaLen)
		var ttfb time.Duration
		b.ResetTimer()
		for range b.N {
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			start := time.Now()
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReaderSize(res.Body, 64<<10)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					b.Fatalf("no first delta: %v", err)
				}
				if bytes.Contains(line, first) {
					break
				}
			}
			ttfb += time.Since(start)
			if _, err := io.Copy(io.Discard, br); err != nil {
				b.Fatal(err)
			}
			res.Body.Close()
		}
		b.ReportMetric(float64(ttfb.Microseconds())/float64(b.N), "ttfb-µs")
	}
	anthBody := `{"model":"claude-test","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	oaiBody := `{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	b.Run("anthropic/direct", func(b *testing.B) {
		run(b, anth.URL+"/v1/messages", map[string]string{"x-api-key": "sk-ant-bench"}, anthBody, []byte("event: content_block_delta"))
	})
	b.Run("anthropic/gateway", func(b *testing.B) {
		run(b, srv.URL+gateway.Prefix+"/v1/messages", map[string]string{"x-api-key": "tbr_bench"}, anthBody, []byte("event: content_block_delta"))
	})
	b.Run("openai/direct", func(b *testing.B) {
		run(b, oai.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-oai-bench"}, oaiBody, []byte(`"content":"a`))
	})
	b.Run("openai/gateway", func(b *testing.B) {
		run(b, srv.URL+gateway.OpenAIPrefix+"/v1/chat/completions", map[string]string{"Authorization": "Bearer tbr_bench"}, oaiBody, []byte(`"content":"a`))
	})
}
