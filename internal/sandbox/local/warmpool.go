package local

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// The warm pool (Options.WarmPool): started sandboxes kept ready per
// spec, so a create that matches one takes it in a few milliseconds
// instead of starting bubblewrap, mounting the root and waiting for the
// agent. What the driver does at create is all that must match: the
// image and its commands, limits, disk and the server's mounts. Specs
// with env (the agent's base environment is set at start), a volume, a
// network, or the user's own registry login are started as before.
//
// A pooled sandbox belongs to nobody until taken: it runs under an ID of
// its own ("warm-…", never shown: Refs are opaque), as the owner "warm".
// Taken, it keeps that ID, and an empty file in its directory marks it
// taken (KeepWarm) before the create answers. The pool keeps the
// specs created last (at most maxWarmKeys), fills in the background after
// each create of a spec, and is emptied at Close; a server that died
// leaves its pooled sandboxes behind, which the next Driver destroys at
// start (those not marked taken: a taken one is recovered like any
// other).
const (
	warmPrefix  = "warm-"
	warmOwner   = "warm"
	takenMarker = "taken"
	maxWarmKeys = 4
	// warmRefillDelay is how long after a take its replacement starts at
	// the latest; it starts sooner when the taken sandbox's first command
	// ends (warmRefillLater).
	warmRefillDelay = 100 * time.Millisecond
)

type warmPool struct {
	size int
	mu   sync.Mutex
	// ready holds each key's started sandboxes; keys is most recent last.
	ready   map[string][]sandbox.Ref
	filling map[string]int
	keys    []string
	closed  bool
	// firstExec holds, per taken sandbox whose replacement waits, what
	// its first command's end closes; refillDelay bounds the wait.
	firstExec   map[sandbox.Ref]chan struct{}
	refillDelay time.Duration
}

// readyCount is the number of ready sandboxes, all keys together.
func (p *warmPool) readyCount() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, refs := range p.ready {
		n += len(refs)
	}
	return float64(n)
}

// waitFirstExec returns what ref's first exec will close.
func (p *warmPool) waitFirstExec(ref sandbox.Ref) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstExec == nil {
		p.firstExec = map[sandbox.Ref]chan struct{}{}
	}
	ch := make(chan struct{})
	p.firstExec[ref] = ch
	return ch
}

// execDone tells whoever waits for ref's first exec (once).
func (p *warmPool) execDone(ref sandbox.Ref) {
	p.mu.Lock()
	ch := p.firstExec[ref]
	delete(p.firstExec, ref)
	p.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// forgetFirstExec stops waiting for ref's first exec.
func (p *warmPool) forgetFirstExec(ref sandbox.Ref) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.firstExec, ref)
}

// warmKey is the pool key of a create, or false when it must start a
// sandbox of its own.
func warmKey(req sandbox.CreateRequest) (string, bool) {
	sp := req.Spec
	if len(sp.Env) > 0 || sp.VolumeName != "" || req.RegistryAuth != nil || sp.GPU != "" ||
		(sp.Network.Mode != "" && sp.Network.Mode != sandbox.NetworkNone) {
		return "", false
	}
	b, err := json.Marshal(struct {
		Image    string
		Commands []string
		CPU      float64
		Memory   int
		Pids     int
		Disk     int
		Mounts   []sandbox.Mount
	}{sp.ImageBase, sp.DockerfileCommands, sp.CPU, sp.MemoryMB, sp.PidsLimit, sp.DiskMB, req.Mounts})
	if err != nil {
		return "", false
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8]), true
}

// take returns a ready sandbox for key, if the pool has one.
func (p *warmPool) take(key string) (sandbox.Ref, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	refs := p.ready[key]
	if len(refs) == 0 {
		return "", false
	}
	ref := refs[len(refs)-1]
	p.ready[key] = refs[:len(refs)-1]
	return ref, true
}

// want records key as used now and says how many sandboxes to start for
// it; evicted are the refs of keys that fell out of the pool.
func (p *warmPool) want(key string) (n int, evicted []sandbox.Ref) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, nil
	}
	for i, k := range p.keys {
		if k == key {
			p.keys = append(p.keys[:i], p.keys[i+1:]...)
			break
		}
	}
	p.keys = append(p.keys, key)
	for len(p.keys) > maxWarmKeys {
		old := p.keys[0]
		p.keys = p.keys[1:]
		evicted = append(evicted, p.ready[old]...)
		delete(p.ready, old)
	}
	n = p.size - len(p.ready[key]) - p.filling[key]
	if n > 0 {
		p.filling[key] += n
	}
	return n, evicted
}

// filled records the end of one start for key (ref empty: it failed);
// false means the pool no longer wants it.
func (p *warmPool) filled(key string, ref sandbox.Ref) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.filling[key]--
	if ref == "" {
		return true
	}
	if p.closed || !containsKey(p.keys, key) || len(p.ready[key]) >= p.size {
		return false
	}
	p.ready[key] = append(p.ready[key], ref)
	return true
}

func containsKey(keys []string, k string) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

// drain empties the pool for good and returns what it held.
func (p *warmPool) drain() []sandbox.Ref {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var all []sandbox.Ref
	for _, refs := range p.ready {
		all = append(all, refs...)
	}
	p.ready = map[string][]sandbox.Ref{}
	return all
}

// fromWarmPool takes a ready sandbox for req (and starts its replacement
// in the background). Otherwise it returns the pool key to fill once the
// create's own start is done ("" when the spec is not poolable).
func (d *Driver) fromWarmPool(req sandbox.CreateRequest) (ref sandbox.Ref, key string, ok bool) {
	if d.warm == nil {
		return "", "", false
	}
	key, poolable := warmKey(req)
	if !poolable {
		return "", "", false
	}
	if ref, ok := d.warm.take(key); ok {
		d.warmHits.Inc()
		d.warmRefillLater(ref, key, req)
		// Its agent may have let its spare threads go while it waited:
		// have them made while the create answers, not at the first exec.
		go d.prewarm(ref)
		return ref, "", true
	}
	d.warmMisses.Inc()
	return "", key, false
}

// TakeWarm gives a started sandbox for req from the pool, if one is
// ready (sandbox.WarmPool). It stays the pool's until KeepWarm.
func (d *Driver) TakeWarm(req sandbox.CreateRequest) (sandbox.Ref, bool) {
	ref, _, ok := d.fromWarmPool(req)
	return ref, ok
}

// KeepWarm marks a taken sandbox as its owner's with an empty file in its
// directory (takenMarker), so the next Driver recovers it instead of
// destroying it with the pool's leftovers (sandbox.WarmPool). Creating a
// new empty file is a metadata change only: rewriting state.json (a
// rename over the old file, which ext4 flushes first) took 0.5 ms at p50
// and 9 ms at p90 on a loaded machine. It is not synced: the sandbox's
// processes do not outlive the machine either.
func (d *Driver) KeepWarm(_ context.Context, ref sandbox.Ref, _ sandbox.CreateRequest) error {
	s, err := d.get(ref)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox not found")
	}
	f, err := os.OpenFile(filepath.Join(s.st.Dir, takenMarker), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("mark the pooled sandbox taken: %w", err)
	}
	return f.Close()
}

// warmRefillLater starts the replacement of the sandbox ref just taken
// for key once that sandbox's first exec has ended, or warmRefillDelay
// after the take, whichever comes first. Starting a sandbox keeps both
// cores of a small machine busy for a few milliseconds (bubblewrap, the
// mounts, the agent), and a caller who takes a sandbox usually sends its
// first command at once: started with the take, the replacement made that
// command wait (create → first exec p50 7.1 against 5.2 ms for an exec).
func (d *Driver) warmRefillLater(ref sandbox.Ref, key string, req sandbox.CreateRequest) {
	first := d.warm.waitFirstExec(ref)
	d.bg.Go(func() {
		t := time.NewTimer(d.warm.refillDelay)
		defer t.Stop()
		select {
		case <-first:
		case <-t.C:
			d.warm.forgetFirstExec(ref)
		case <-d.poolCtx.Done():
			d.warm.forgetFirstExec(ref)
			return
		}
		d.warmFill(key, req)
	})
}

// warmExecDone is called at the end of every exec (see warmRefillLater).
func (d *Driver) warmExecDone(ref sandbox.Ref) {
	if d.warm != nil {
		d.warm.execDone(ref)
	}
}

// warmFill starts what the pool wants for key, from req's spec.
func (d *Driver) warmFill(key string, req sandbox.CreateRequest) {
	n, evicted := d.warm.want(key)
	for _, ref := range evicted {
		d.bg.Go(func() { _ = d.Destroy(context.Background(), ref) })
	}
	for range n {
		d.bg.Go(func() {
			ctx, cancel := context.WithTimeout(d.poolCtx, 5*time.Minute)
			defer cancel()
			var b [8]byte
			_, _ = rand.Read(b[:])
			wreq := sandbox.CreateRequest{ID: warmPrefix + hex.EncodeToString(b[:]), OwnerID: warmOwner, Spec: req.Spec, Mounts: req.Mounts}
			wreq.Spec.Name, wreq.Spec.Labels = "", nil
			ref, err := d.create(ctx, wreq, time.Now())
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("warm pool: start a sandbox", "err", err)
				}
				d.warm.filled(key, "")
				return
			}
			// One command before the sandbox is handed out: the first exec
			// in a new sandbox is slower than the next (cold paths in its
			// agent and in the kernel for its new namespaces and cgroup),
			// and the pool is there so the user's is not the first.
			if _, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"true"}}); err != nil {
				if ctx.Err() == nil {
					d.log.Warn("warm pool: first exec in a started sandbox", "err", err)
				}
				_ = d.Destroy(context.Background(), ref)
				d.warm.filled(key, "")
				return
			}
			if !d.warm.filled(key, ref) {
				_ = d.Destroy(context.Background(), ref)
			}
		})
	}
}

// closeWarmPool destroys the pooled sandboxes (Close).
func (d *Driver) closeWarmPool() {
	if d.warm == nil {
		return
	}
	var wg sync.WaitGroup
	for _, ref := range d.warm.drain() {
		wg.Go(func() { _ = d.Destroy(context.Background(), ref) })
	}
	wg.Wait()
}

// destroyStaleWarm destroys pooled sandboxes an earlier Driver left
// running (a server that died before its Close).
func (d *Driver) destroyStaleWarm() {
	ents, err := os.ReadDir(d.sandboxDir(""))
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), warmPrefix) {
			continue
		}
		if _, err := os.Stat(filepath.Join(d.sandboxDir(e.Name()), takenMarker)); err == nil {
			continue // taken: a sandbox like any other (Recover)
		}
		st, err := readState(d.sandboxDir(e.Name()))
		if err != nil {
			st = state{ID: e.Name(), Dir: d.sandboxDir(e.Name())}
		}
		if err := d.teardown(st); err != nil {
			d.log.Warn("warm pool: remove a sandbox left by an earlier server", "sandbox_id", e.Name(), "err", err)
		}
	}
}
