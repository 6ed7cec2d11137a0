package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/errs"
)

// RestoreStats describes one restore.
type RestoreStats struct {
	Files           int   `json:"files"`
	DownloadedFiles int   `json:"downloaded_files"` // files whose content had to be fetched
	DownloadedBytes int64 `json:"downloaded_bytes"`
	Removed         int   `json:"removed"` // paths deleted because the version lacks them
}

// Progress reports how far a restore or import has come.
type Progress struct {
	FilesDone  int   `json:"files_done"`
	FilesTotal int   `json:"files_total"`
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
}

// RestoreOptions tunes a restore.
type RestoreOptions struct {
	// Progress, if set, is called after each file (from several goroutines,
	// serialised by the caller's needs; keep it cheap).
	Progress func(Progress)
}

// Restore makes dir an exact copy of version name at loc: paths the version
// lacks are deleted, files get their content, mode and mtime, symlinks are
// recreated without being followed, empty directories are kept. Files that
// already hold the right content are not downloaded again. dir is created
// if missing; it must not be a symlink.
func (s *Snapshotter) Restore(ctx context.Context, loc Location, name, dir string, opts RestoreOptions) (st RestoreStats, err error) {
	start := time.Now()
	defer func() { s.cfg.Metrics.restoreDone("restore", time.Since(start).Seconds(), err) }()
	m, err := s.Manifest(ctx, loc, name)
	if err != nil {
		return st, err
	}
	return s.restoreManifest(ctx, loc, m, dir, opts)
}

func (s *Snapshotter) restoreManifest(ctx context.Context, loc Location, m *Manifest, dir string, opts RestoreOptions) (RestoreStats, error) {
	var st RestoreStats
	if err := m.Validate(); err != nil {
		return st, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return st, fmt.Errorf("restore target: %w", err)
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return st, errs.E(errs.Invalid, "restore target %s is not a directory", dir)
	}
	want := make(map[string]*Entry, len(m.Entries))
	for i := range m.Entries {
		want[m.Entries[i].Path] = &m.Entries[i]
	}
	abs := func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) }

	// 1. Remove what the version lacks or has with another type; make kept
	// directories writable for now (their modes are set last).
	var removeErr error
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if p == dir {
			return nil
		}
		rel := filepath.ToSlash(p[len(dir)+1:])
		e := want[rel]
		var have Type
		switch t := d.Type(); {
		case t.IsDir():
			have = Dir
		case t&fs.ModeSymlink != 0:
			have = Symlink
		case t.IsRegular():
			have = File
		}
		if e == nil || e.Type != have {
			if err := forceRemoveAll(p); err != nil {
				removeErr = fmt.Errorf("remove %s: %w", rel, err)
				return removeErr
			}
			st.Removed++
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if have == Dir {
			if info, err := d.Info(); err == nil && info.Mode().Perm()&0o700 != 0o700 {
				if err := os.Chmod(p, info.Mode().Perm()|0o700); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("restore: clear %s: %w", dir, err)
	}

	// 2. Directories (parents sort before children) and symlinks.
	var files []*Entry
	var total int64
	for i := range m.Entries {
		e := &m.Entries[i]
		p := abs(e.Path)
		switch e.Type {
		case Dir:
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return st, fmt.Errorf("restore mkdir %s: %w", e.Path, err)
			}
			if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
				return st, errs.E(errs.Conflict, "restore: %s is not a directory", e.Path)
			}
		case Symlink:
			if t, err := os.Readlink(p); err == nil && t == e.Target {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return st, fmt.Errorf("restore %s: %w", e.Path, err)
			}
			if err := os.Symlink(e.Target, p); err != nil {
				return st, fmt.Errorf("restore symlink %s: %w", e.Path, err)
			}
		case File:
			files = append(files, e)
			total += e.Size
		}
	}

	// 3. Files, in parallel; existing files with the right content stay.
	var done, downloaded atomic.Int64
	var doneBytes, dlBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	for _, e := range files {
		g.Go(func() error {
			fetched, err := s.restoreFile(gctx, loc, e, abs(e.Path))
			if err != nil {
				return err
			}
			if fetched {
				downloaded.Add(1)
				dlBytes.Add(e.Size)
			}
			d := done.Add(1)
			db := doneBytes.Add(e.Size)
			if opts.Progress != nil {
				opts.Progress(Progress{FilesDone: int(d), FilesTotal: len(files), BytesDone: db, BytesTotal: total})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}

	// 4. Owners (as root only), then directory modes and times, deepest first.
	if os.Geteuid() == 0 {
		for i := range m.Entries {
			e := &m.Entries[i]
			if e.Type == File {
				continue // restoreFile set it
			}
			if err := os.Lchown(abs(e.Path), int(e.UID), int(e.GID)); err != nil {
				return st, fmt.Errorf("restore chown %s: %w", e.Path, err)
			}
		}
	}
	for i := len(m.Entries) - 1; i >= 0; i-- {
		e := &m.Entries[i]
		if e.Type != Dir {
			continue
		}
		p := abs(e.Path)
		if err := os.Chmod(p, fileMode(e.Mode)); err != nil {
			return st, fmt.Errorf("restore chmod %s: %w", e.Path, err)
		}
		if e.MTime != 0 {
			t := time.Unix(0, e.MTime)
			_ = os.Chtimes(p, t, t)
		}
	}
	st.Files = len(files)
	st.DownloadedFiles = int(downloaded.Load())
	st.DownloadedBytes = dlBytes.Load()
	return st, nil
}

// restoreFile gives path the entry's content, mode and mtime. It reports
// whether the content was downloaded.
func (s *Snapshotter) restoreFile(ctx context.Context, loc Location, e *Entry, p string) (bool, error) {
	mode := fileMode(e.Mode)
	mtime := time.Unix(0, e.MTime)
	if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == e.Size {
		if sum, err := hashFile(p); err == nil && sum == e.SHA256 {
			chowned := false
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && (st.Uid != e.UID || st.Gid != e.GID) {
				if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
					return false, fmt.Errorf("restore chown %s: %w", e.Path, err)
				}
				chowned = true // which may have cleared setuid/setgid
			}
			if chowned || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != mode {
				if err := os.Chmod(p, mode); err != nil {
					return false, fmt.Errorf("restore chmod %s: %w", e.Path, err)
				}
			}
			if e.MTime != 0 && !fi.ModTime().Equal(mtime) {
				_ = os.Chtimes(p, mtime, mtime)
			}
			return false, nil
		}
	}
	rc, err := loc.Store.Get(ctx, loc.blobKey(e.SHA256))
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return false, errs.E(errs.Conflict, "restore: content of %q is missing from the store", e.Path)
		}
		return false, fmt.Errorf("restore %s: %w", e.Path, err)
	}
	defer rc.Close()
	// A new path is written in place (nothing to protect); an existing
	// file is replaced by rename, so it is never seen half-written.
	var f *os.File
	direct := false
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		direct = err == nil
	}
	if !direct {
		if f, err = os.CreateTemp(filepath.Dir(p), ".techboss-restore-*"); err != nil {
			return false, fmt.Errorf("restore %s: %w", e.Path, err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	bp := s.bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), rc, (*bp)[:min(len(*bp), 1<<20)])
	s.bufs.Put(bp)
	if err != nil {
		return false, fmt.Errorf("restore %s: %w", e.Path, err)
	}
	if n != e.Size || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		return false, errs.E(errs.Conflict, "restore: stored content of %q does not match its hash", e.Path)
	}
	if os.Geteuid() == 0 {
		if err := f.Chown(int(e.UID), int(e.GID)); err != nil {
			return false, err
		}
	}
	if err := f.Chmod(mode); err != nil { // after chown, which clears setuid/setgid
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if e.MTime != 0 {
		_ = os.Chtimes(f.Name(), mtime, mtime)
	}
	if !direct {
		if err := os.Rename(f.Name(), p); err != nil {
			return false, fmt.Errorf("restore %s: %w", e.Path, err)
		}
	}
	ok = true
	return true, nil
}

func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// forceRemoveAll removes p, making read-only directories writable first.
func forceRemoveAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}
