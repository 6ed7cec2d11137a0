// Package fs is the filesystem blob.Store, the embedded default: one file
// per key under a root directory. Writes go to a temporary file in the
// destination directory and are renamed into place, so a reader sees the
// old object or the new one, never a partial one.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
)

var (
	_ blob.Store  = (*Store)(nil)
	_ blob.Ranger = (*Store)(nil)
	_ blob.Syncer = (*Store)(nil)
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 512<<10); return &b }}

// Options tunes a Store.
type Options struct {
	// NoSync skips fsync of each object before it is renamed into place.
	// Faster; an object written just before a power loss may be empty
	// unless Sync is called (snapshots call it before their manifest).
	NoSync bool
}

// Store keeps objects as files under a root directory.
type Store struct {
	root string
	opts Options
}

// New returns a Store rooted at dir, creating it if needed.
func New(dir string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob root %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create blob root: %w", err)
	}
	return &Store{root: abs, opts: opts}, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(key string) (string, error) {
	if err := blob.ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put writes r to a temporary file next to the destination and renames it
// into place once it is complete (and, unless NoSync, synced).
//
// A full volume is errs.InsufficientStorage (507) naming the blob store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	defer func() { err = errs.Full(err, "the blob store") }()
	p, err := s.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	var f *os.File
	// A concurrent Delete may remove the (empty) directory between MkdirAll
	// and CreateTemp; try again a few times.
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, iofs.ErrExist) {
				return errs.E(errs.Conflict, "blob key %q: a parent is an object", key)
			}
			return fmt.Errorf("put %s: %w", key, err)
		}
		f, err = os.CreateTemp(dir, blob.TempPrefix+"*")
		if err == nil {
			break
		}
		if !errors.Is(err, iofs.ErrNotExist) || attempt == 5 {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bp := bufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(f, ctxReader{ctx, blob.ExactReader(r, size)}, *bp)
	bufPool.Put(bp)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if !s.opts.NoSync {
		if err = f.Sync(); err != nil {
			return fmt.Errorf("put %s: sync: %w", key, err)
		}
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err = os.Rename(f.Name(), p); err != nil {
		if fi, serr := os.Lstat(p); serr == nil && fi.IsDir() {
			return errs.E(errs.Conflict, "blob key %q: other objects live under it", key)
		}
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// ctxReader stops a long copy once ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func notFound(key string, err error) error {
	if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return fmt.Errorf("blob %q: %w", key, errs.ErrNotFound)
	}
	return fmt.Errorf("blob %q: %w", key, err)
}

// Get opens the object's file.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return s.GetRange(ctx, key, 0, -1)
}

// GetRange opens the object's file at offset.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(key, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, notFound(key, iofs.ErrNotExist)
	}
	if offset == 0 && length < 0 {
		return f, nil
	}
	if offset < 0 || offset > fi.Size() {
		f.Close()
		return nil, errs.E(errs.Invalid, "range start %d outside object of %d bytes", offset, fi.Size())
	}
	if length < 0 {
		length = fi.Size() - offset
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, offset, length), f}, nil
}

// Head stats the object's file.
func (s *Store) Head(ctx context.Context, key string) (blob.Info, error) {
	p, err := s.path(key)
	if err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return blob.Info{}, notFound(key, err)
	}
	if !fi.Mode().IsRegular() {
		return blob.Info{}, notFound(key, iofs.ErrNotExist)
	}
	return blob.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime().UTC()}, nil
}

// List walks the directory holding prefix and yields matching objects in
// key order. Temporary files of in-progress Puts are skipped.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		base := ""
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			base = prefix[:i]
		}
		start := s.root
		if base != "" {
			if err := blob.ValidateKey(base); err != nil {
				return // no key can live under an invalid directory
			}
			start = filepath.Join(s.root, filepath.FromSlash(base))
		}
		var infos []blob.Info
		err := filepath.WalkDir(start, func(p string, d iofs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
					return nil
				}
				return err
			}
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			rel, rerr := filepath.Rel(s.root, p)
			if rerr != nil {
				return rerr
			}
			key := filepath.ToSlash(rel)
			if d.IsDir() {
				// Prune directories that cannot hold a matching key.
				if p != start && !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), blob.TempPrefix) || !strings.HasPrefix(key, prefix) {
				return nil
			}
			fi, ierr := d.Info()
			if ierr != nil {
				if errors.Is(ierr, iofs.ErrNotExist) {
					return nil // deleted meanwhile
				}
				return ierr
			}
			infos = append(infos, blob.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime().UTC()})
			return nil
		})
		if err != nil {
			yield(blob.Info{}, fmt.Errorf("list %q: %w", prefix, err))
			return
		}
		slices.SortFunc(infos, func(a, b blob.Info) int { return strings.Compare(a.Key, b.Key) })
		for _, in := range infos {
			if !yield(in, nil) {
				return
			}
		}
	}
}

// Delete removes the object's file and then any directories it leaves empty.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return nil // not an object
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != s.root && strings.HasPrefix(dir, s.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // fails when not empty: stop
			break
		}
	}
	return nil
}

// Sync flushes the filesystem holding the store (syncfs), making every
// completed Put durable.
func (s *Store) Sync(ctx context.Context) error {
	f, err := os.Open(s.root)
	if err != nil {
		return fmt.Errorf("sync blob store: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync blob store: %w", err)
	}
	return nil
}
