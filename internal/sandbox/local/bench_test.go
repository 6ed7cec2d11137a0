package local

import (
	"context"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

func p50(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

func p99(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)*99/100]) / float64(time.Millisecond)
}

// reportRaw measures raw fork/exec of true and bwrap's own start of true
// in the same run, for comparison beside the driver's numbers.
func reportRaw(b *testing.B, n int) {
	b.Helper()
	var raw, bw []time.Duration
	for i := 0; i < n; i++ {
		raw = append(raw, rawTrue(b))
		start := time.Now()
		cmd := exec.Command("bwrap", "--unshare-all", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr",
			"--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
			"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		bw = append(bw, time.Since(start))
	}
	b.ReportMetric(p50(raw), "raw-true-p50-ms")
	b.ReportMetric(p50(bw), "bwrap-true-p50-ms")
}

// BenchmarkCreateFirstExec: Create (host image, cached skeleton) through
// the first exec of true returning; Destroy is outside the timing.
func BenchmarkCreateFirstExec(b *testing.B) {
	benchCreateFirstExec(b, sandbox.Spec{})
}

// benchCreateFirstExec times Create of spec until the first exec of true
// has answered (after one warm-up create that fills the image cache);
// destroying each sandbox is not timed.
func benchCreateFirstExec(b *testing.B, spec sandbox.Spec) {
	d := newTestDriver(b, "")
	ctx := context.Background()
	warm, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "bench", Spec: spec})
	if err != nil {
		b.Fatal(err)
	}
	_ = d.Destroy(ctx, warm)
	var create, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		ref, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "bench", Spec: spec})
		if err != nil {
			b.Fatal(err)
		}
		created := time.Since(start)
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
		total = append(total, time.Since(start))
		create = append(create, created)
		b.StopTimer()
		if err := d.Destroy(ctx, ref); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(p50(create), "create-p50-ms")
	b.ReportMetric(p50(total), "create+exec-p50-ms")
	reportRaw(b, 20)
}

// BenchmarkExecTrue: one exec of true in a running sandbox.
func BenchmarkExecTrue(b *testing.B) {
	d, ref := benchSandbox(b)
	ctx := context.Background()
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(p50(ds), "exec-p50-ms")
	b.ReportMetric(p99(ds), "exec-p99-ms")
	reportRaw(b, 20)
}

// BenchmarkExecOutput64MiB: throughput of a 64 MiB stdout stream.
func BenchmarkExecOutput64MiB(b *testing.B) {
	d, ref := benchSandbox(b)
	ctx := context.Background()
	b.SetBytes(64 << 20)
	for i := 0; i < b.N; i++ {
		var n countingDiscard
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"head", "-c", "67108864", "/dev/zero"}, Stdout: &n})
		if err != nil || st.Code != 0 || n != 64<<20 {
			b.Fatal(st, err, n)
		}
	}
}

type countingDiscard int64

func (c *countingDiscard) Write(p []byte) (int, error) {
	*c += countingDiscard(len(p))
	return len(p), nil
}

// BenchmarkCreateFirstExecOCI: as BenchmarkCreateFirstExec, on a pulled
// busybox image with a cached dockerfile_commands build.
func BenchmarkCreateFirstExecOCI(b *testing.B) {
	ref, _ := pushBusybox(b)
	benchCreateFirstExec(b, sandbox.Spec{ImageBase: ref, DockerfileCommands: []string{"RUN echo built > /built", "ENV X=1"}})
}

// BenchmarkExecTrueIdle: exec of true in a sandbox whose agent has gone
// idle (it ended its spare threads, which it makes again before the
// start: agent.Spawner), beside the same exec right after another
// (warm-p50-ms). Waiting for the agent to go idle is not timed.
func BenchmarkExecTrueIdle(b *testing.B) {
	d, ref := benchSandbox(b)
	ctx := context.Background()
	execTrue := func() time.Duration {
		start := time.Now()
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
		return time.Since(start)
	}
	var cold, warm []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for deadline := time.Now().Add(time.Minute); agentThreads(b, d, ref) > idleAgentThreads; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("the agent did not go idle within a minute: %d threads", agentThreads(b, d, ref))
			}
		}
		b.StartTimer()
		cold = append(cold, execTrue())
		b.StopTimer()
		warm = append(warm, execTrue())
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(p50(cold), "exec-p50-ms")
	b.ReportMetric(p99(cold), "exec-p99-ms")
	b.ReportMetric(p50(warm), "warm-p50-ms")
}

// benchSandbox is a driver and a running sandbox of the default spec on
// it, destroyed at the benchmark's end.
func benchSandbox(b *testing.B) (*Driver, sandbox.Ref) {
	b.Helper()
	d := newTestDriver(b, "")
	ref, err := d.Create(context.Background(), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "bench", Spec: sandbox.Spec{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
	return d, ref
}
