package agent_test

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/modeltest"
)

// BenchmarkRunWallVsBareCLI runs the same text prompt through the whole
// run stack (service, real local sandbox, gateway, event log) and as the
// bare CLI on the host straight at the model server (the floor),
// alternating, 3 times each per b.N iteration.
func BenchmarkRunWallVsBareCLI(b *testing.B) {
	e := newEnv(b, envOpts{}, modeltest.Text("Benchmark answer."))
	bin := modeltest.ClaudeBin(b)
	sb := e.sandbox("alice")
	home := b.TempDir()
	var full, bare time.Duration
	b.ResetTimer()
	n := 3 * b.N
	for range n {
		t0 := time.Now()
		r, _ := e.do("alice", sb.ID, "answer briefly", agent.Options{NewSession: true})
		full += time.Since(t0)
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
		bare += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(full.Milliseconds())/float64(n), "run-ms")
	b.ReportMetric(float64(bare.Milliseconds())/float64(n), "floor-run-ms")
}
