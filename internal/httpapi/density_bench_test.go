package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// densityCount is BenchmarkDensity's number of idle sandboxes
// (scripts/bench.sh passes TECHBOSS_BENCH_DENSITY).
var densityCount = flag.Int("density", 1000, "BenchmarkDensity: idle sandboxes to create")

// sandboxMemCount is how many sandboxes BenchmarkSandboxMemory averages over.
const sandboxMemCount = 20

// newDensityEnv is perfEnv with room for n running sandboxes of one user;
// dataDir is the local driver's data directory.
func newDensityEnv(b *testing.B, n int) (e *perfEnv, dataDir string) {
	b.Helper()
	requireSandboxHost(b)
	db := storetest.OpenSQLite(b)
	log := slog.New(slog.DiscardHandler)
	as := auth.New(auth.Options{Store: db, Logger: log, Hash: auth.TestHashParams, SessionTTL: time.Hour})
	ctx := context.Background()
	u, err := as.CreateUser(ctx, "density@example.com", testPassword, auth.RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := as.CreateToken(ctx, u.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}
	limits := sandbox.DefaultLimits()
	limits.MaxRunningPerUser = n + 1
	// The agent binary as `make build` builds it, of this tree: the shared
	// one buildInit makes may be another checkout's, built between.
	initBin := filepath.Join(b.TempDir(), "techboss-sandbox-init")
	cmd := exec.Command("go", "build", "-ldflags", "-s -w", "-o", initBin, "github.com/techbossai/techboss/cmd/techboss-sandbox-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build techboss-sandbox-init: %v\n%s", err, out)
	}
	m := newSandboxManager(b, db, time.Now, limits, func(o *local.Options) { dataDir, o.InitBinary = o.DataDir, initBin })
	e = &perfEnv{user: u, token: tok.Reveal(), m: m}
	e.srv = httptest.NewServer(NewServer(Deps{Logger: log, Store: db, Auth: as, Metrics: prometheus.NewRegistry(), Sandboxes: m}))
	b.Cleanup(e.srv.Close)
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	b.Cleanup(e.client.CloseIdleConnections)
	return e, dataDir
}

// createSandboxes creates n sandboxes over HTTP, conc at a time; it returns
// their IDs and how long it took.
func (e *perfEnv) createSandboxes(b *testing.B, n, conc int) ([]string, time.Duration) {
	ids, _, took := e.createSandboxesTimed(b, n, conc)
	return ids, took
}

// createSandboxesTimed is createSandboxes that also returns when each
// create answered, in order, as offsets from the start.
func (e *perfEnv) createSandboxesTimed(b *testing.B, n, conc int) ([]string, []time.Duration, time.Duration) {
	b.Helper()
	var doneMu sync.Mutex
	var done []time.Duration
	ids := make([]string, n)
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range next {
				res, err := e.client.Do(e.req(b, "POST", "/sandbox", strings.NewReader(`{}`)))
				if err != nil {
					errs <- err
					return
				}
				var out struct {
					Data createSandboxResponse `json:"data"`
				}
				err = json.NewDecoder(res.Body).Decode(&out)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || out.Data.Status != "running" {
					errs <- fmt.Errorf("create %d: %d %+v %v", i, res.StatusCode, out.Data, err)
					return
				}
				ids[i] = out.Data.SandboxID
				doneMu.Lock()
				done = append(done, time.Since(start))
				doneMu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return ids, done, took
}

// rateAt is the create rate (per second) over the k creates that answered
// before the i-th did (done: answer times from the start, in order).
func rateAt(done []time.Duration, i, k int) float64 {
	var from time.Duration
	if i-k >= 0 {
		from = done[i-k]
	}
	if d := done[i] - from; d > 0 {
		return float64(k) / d.Seconds()
	}
	return 0
}

// hostProc is one process under this one (a sandbox's bubblewrap or agent).
type hostProc struct {
	pid, ppid int
	comm      string
	depth     int // 1: a child of this process
}

// descendants lists the processes under this one.
func descendants() []hostProc {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	comm := map[int]string{}
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + de.Name() + "/stat")
		if err != nil {
			continue
		}
		i, j := bytes.IndexByte(st, '('), bytes.LastIndexByte(st, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(string(st[j+1:]))
		if len(f) < 2 {
			continue
		}
		parent[pid], _ = strconv.Atoi(f[1])
		comm[pid] = string(st[i+1 : j])
	}
	self := os.Getpid()
	var out []hostProc
	for pid := range parent {
		d, p := 0, pid
		for p > 1 && p != self && d < 64 {
			p = parent[p]
			d++
		}
		if p == self && pid != self {
			out = append(out, hostProc{pid: pid, ppid: parent[pid], comm: comm[pid], depth: d})
		}
	}
	return out
}

// rollup reads fields (kB) of /proc/<pid>/smaps_rollup.
func rollup(pid int) map[string]int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			out[strings.TrimSuffix(f[0], ":")] = n
		}
	}
	return out
}

// procsMemory sums PSS (total, anon, file; kB) over procs, and per kind:
// "bwrap" (bubblewrap's processes) and "agent" (anything else: the
// sandbox agent).
type procsMemory struct {
	pss, anon, file int64
	kind            map[string]int64 // PSS by kind
	count           map[string]int
	threads         int
}

func sumMemory(procs []hostProc) procsMemory {
	m := procsMemory{kind: map[string]int64{}, count: map[string]int{}}
	for _, p := range procs {
		r := rollup(p.pid)
		if r == nil {
			continue
		}
		k := "agent"
		if p.comm == "bwrap" {
			k = "bwrap"
		}
		m.pss += r["Pss"]
		m.anon += r["Pss_Anon"]
		m.file += r["Pss_File"]
		m.kind[k] += r["Pss"]
		m.count[k]++
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid)); err == nil {
			m.threads += int(statusField(st, "Threads:"))
		}
	}
	return m
}

func statusField(st []byte, name string) int64 {
	for line := range strings.SplitSeq(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// procsCPU is the CPU time (user + system) procs have used.
func procsCPU(procs []hostProc) time.Duration {
	var ticks int64
	for _, p := range procs {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

// selfAnon is this process's resident anonymous memory (the server's heap
// and stacks; the benchmark's client shares them), in bytes.
func selfAnon() int64 {
	st, _ := os.ReadFile("/proc/self/status")
	return statusField(st, "RssAnon:") << 10
}

// kernelMemory is the kernel's own memory that grows with processes,
// threads and mounts: kernel stacks, page tables and unreclaimable slab
// (/proc/meminfo), in bytes. Machine-wide: other work moves it too.
func kernelMemory() int64 {
	mi, _ := os.ReadFile("/proc/meminfo")
	return (statusField(mi, "KernelStack:") + statusField(mi, "PageTables:") + statusField(mi, "SUnreclaim:")) << 10
}

// execTrueLatencies runs exec true over HTTP in ids, round robin, n times.
func (e *perfEnv) execTrueLatencies(b *testing.B, ids []string, n int) []time.Duration {
	b.Helper()
	body, _ := json.Marshal(execRequest{Command: []string{"true"}})
	var ds []time.Duration
	for i := range n {
		id := ids[(i*7919)%len(ids)]
		start := time.Now()
		if code, out := e.call(b, "POST", "/sandbox/"+id+"/exec?wait=true", bytes.NewReader(body)); code != 200 {
			b.Fatalf("exec in %s: %d %s", id, code, out)
		}
		ds = append(ds, time.Since(start))
	}
	return ds
}

// BenchmarkSandboxMemory: the host memory one idle sandbox costs,
// sandboxMemCount sandboxes (local driver, default spec) each after one
// `exec true` and 7 idle seconds: the PSS (proportional set size: a page shared by k
// processes counts 1/k to each) of the host processes per sandbox
// (pss-MiB; anon-MiB and file-MiB its anonymous and file-backed parts;
// agent- and bwrap-pss-MiB by process), processes and threads per
// sandbox. Floor: the same number of bare bubblewraps (a new PID and
// network namespace, the host's root read-only) each running sleep,
// measured the same way.
func BenchmarkSandboxMemory(b *testing.B) {
	e, _ := newDensityEnv(b, sandboxMemCount)
	b.ResetTimer()
	for range b.N {
		ids, _ := e.createSandboxes(b, sandboxMemCount, 2)
		e.execTrueLatencies(b, ids, len(ids))
		// Idle: an agent ends its spare threads once its sandbox has been
		// empty for 5 s (agent.Spawner).
		time.Sleep(7 * time.Second)
		m := sumMemory(descendants())
		n := float64(sandboxMemCount)
		floor := bareBwrapMemory(b, sandboxMemCount)
		mib := func(kb int64) float64 { return float64(kb) / 1024 / n }
		b.ReportMetric(mib(m.pss), "pss-MiB")
		b.ReportMetric(mib(floor.pss), "floor-pss-MiB")
		b.ReportMetric(mib(m.anon), "anon-MiB")
		b.ReportMetric(mib(floor.anon), "floor-anon-MiB")
		b.ReportMetric(mib(m.file), "file-MiB")
		b.ReportMetric(mib(m.kind["agent"]), "agent-pss-MiB")
		b.ReportMetric(mib(m.kind["bwrap"]), "bwrap-pss-MiB")
		b.ReportMetric(float64(m.count["agent"]+m.count["bwrap"])/n, "procs")
		b.ReportMetric(float64(floor.count["agent"]+floor.count["bwrap"])/n, "floor-procs")
		b.ReportMetric(float64(m.threads)/n, "threads")
		for _, id := range ids {
			if code, out := e.call(b, "DELETE", "/sandbox/"+id, nil); code != 200 {
				b.Fatalf("delete %s: %d %s", id, code, out)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
}

// bareBwrapMemory starts n bare bubblewraps running sleep, measures them
// like sandboxes, and stops them.
func bareBwrapMemory(b *testing.B, n int) procsMemory {
	b.Helper()
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	for range n {
		c := exec.Command("bwrap", "--unshare-pid", "--unshare-net", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "sleep", "3600")
		if err := c.Start(); err != nil {
			b.Fatalf("bwrap: %v", err)
		}
		cmds = append(cmds, c)
	}
	time.Sleep(time.Second)
	var procs []hostProc
	for _, p := range descendants() {
		for _, c := range cmds {
			if p.pid == c.Process.Pid || p.ppid == c.Process.Pid || procAncestor(p.pid, c.Process.Pid) {
				procs = append(procs, p)
				break
			}
		}
	}
	m := sumMemory(procs)
	if m.count["bwrap"]+m.count["agent"] < n {
		b.Fatalf("bare bwrap: %d processes for %d", m.count["bwrap"]+m.count["agent"], n)
	}
	return m
}

// procAncestor reports whether anc is an ancestor of pid.
func procAncestor(pid, anc int) bool {
	for range 16 {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(f[1])
		if pid == anc {
			return true
		}
		if pid <= 1 {
			return false
		}
	}
	return false
}

// BenchmarkDensity: -density idle sandboxes (default 1000; scripts/bench.sh
// passes TECHBOSS_BENCH_DENSITY) created over HTTP four at a time on this
// machine: the create rate (sandboxes/s; also over the first and the last
// tenth of the creates, and their ratio create-last/first: 1 when a create
// costs the same however many sandboxes run; host-mounts: the mounts each
// running sandbox leaves in the host's mount table), the host memory per idle sandbox
// (host-MiB: the PSS of its processes plus its share of the server's own
// anonymous growth; kernel-MiB: the kernel's stacks, page tables and
// unreclaimable slab grown per sandbox, machine-wide so noisy), the CPU an idle sandbox costs (idle-cpu-us/s: its
// processes' and the server's CPU over an idle 10 s, per sandbox per
// second), the host tasks (threads) an idle sandbox's processes hold, and
// exec `true` latency with all of them running (p50/p99 of
// 500, beside the same with one sandbox running before the others were
// created: floor-*). Then every sandbox is deleted and nothing may be left:
// no process under the server, no mount under the driver's data directory
// or naming a sandbox, no cgroup, no loop device on its data directory, no
// new network interface.
func BenchmarkDensity(b *testing.B) {
	n := *densityCount
	e, dataDir := newDensityEnv(b, n+1)
	ifaces0 := countInterfaces()
	b.ResetTimer()
	for range b.N {
		one, _ := e.createSandboxes(b, 1, 1)
		e.execTrueLatencies(b, one, 50)
		floor := e.execTrueLatencies(b, one, 500)
		anon0, kern0, mounts0 := selfAnon(), kernelMemory(), countMounts()
		ids, done, took := e.createSandboxesTimed(b, n, 4)
		b.ReportMetric(float64(n)/took.Seconds(), "create-per-s")
		// What grows with the count, as a ratio (the machine's load moves
		// the rates themselves): the rate over the first and the last
		// tenth of the creates.
		if k := n / 10; k >= 4 {
			first, last := rateAt(done, k-1, k), rateAt(done, n-1, k)
			b.ReportMetric(first, "create-per-s-first10pct")
			b.ReportMetric(last, "create-per-s-last10pct")
			b.ReportMetric(last/first, "create-last/first")
		}
		b.ReportMetric(float64(countMounts()-mounts0)/float64(n), "host-mounts")
		e.execTrueLatencies(b, ids, min(n, 100))
		time.Sleep(2 * time.Second)
		// Idle: what the sandboxes' processes and the server spend.
		procs := descendants()
		c0, s0 := procsCPU(procs), cpuTime()
		time.Sleep(10 * time.Second)
		c1, s1 := procsCPU(procs), cpuTime()
		idle := (c1 - c0) + (s1 - s0)
		b.ReportMetric(float64(idle.Microseconds())/10/float64(n), "idle-cpu-us/s")
		m := sumMemory(procs)
		growth := max(selfAnon()-anon0, 0)
		perSB := func(kb int64) float64 { return float64(kb) / 1024 / float64(n+1) }
		b.ReportMetric(perSB(m.pss)+float64(growth)/float64(n)/(1<<20), "host-MiB")
		b.ReportMetric(perSB(m.pss), "pss-MiB")
		b.ReportMetric(perSB(m.anon), "anon-MiB")
		b.ReportMetric(perSB(m.kind["agent"]), "agent-pss-MiB")
		b.ReportMetric(float64(growth)/float64(n)/(1<<20), "server-MiB")
		b.ReportMetric(float64(kernelMemory()-kern0)/float64(n)/(1<<20), "kernel-MiB")
		b.ReportMetric(float64(len(procs))/float64(n+1), "procs")
		b.ReportMetric(float64(m.threads)/float64(n+1), "threads")
		lat := e.execTrueLatencies(b, ids, 500)
		b.ReportMetric(pctl(lat, .5), "exec-p50-ms")
		b.ReportMetric(pctl(lat, .99), "exec-p99-ms")
		b.ReportMetric(pctl(floor, .5), "floor-exec-p50-ms")
		b.ReportMetric(pctl(floor, .99), "floor-exec-p99-ms")
		b.ReportMetric(float64(n), "sandboxes")
		start := time.Now()
		all := append(ids, one...)
		deleteAll(b, e, all, 4)
		b.ReportMetric(float64(len(all))/time.Since(start).Seconds(), "delete-per-s")
		checkNothingLeft(b, all, dataDir, ifaces0)
	}
	b.ReportMetric(0, "ns/op")
}

// deleteAll deletes ids over HTTP, conc at a time.
func deleteAll(b *testing.B, e *perfEnv, ids []string, conc int) {
	b.Helper()
	next := make(chan string, len(ids))
	for _, id := range ids {
		next <- id
	}
	close(next)
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for id := range next {
				res, err := e.client.Do(e.req(b, "DELETE", "/sandbox/"+id, nil))
				if err != nil {
					errs <- err
					return
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					errs <- fmt.Errorf("delete %s: %d", id, res.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// countMounts is the number of mounts in this process's mount namespace
// (the host's): what every new sandbox's bubblewrap copies and reads.
func countMounts() int {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Count(mi, []byte("\n"))
}

func countInterfaces() int {
	l, _ := net.Interfaces()
	return len(l)
}

// checkNothingLeft fails b when anything of the deleted sandboxes is left
// on the host.
func checkNothingLeft(b *testing.B, ids []string, dataDir string, ifaces0 int) {
	b.Helper()
	var left []string
	if p := descendants(); len(p) > 0 {
		left = append(left, fmt.Sprintf("%d processes (first: %d %s)", len(p), p[0].pid, p[0].comm))
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for line := range strings.SplitSeq(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dataDir {
			continue // the driver's private bind (until it closes), not a sandbox's
		}
		if strings.Contains(line, dataDir) {
			left = append(left, "mount "+line)
			continue
		}
		for _, id := range ids {
			if strings.Contains(line, id) {
				left = append(left, "mount "+line)
				break
			}
		}
	}
	for _, id := range ids {
		for _, pat := range []string{"/sys/fs/cgroup/*/techboss/" + id, "/sys/fs/cgroup/techboss/" + id} {
			if m, _ := filepath.Glob(pat); len(m) > 0 {
				left = append(left, "cgroup "+m[0])
			}
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		if f, err := os.ReadFile(l); err == nil && strings.HasPrefix(string(f), dataDir) {
			left = append(left, "loop device "+l+" on "+strings.TrimSpace(string(f)))
		}
	}
	if n := countInterfaces(); n > ifaces0 {
		left = append(left, fmt.Sprintf("%d network interfaces more than before", n-ifaces0))
	}
	if len(left) > 0 {
		if len(left) > 10 {
			left = append(left[:10], fmt.Sprintf("... %d more", len(left)-10))
		}
		b.Fatalf("left after deleting every sandbox:\n%s", strings.Join(left, "\n"))
	}
}
