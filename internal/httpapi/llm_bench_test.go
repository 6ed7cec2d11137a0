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

// BenchmarkChatFirstByte compares answers read straight from the loopback
// upstream (the floor) with the same answers through POST /v1/chat (auth,
// SDK decode, re-encode as SSE, usage recording), alternating the two in
// one run. p50/p99-ms: time to the first text delta of a short answer (20
// deltas), 200 samples each; MiB/s: answer text over a long answer (500
// deltas of 64 B), 50 samples each. A long answer is not used for the
// first byte: the loopback upstream rendering it competes for the CPU with
// the server under test, which no remote upstream does.
func BenchmarkChatFirstByte(b *testing.B) {
	const deltas, deltaLen = 500, 64
	text := make([]string, deltas)
	for i := range text {
		text[i] = strings.Repeat(string(rune('a'+i%26)), deltaLen)
	}
	up := llmtest.NewAnthropic(b, llmAnthropicKey)
	long := llmtest.Reply{Text: text, Usage: llm.Usage{InputTokens: 100, OutputTokens: deltas}}
	short := llmtest.Reply{Text: text[:20], Usage: llm.Usage{InputTokens: 100, OutputTokens: 20}}

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

	const samples = 200
	client := &http.Client{}
	// once returns the time to the first delta and to the end of the answer.
	once := func(req *http.Request, first []byte) (time.Duration, time.Duration) {
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
				b.Fatalf("no first delta (status %d): %v", res.StatusCode, err)
			}
			if bytes.HasPrefix(line, first) {
				break
			}
		}
		ttfb := time.Since(start)
		if _, err := io.Copy(io.Discard, br); err != nil {
			b.Fatal(err)
		}
		return ttfb, time.Since(start)
	}
	body := `{"model":"claude-test","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	direct := func() *http.Request {
		r, _ := http.NewRequest("POST", up.URL+"/v1/messages", strings.NewReader(body))
		r.Header.Set("x-api-key", llmAnthropicKey)
		r.Header.Set("anthropic-version", "2023-06-01")
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	viaChat := func() *http.Request {
		r, _ := http.NewRequest("POST", srv.URL+"/v1/chat", strings.NewReader(`{"model":"claude-test","messages":[{"role":"user","content":"hi"}]}`))
		r.Header.Set("Authorization", "Bearer "+tok.Reveal())
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	up.SetDefault(short)
	once(direct(), []byte("event: content_block_delta")) // warm connections
	once(viaChat(), []byte("event: delta"))
	b.ResetTimer()
	var firstD, firstV, allD, allV []time.Duration
	for range max(b.N, samples) {
		f, _ := once(direct(), []byte("event: content_block_delta"))
		firstD = append(firstD, f)
		f, _ = once(viaChat(), []byte("event: delta"))
		firstV = append(firstV, f)
	}
	up.SetDefault(long)
	for range samples / 4 {
		_, a := once(direct(), []byte("event: content_block_delta"))
		allD = append(allD, a)
		_, a = once(viaChat(), []byte("event: delta"))
		allV = append(allV, a)
	}
	b.StopTimer()
	reportStream(b, firstV, firstD, allV, allD, deltas*deltaLen)
}

// reportStream reports first-byte percentiles and text throughput of a
// path beside its floor, in the bench suite's units.
func reportStream(b *testing.B, first, firstFloor, all, allFloor []time.Duration, textBytes int64) {
	sum := func(ds []time.Duration) (t time.Duration) {
		for _, d := range ds {
			t += d
		}
		return t
	}
	n := int64(len(all))
	b.ReportMetric(pctl(first, .5), "p50-ms")
	b.ReportMetric(pctl(first, .99), "p99-ms")
	b.ReportMetric(pctl(firstFloor, .5), "floor-p50-ms")
	b.ReportMetric(pctl(firstFloor, .99), "floor-p99-ms")
	b.ReportMetric(pctl(first, .5)-pctl(firstFloor, .5), "added-p50-ms")
	b.ReportMetric(mibPerSec(textBytes*n, sum(all)), "MiB/s")
	b.ReportMetric(mibPerSec(textBytes*int64(len(allFloor)), sum(allFloor)), "floor-MiB/s")
	b.ReportMetric(0, "ns/op")
}
