package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/anthropic"
	"github.com/techbossai/techboss/internal/llm/llmtest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// BenchmarkChatStream compares a streamed answer read straight from the
// (loopback) upstream with the same answer through POST /v1/chat: the
// server's auth, SDK decode, re-encode as SSE and usage recording.
// ttfb-µs is the time from sending the request to the first text delta;
// MB/s counts answer text.
func BenchmarkChatStream(b *testing.B) {
	const deltas, deltaLen = 500, 64
	text := make([]string, deltas)
	for i := range text {
		text[i] = strings.Repeat(string(rune('a'+i%26)), deltaLen)
	}
	up := llmtest.NewAnthropic(b, llmAnthropicKey)
	up.SetDefault(llmtest.Reply{Text: text, Usage: llm.Usage{InputTokens: 100, OutputTokens: deltas}})

	db := storetest.OpenSQLite(b)
	log := slog.New(slog.DiscardHandler)
	as := auth.New(auth.Options{Store: db, Logger: log, Hash: auth.TestHashParams, SessionTTL: time.Hour,
		AccountLimit: 3, IPLimit: 100, ThrottleWindow: time.Minute})
	zero := 0
	reg, err := llm.NewRegistry(context.Background(), llm.Config{Providers: []llm.ProviderConfig{{Name: "anthropic",
		Type: llm.TypeAnthropic, BaseURL: up.URL, APIKey: llmAnthropicKey, MaxRetries: &zero,
		Models: []llm.ModelConfig{{ID: "claude-test", Price: llm.Price{InputPerMTok: 3, OutputPerMTok: 15}}}}}},
		map[string]llm.Factory{llm.TypeAnthropic: anthropic.Factory(nil)})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Logger: log, Store: db, Auth: as, Metrics: prometheus.NewRegistry(),
		LLM: &LLMDeps{Registry: reg, Recorder: dbRecorder{db}}}))
	b.Cleanup(srv.Close)
	u, err := as.CreateUser(context.Background(), "bench@example.com", testPassword, auth.RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := as.CreateToken(context.Background(), u.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}

	run := func(b *testing.B, newReq func() *http.Request, first []byte) {
		client := &http.Client{}
		b.SetBytes(deltas * deltaLen)
		var ttfb time.Duration
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			res, err := client.Do(newReq())
			if err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReaderSize(res.Body, 64<<10)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					b.Fatalf("no first delta: %v", err)
				}
				if bytes.HasPrefix(line, first) {
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
	body := `{"model":"claude-test","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	b.Run("direct", func(b *testing.B) {
		run(b, func() *http.Request {
			r, _ := http.NewRequest("POST", up.URL+"/v1/messages", strings.NewReader(body))
			r.Header.Set("x-api-key", llmAnthropicKey)
			r.Header.Set("anthropic-version", "2023-06-01")
			r.Header.Set("Content-Type", "application/json")
			return r
		}, []byte("event: content_block_delta"))
	})
	b.Run("v1-chat", func(b *testing.B) {
		run(b, func() *http.Request {
			r, _ := http.NewRequest("POST", srv.URL+"/v1/chat", strings.NewReader(`{"model":"claude-test","messages":[{"role":"user","content":"hi"}]}`))
			r.Header.Set("Authorization", "Bearer "+tok.Reveal())
			r.Header.Set("Content-Type", "application/json")
			return r
		}, []byte("event: delta"))
	})
}
