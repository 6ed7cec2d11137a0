package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleRSS: the server binary as `make build` builds it (static,
// -s -w), started on the defaults (SQLite, local blobs, local sandboxes,
// an admin created from TECHBOSS_ADMIN_EMAIL), then left idle: its
// resident memory a moment after it listens and answered /healthz
// (anon-MiB: heap, stacks, runtime; file-MiB: pages of the binary mapped in;
// rss-MiB: both), and the binary's pages referenced over idleRefWindow
// (idle-ref-file-MiB: the binary's idle working set; the rest of file-MiB
// are clean pages the kernel drops first under memory pressure). The
// floor: a minimal Go HTTP server (testdata/idlefloor) measured the same
// way in the same run.
func BenchmarkIdleRSS(b *testing.B) {
	dir := b.TempDir()
	build := func(out, pkg string) string {
		bin := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-ldflags", "-s -w", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
		return bin
	}
	server, floor := build("server", "."), build("idlefloor", "./testdata/idlefloor")
	b.ResetTimer()
	for range b.N {
		ours := idleMemory(b, server, []string{
			"PORT=0", "TECHBOSS_HOST=127.0.0.1", "TECHBOSS_DATA_DIR=" + b.TempDir(),
			"TECHBOSS_SANDBOX_INIT=" + sandboxInit,
			"TECHBOSS_ADMIN_EMAIL=admin@example.com", "TECHBOSS_ADMIN_PASSWORD=idle-rss-password-1",
		})
		base := idleMemory(b, floor, nil)
		for _, m := range []struct {
			unit        string
			ours, floor int64
		}{{"anon-MiB", ours.anon, base.anon}, {"file-MiB", ours.file, base.file}, {"rss-MiB", ours.anon + ours.file, base.anon + base.file},
			{"idle-ref-file-MiB", ours.fileRef, base.fileRef}} {
			b.ReportMetric(float64(m.ours)/(1<<20), m.unit)
			b.ReportMetric(float64(m.floor)/(1<<20), "floor-"+m.unit)
		}
	}
	b.ReportMetric(0, "ns/op")
}

// idleRefWindow is how long the referenced bits of an idle process's pages
// are left to gather.
const idleRefWindow = 5 * time.Second

// procMemory is one process's resident memory, in bytes.
type procMemory struct {
	anon, file int64 // resident anonymous and file-backed
	fileRef    int64 // pages of the binary referenced over idleRefWindow
}

// idleMemory starts bin with env, waits until it listens (a JSON log line
// "listening" with addr, or an address alone on a line) and answers, and
// measures it idle; then stops it.
func idleMemory(b *testing.B, bin string, env []string) procMemory {
	b.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.TempDir()}, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// Stopped as an operator would (SIGTERM): a killed server leaves its
	// data dir's private bind behind, and the temp dir cannot be removed.
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		stop := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
		_ = cmd.Wait()
		stop.Stop()
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
			} else if line := sc.Text(); strings.HasPrefix(line, "127.0.0.1:") {
				addr <- line
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	var a string
	select {
	case a = <-addr:
	case <-time.After(time.Minute):
		b.Fatalf("%s did not listen within a minute", bin)
	}
	res, err := http.Get("http://" + a + "/healthz")
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	time.Sleep(time.Second)
	pid := cmd.Process.Pid
	var m procMemory
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	m.anon, m.file = statusKB(st, "RssAnon:")<<10, statusKB(st, "RssFile:")<<10
	// The referenced bits, cleared, then read back after a quiet while:
	// what the idle process touched of its binary.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("1"), 0); err != nil {
		b.Fatal(err)
	}
	time.Sleep(idleRefWindow)
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		b.Fatal(err)
	}
	m.fileRef = mappingKB(smaps, bin, "Referenced:") << 10
	return m
}

// statusKB reads one "Name:   N kB" line of /proc/<pid>/status.
func statusKB(st []byte, name string) int64 {
	for line := range strings.SplitSeq(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// mappingKB sums field (e.g. "Referenced:") over the mappings of path in
// /proc/<pid>/smaps.
func mappingKB(smaps []byte, path, field string) int64 {
	var sum int64
	in := false
	for line := range bytes.SplitSeq(smaps, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = f[len(f)-1] == path
			continue
		}
		if in && f[0] == field && len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += n
		}
	}
	return sum
}
