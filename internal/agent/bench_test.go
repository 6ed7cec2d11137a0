package agent_test

import (
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/modeltest"
)

// BenchmarkRunWallVsBareCLI runs the same text prompt through the whole
// run stack (service, real local sandbox, gateway, event log) and as the
// bare CLI on the host straight at the model server (the floor),
// alternating, 5 times each per b.N iteration; the medians. Dirty pages
// left by earlier benchmarks are written back first (a run's SQLite
// commits would wait for them).
func BenchmarkRunWallVsBareCLI(b *testing.B) {
	e := newEnv(b, envOpts{}, modeltest.Text("Benchmark answer."))
	bin := modeltest.ClaudeBin(b)
	sb := e.sandbox("alice")
	home := b.TempDir()
	var full, bare []time.Duration
	syscall.Sync()
	b.ResetTimer()
	for range 5 * b.N {
		t0 := time.Now()
		r, _ := e.do("alice", sb.ID, "answer briefly", agent.Options{NewSession: true})
		full = append(full, time.Since(t0))
		if r.Status != agent.Succeeded {
			b.Fatalf("run %+v", r)
		}
		t0 = time.Now()
		cmd := exec.Command(bin, "-p", "--output-format", "stream-json", "--verbose", "--", "answer briefly")
		cmd.Dir = home
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "CLAUDE_CONFIG_DIR=" + home + "/.claude",
			"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "ANTHROPIC_BASE_URL=" + e.model.URL, "ANTHROPIC_API_KEY=k"}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("bare CLI: %v\n%s", err, out)
		}
		bare = append(bare, time.Since(t0))
	}
	b.StopTimer()
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	b.ReportMetric(median(full), "run-ms")
	b.ReportMetric(median(bare), "floor-run-ms")
}

// BenchmarkHubAppend: persisting (SQLite, WAL) and publishing one event to
// 100 live subscribers — the server's share of the CLI line → SSE path.
func BenchmarkHubAppend(b *testing.B) {
	db := openStore(b)
	ctx := b.Context()
	if err := db.CreateRun(ctx, agent.Run{ID: "run_b", SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	hub := agent.NewHub(db, nil, nil)
	hub.Open("run_b", 0)
	subs := make([]*agent.Subscription, 100)
	for i := range subs {
		subs[i], _ = hub.Subscribe(ctx, "run_b", 0)
	}
	ev := agent.NewEvent(agent.TypeText, agent.TextData{Text: "a line of assistant text of typical length, about eighty bytes."}, `{"type":"assistant"}`)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := hub.Append(ctx, "run_b", ev); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	hub.Close("run_b")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
