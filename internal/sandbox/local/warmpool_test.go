package local

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// warmReady waits until d's pool holds n sandboxes for spec's key.
func warmReady(t *testing.T, d *Driver, sp sandbox.Spec, n int) {
	t.Helper()
	key, ok := warmKey(sandbox.CreateRequest{Spec: sp})
	if !ok {
		t.Fatalf("spec %+v is not poolable", sp)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		d.warm.mu.Lock()
		got := len(d.warm.ready[key])
		d.warm.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the warm pool holds %d sandboxes after a minute, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func warmDirs(t *testing.T, dataDir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dataDir + "/sandboxes")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), warmPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// createLogged creates a sandbox of sp on d (destroyed at the test's end)
// and returns it with its create log.
func createLogged(t *testing.T, d *Driver, sp sandbox.Spec) (sandbox.Ref, string) {
	t.Helper()
	var log bytes.Buffer
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "owner1", Spec: sp, Log: &log})
	if err != nil {
		t.Fatalf("Create: %v\n%s", err, log.String())
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
	return ref, log.String()
}

// TestWarmPool: a create of a spec created before takes a started
// sandbox from the pool (a fresh one: nothing of the sandbox before it),
// the pool refills, specs the driver must start themselves are not
// pooled, Close destroys the pool, and a new driver removes what a dead
// one left.
func TestWarmPool(t *testing.T) {
	requireHost(t)
	dataDir := t.TempDir()
	reg := prometheus.NewRegistry()
	d, err := New(Options{DataDir: dataDir, InitBinary: initBin, WarmPool: 1, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = d.Close()
		}
	})
	sp := sandbox.Spec{ImageBase: "host", MemoryMB: 256}
	newSB := func(sp sandbox.Spec) (sandbox.Ref, string) { return createLogged(t, d, sp) }
	first, log := newSB(sp)
	if strings.Contains(log, "warm pool") {
		t.Fatalf("the first create of a spec came from the pool:\n%s", log)
	}
	mustSh(t, d, first, "echo mine > /workspace/first.txt && echo x > /tmp/first")
	warmReady(t, d, sp, 1)
	if got := sandboxtest.WarmPoolReady(t, reg); got != 1 {
		t.Errorf("techboss_sandbox_warm_pool_ready = %v with one sandbox ready", got)
	}

	start := time.Now()
	second, log := newSB(sp)
	took := time.Since(start)
	if !strings.Contains(log, "taken from the warm pool") {
		t.Fatalf("a create of the same spec did not take the pooled sandbox:\n%s", log)
	}
	t.Logf("create from the pool took %v", took)
	if got := mustSh(t, d, second, "ls -A /workspace /tmp"); strings.Contains(got, "first") {
		t.Errorf("the pooled sandbox is not fresh: %q", got)
	}
	if second == first {
		t.Fatal("the pool gave out the first sandbox")
	}
	warmReady(t, d, sp, 1) // refilled

	// Env is set at start: such specs start their own sandbox.
	if _, log := newSB(sandbox.Spec{ImageBase: "host", MemoryMB: 256, Env: map[string]string{"A": "b"}}); strings.Contains(log, "warm pool") {
		t.Fatalf("a spec with env came from the pool:\n%s", log)
	}

	// One taken through TakeWarm but never kept (the server died before
	// its record was written) is still the pool's.
	warmReady(t, d, sp, 1)
	unkept, ok := d.TakeWarm(sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "owner1", Spec: sp})
	if !ok {
		t.Fatal("TakeWarm found nothing in a full pool")
	}
	warmReady(t, d, sp, 1)

	// A driver on the same data dir (the server restarted after dying)
	// removes the pooled sandboxes the old one left, and recovers the
	// taken ones: they are their owners' sandboxes.
	pooled := warmDirs(t, dataDir)
	if len(pooled) < 3 {
		t.Fatalf("pooled sandboxes on disk: %v, want the taken, the unkept and a ready one", pooled)
	}
	d.warm.drain() // as if this driver died: it forgets them
	d2, err := New(Options{DataDir: dataDir, InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	if left := warmDirs(t, dataDir); len(left) != 1 || left[0] != string(second) {
		t.Errorf("pooled sandboxes left after a new driver started: %v, want only the taken %s", left, second)
	}
	if alive, err := d2.Recover(testCtx(t), second); !alive || err != nil {
		t.Errorf("the new driver did not recover the sandbox taken from the pool: %v, %v", alive, err)
	} else if got := mustSh(t, d2, second, "echo still here"); got != "still here\n" {
		t.Errorf("exec in the recovered sandbox: %q", got)
	}
	if alive, _ := d2.Recover(testCtx(t), unkept); alive {
		t.Error("a sandbox taken but never kept outlived the restart")
	}
	_ = d2.Destroy(context.Background(), second)
	_ = d2.Close()

	// Close destroys the pool.
	d3, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin, WarmPool: 2})
	if err != nil {
		t.Fatal(err)
	}
	r, err := d3.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	warmReady(t, d3, sp, 2)
	_ = d3.Destroy(context.Background(), r)
	dir3 := d3.opts.DataDir
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
	if left := warmDirs(t, dir3); len(left) != 0 {
		t.Errorf("pooled sandboxes left after Close: %v", left)
	}
}

// TestWarmRefillAfterFirstExec: a pooled sandbox has run one command
// before it is handed out (the first exec in a new sandbox is the slow
// one), and the replacement of a taken sandbox starts once that sandbox's
// first exec has ended, not at the take, where it would share the CPU with
// the caller's first command.
func TestWarmRefillAfterFirstExec(t *testing.T) {
	requireHost(t)
	d, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin, WarmPool: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	d.warm.refillDelay = time.Hour // only the first exec starts it
	sp := sandbox.Spec{ImageBase: "host", MemoryMB: 256}
	key, _ := warmKey(sandbox.CreateRequest{Spec: sp})
	create := func() sandbox.Ref { ref, _ := createLogged(t, d, sp); return ref }
	create()
	warmReady(t, d, sp, 1)
	taken := create()
	s, err := d.get(taken)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(taken), warmPrefix) {
		t.Fatalf("the second create did not take from the pool: %s", taken)
	}
	if n := s.execs.Load(); n != 1 {
		t.Errorf("the pooled sandbox ran %d commands before it was handed out, want 1", n)
	}
	d.warm.mu.Lock()
	filling, ready := d.warm.filling[key], len(d.warm.ready[key])
	d.warm.mu.Unlock()
	if filling != 0 || ready != 0 {
		t.Fatalf("after the take, before its first exec: %d starting, %d ready; want the replacement to wait", filling, ready)
	}
	mustSh(t, d, taken, "true")
	warmReady(t, d, sp, 1)
}

// TestWarmPoolPrewarms: a pooled sandbox whose agent let its spare threads
// go while it waited has them made again as it is taken, before its first
// exec asks (which would otherwise wait for them).
func TestWarmPoolPrewarms(t *testing.T) {
	requireHost(t)
	d, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin, WarmPool: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if d.cgMode == cgroupNone {
		t.Skip("why: no cgroups on this host (the agent keeps its threads without a pids limit)")
	}
	sp := sandbox.Spec{ImageBase: "host", MemoryMB: 256}
	createLogged(t, d, sp)
	warmReady(t, d, sp, 1)
	key, _ := warmKey(sandbox.CreateRequest{Spec: sp})
	d.warm.mu.Lock()
	pooled := d.warm.ready[key][0]
	d.warm.mu.Unlock()
	if n, ok := waitAgentThreads(t, d, pooled, func(n int) bool { return n <= idleAgentThreads }); !ok {
		t.Fatalf("the pooled sandbox's agent keeps %d threads idle, want at most %d", n, idleAgentThreads)
	}
	taken, log := createLogged(t, d, sp)
	if taken != pooled || !strings.Contains(log, "taken from the warm pool") {
		t.Fatalf("the create did not take the pooled sandbox %s (got %s):\n%s", pooled, taken, log)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := agentThreads(t, d, taken)
		if n > idleAgentThreads {
			t.Logf("taken sandbox's agent: %d threads before any exec", n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the taken sandbox's agent still has %d threads 10 s after the take, want its spare ones made", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
