package runsc

import (
	"context"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"testing"
	"time"
)

// samples is how many times each benchmark measures (once per b.N, as
// `make bench` runs -benchtime 1x); TECHBOSS_BENCH_SAMPLES overrides it.
func samples() int {
	if n, err := strconv.Atoi(os.Getenv("TECHBOSS_BENCH_SAMPLES")); err == nil && n > 0 {
		return n
	}
	return 50
}

func p50(ds []time.Duration) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

func p99(ds []time.Duration) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)*99/100]) / float64(time.Millisecond)
}

// BenchmarkRunscStartFirstExec: Start until the agent accepts, then the first
// exec of true answering; Delete is timed on its own.
func BenchmarkRunscStartFirstExec(b *testing.B) {
	ctx := context.Background()
	var start, first, del []time.Duration
	for range b.N * samples() {
		t0 := time.Now()
		c := startTest(b, testOptions{ids: testIDs})
		started := time.Since(t0)
		_, rep, err := run(ctx, c.Socket(), "true")
		if err != nil || rep.Code != 0 {
			b.Fatal(rep, err)
		}
		first = append(first, time.Since(t0))
		start = append(start, started)
		t1 := time.Now()
		if err := c.Delete(ctx); err != nil {
			b.Fatal(err)
		}
		del = append(del, time.Since(t1))
	}
	b.ReportMetric(p50(start), "start-p50-ms")
	b.ReportMetric(p50(first), "start+exec-p50-ms")
	b.ReportMetric(p50(del), "delete-p50-ms")
	reportRaw(b, 20)
}

// BenchmarkRunscExecTrue: one exec of true through the agent in a running
// container.
func BenchmarkRunscExecTrue(b *testing.B) {
	ctx := context.Background()
	c := startTest(b, testOptions{ids: testIDs})
	var ds []time.Duration
	for range b.N * samples() {
		t0 := time.Now()
		_, rep, err := run(ctx, c.Socket(), "true")
		if err != nil || rep.Code != 0 {
			b.Fatal(rep, err)
		}
		ds = append(ds, time.Since(t0))
	}
	b.ReportMetric(p50(ds), "exec-p50-ms")
	b.ReportMetric(p99(ds), "exec-p99-ms")
	reportRaw(b, 20)
}

// reportRaw measures, in the same run, bubblewrap's start of true (the
// local driver's runtime) and a one-shot `runsc do true` for scale.
func reportRaw(b *testing.B, n int) {
	b.Helper()
	var bw, rd []time.Duration
	for range n {
		t0 := time.Now()
		cmd := exec.Command("bwrap", "--unshare-all", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr",
			"--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
			"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		bw = append(bw, time.Since(t0))
		t0 = time.Now()
		if out, err := exec.Command(runscBin(), "--network=none", "--ignore-cgroups", "do", "-quiet", "/bin/true").CombinedOutput(); err != nil {
			b.Fatalf("runsc do: %v: %s", err, out)
		}
		rd = append(rd, time.Since(t0))
	}
	b.ReportMetric(p50(bw), "bwrap-true-p50-ms")
	b.ReportMetric(p50(rd), "runsc-do-true-p50-ms")
}
