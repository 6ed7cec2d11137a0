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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
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
	// IDs is the sandbox's user-namespace map: a server running as root
	// gives entries the host owners IDs.ToHost of the recorded (sandbox)
	// ones. Zero: identity.
	IDs sandbox.IDMap
}

// Restore makes dir an exact copy of version name at loc: paths the version
// lacks are deleted, files get their content, mode and mtime, symlinks are
// recreated without being followed, empty directories are kept. Files that
// already hold the right content are not downloaded again. dir is created
// if missing; it must not be a symlink. dir's content is the sandbox's and
// is changed only through a tree: an entry that changes under the restore
// (e.g. a directory swapped for a symlink) fails it with errs.Conflict,
// and nothing outside dir is ever touched.
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
	top, err := openTree(dir)
	if err != nil {
		return st, fmt.Errorf("restore target: %w", err)
	}
	defer top.Close()
	want := make(map[string]*Entry, len(m.Entries))
	for i := range m.Entries {
		want[m.Entries[i].Path] = &m.Entries[i]
	}
	asRoot := os.Geteuid() == 0
	owner := func(e *Entry) (int, int) { return int(opts.IDs.ToHost(e.UID)), int(opts.IDs.ToHost(e.GID)) }

	// 1. Remove what the version lacks or has with another type; make kept
	// directories writable for now (their modes are set last).
	err = top.walk(ctx, func(d *tree, rel string, fi fs.FileInfo) (bool, error) {
		e := want[rel]
		have := typeOf(fi.Mode())
		if e == nil || e.Type != have {
			if err := d.removeAll(fi.Name()); err != nil {
				return false, fmt.Errorf("remove %s: %w", rel, err)
			}
			st.Removed++
			return false, nil
		}
		if have == Dir && fi.Mode().Perm()&0o700 != 0o700 {
			if err := d.chmodDir(fi.Name(), fi.Mode().Perm()|0o700); err != nil {
				return false, err
			}
		}
		return have == Dir, nil
	}, nil)
	if err != nil {
		return st, fmt.Errorf("restore: clear %s: %w", dir, err)
	}

	// 2. Directories (parents sort before children) and symlinks.
	var files []*Entry
	var total int64
	c := &cursor{top: top}
	defer c.Close()
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type == File {
			files = append(files, e)
			total += e.Size
			continue
		}
		d, err := c.dir(parentOf(e.Path))
		if err != nil {
			return st, restoreErr(e.Path, err)
		}
		name := baseOf(e.Path)
		switch e.Type {
		case Dir:
			if err := d.mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return st, fmt.Errorf("restore mkdir %s: %w", e.Path, err)
			}
			if fi, err := d.lstat(name); err != nil || !fi.IsDir() {
				return st, errs.E(errs.Conflict, "restore: %s is not a directory", e.Path)
			}
		case Symlink:
			if t, err := d.readlink(name); err == nil && t == e.Target {
				continue
			}
			if err := d.remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return st, fmt.Errorf("restore %s: %w", e.Path, err)
			}
			if err := d.symlink(e.Target, name); err != nil {
				return st, fmt.Errorf("restore symlink %s: %w", e.Path, err)
			}
		}
	}

	// 3. Files, in parallel; existing files with the right content stay.
	var done, downloaded atomic.Int64
	var doneBytes, dlBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	for _, e := range files {
		d, err := c.dir(parentOf(e.Path))
		if err != nil {
			g.Wait()
			return st, restoreErr(e.Path, err)
		}
		d = d.hold()
		g.Go(func() error {
			defer d.Close()
			uid, gid := owner(e)
			fetched, err := s.restoreFile(gctx, loc, e, d, asRoot, uid, gid)
			if err != nil {
				return err
			}
			if fetched {
				downloaded.Add(1)
				dlBytes.Add(e.Size)
			}
			n := done.Add(1)
			nb := doneBytes.Add(e.Size)
			if opts.Progress != nil {
				opts.Progress(Progress{FilesDone: int(n), FilesTotal: len(files), BytesDone: nb, BytesTotal: total})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}

	// 4. Owners (as root only), then directory modes and times, deepest
	// first; each directory through a handle on itself.
	if asRoot {
		for i := range m.Entries {
			e := &m.Entries[i]
			var err error
			uid, gid := owner(e)
			switch e.Type {
			case Dir:
				var d *tree
				if d, err = c.dir(e.Path); err == nil {
					err = d.chown(uid, gid)
				}
			case Symlink:
				var d *tree
				if d, err = c.dir(parentOf(e.Path)); err == nil {
					err = d.lchown(baseOf(e.Path), uid, gid)
				}
			}
			if err != nil {
				return st, restoreErr(e.Path, fmt.Errorf("chown: %w", err))
			}
		}
	}
	for i := len(m.Entries) - 1; i >= 0; i-- {
		e := &m.Entries[i]
		if e.Type != Dir {
			continue
		}
		d, err := c.dir(e.Path)
		if err == nil {
			err = d.chmod(fileMode(e.Mode))
		}
		if err != nil {
			return st, restoreErr(e.Path, fmt.Errorf("chmod: %w", err))
		}
		if e.MTime != 0 {
			t := time.Unix(0, e.MTime)
			_ = d.chtimes(t)
		}
	}
	st.Files = len(files)
	st.DownloadedFiles = int(downloaded.Load())
	st.DownloadedBytes = dlBytes.Load()
	return st, nil
}

// restoreErr reports a failure on path p; one caused by the tree changing
// under us is a conflict naming the path.
func restoreErr(p string, err error) error {
	if errors.Is(err, errMoved) {
		return err
	}
	return fmt.Errorf("restore %s: %w", p, err)
}

func typeOf(m fs.FileMode) Type {
	switch {
	case m.IsDir():
		return Dir
	case m&fs.ModeSymlink != 0:
		return Symlink
	case m.IsRegular():
		return File
	}
	return ""
}

// restoreFile gives the entry's file in directory d its content, mode,
// owner (uid, gid, when chown is set) and mtime. It reports whether the
// content was downloaded.
func (s *Snapshotter) restoreFile(ctx context.Context, loc Location, e *Entry, d *tree, chown bool, uid, gid int) (bool, error) {
	name := baseOf(e.Path)
	mode := fileMode(e.Mode)
	mtime := time.Unix(0, e.MTime)
	if kept, err := s.keepFile(e, d, name, chown, uid, gid); err != nil || kept {
		return false, err
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
	// file is replaced by rename, so it is never seen half-written. Either
	// way the file is one we created: nothing is written through an entry
	// the sandbox made.
	written := name
	f, err := d.create(name)
	if errors.Is(err, fs.ErrExist) {
		f, written, err = d.createTemp(".techboss-restore-")
	}
	if err != nil {
		return false, restoreErr(e.Path, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			d.remove(written)
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
	if chown {
		if err := f.Chown(uid, gid); err != nil {
			return false, err
		}
	}
	if err := f.Chmod(mode); err != nil { // after chown, which clears setuid/setgid
		return false, err
	}
	if e.MTime != 0 {
		_ = setTimes(f, mtime)
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if written != name {
		if err := d.rename(written, name); err != nil {
			return false, restoreErr(e.Path, err)
		}
	}
	ok = true
	return true, nil
}

// keepFile reports whether the regular file name in d already holds the
// entry's content, and if so gives it the entry's owner, mode and mtime
// through its fd.
func (s *Snapshotter) keepFile(e *Entry, d *tree, name string, chown bool, uid, gid int) (bool, error) {
	f, fi, err := d.openFile(name)
	if err != nil {
		return false, nil // absent, not a regular file, or changed: written anew
	}
	defer f.Close()
	if fi.Size() != e.Size {
		return false, nil
	}
	h := sha256.New()
	bp := s.bufs.Get().(*[]byte)
	_, err = io.CopyBuffer(h, f, (*bp)[:min(len(*bp), 1<<20)])
	s.bufs.Put(bp)
	if err != nil || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		return false, nil
	}
	mode := fileMode(e.Mode)
	chowned := false
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && chown && (int(st.Uid) != uid || int(st.Gid) != gid) {
		if err := f.Chown(uid, gid); err != nil {
			return false, fmt.Errorf("restore chown %s: %w", e.Path, err)
		}
		chowned = true // which may have cleared setuid/setgid
	}
	if chowned || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != mode {
		if err := f.Chmod(mode); err != nil {
			return false, fmt.Errorf("restore chmod %s: %w", e.Path, err)
		}
	}
	if mtime := time.Unix(0, e.MTime); e.MTime != 0 && !fi.ModTime().Equal(mtime) {
		_ = setTimes(f, mtime)
	}
	return true, nil
}
