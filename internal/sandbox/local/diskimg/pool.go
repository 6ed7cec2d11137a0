package diskimg

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// poolFormat names pool images; bump it when mkfsArgs change, so images
// formatted by an older server are dropped instead of handed out.
const poolFormat = "ext4v1"

// Pool keeps images of one size (the default disk_mb) formatted ahead of
// time, because mkfs costs more than a whole sandbox start may. Take hands
// one out with a rename; Run makes new ones in the background. Ready images
// survive restarts: NewPool adopts them.
//
// The pool's directory must be on the same filesystem as the images'
// destinations (under the driver's data dir), or Take falls back to
// formatting on demand. One Pool per directory.
type Pool struct {
	dir    string
	sizeMB int64
	want   int
	log    *slog.Logger

	mu    sync.Mutex
	ready []string // formatted images in dir, never mounted
	// added is closed (and replaced) when an image joins ready: the
	// broadcast WaitReady waits on. Only push closes it.
	added chan struct{}

	// wake asks Run to refill (buffered, capacity 1). Never closed.
	wake chan struct{}
}

// retryMin and retryMax bound Run's backoff after a failed format.
const (
	retryMin = time.Second
	retryMax = time.Minute
)

// NewPool returns a pool of up to n images of sizeMB MiB in dir, which it
// creates. Images left there by an earlier Pool of the same size and
// format are adopted; anything else in dir (partial images, other sizes)
// is removed. log may be nil.
func NewPool(dir string, sizeMB int64, n int, log *slog.Logger) (*Pool, error) {
	if sizeMB < MinMB || sizeMB > MaxMB {
		return nil, ErrSize
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	p := &Pool{dir: dir, sizeMB: sizeMB, want: n, log: log, added: make(chan struct{}), wake: make(chan struct{}, 1)}
	prefix := p.prefix()
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), ".img") && len(p.ready) < n {
			p.ready = append(p.ready, path)
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			return nil, fmt.Errorf("disk pool: remove leftover: %w", err)
		}
	}
	return p, nil
}

func (p *Pool) prefix() string { return fmt.Sprintf("%s-%dM-", poolFormat, p.sizeMB) }

// Ready returns how many formatted images wait in the pool.
func (p *Pool) Ready() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// Take puts a new formatted image of sizeMB MiB at path (which must not
// exist): a ready one from the pool when the size is the pool's, else one
// formatted now.
func (p *Pool) Take(ctx context.Context, path string, sizeMB int64) error {
	if sizeMB == p.sizeMB {
		if src, ok := p.pop(); ok {
			p.signal()
			err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
			switch {
			case err == nil:
				return nil
			case errors.Is(err, unix.EEXIST):
				p.push(src)
				return fmt.Errorf("create disk image: %w", os.ErrExist)
			case errors.Is(err, unix.ENOENT):
				// The ready image is gone (removed by hand) or path's
				// directory is missing: Create tells which.
			default:
				// EXDEV (another filesystem), or a filesystem without
				// RENAME_NOREPLACE: format in place instead.
				p.push(src)
				p.log.Warn("disk pool: cannot move a ready image into place", "err", err)
			}
		}
	}
	return Create(ctx, path, sizeMB)
}

func (p *Pool) pop() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ready) == 0 {
		return "", false
	}
	src := p.ready[len(p.ready)-1]
	p.ready = p.ready[:len(p.ready)-1]
	return src, true
}

func (p *Pool) push(src string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready = append(p.ready, src)
	close(p.added)
	p.added = make(chan struct{})
}

// WaitReady waits until the pool is full (Run fills it), or ctx is done.
// A server may call it before taking traffic so the first sandboxes do
// not pay for formatting.
func (p *Pool) WaitReady(ctx context.Context) error {
	for {
		p.mu.Lock()
		full, added := len(p.ready) >= p.want, p.added
		p.mu.Unlock()
		if full {
			return nil
		}
		select {
		case <-added:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Pool) short() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready) < p.want
}

func (p *Pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run keeps the pool full until ctx is done, formatting one image at a
// time (mkfs is mostly CPU; one at a time leaves the rest of the host to
// sandboxes). It returns nil after ctx is done; an image being formatted
// then is removed, ready ones stay for the next Pool.
func (p *Pool) Run(ctx context.Context) error {
	retry := time.NewTimer(retryMax)
	retry.Stop() // armed only after a failure
	defer retry.Stop()
	backoff := time.Duration(0)
	for {
		for p.short() {
			err := p.make(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				backoff = min(max(2*backoff, retryMin), retryMax)
				p.log.Warn("disk pool: format an image", "err", err, "retry_in", backoff)
				retry.Reset(backoff)
				break
			}
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-retry.C:
		}
	}
}

// make formats one image under a temporary name and then adds it to the
// pool, so a crash never leaves a partial image that looks ready.
func (p *Pool) make(ctx context.Context) error {
	name := p.prefix() + strings.ToLower(rand.Text()[:16])
	tmp := filepath.Join(p.dir, ".tmp-"+name)
	if err := Create(ctx, tmp, p.sizeMB); err != nil {
		return err
	}
	final := filepath.Join(p.dir, name+".img")
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("disk pool: %w", err)
	}
	p.push(final)
	return nil
}
