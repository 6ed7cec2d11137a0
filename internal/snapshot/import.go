package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
)

// ImportResult describes an init_from_s3 import.
type ImportResult struct {
	// Mode is "version" (the latest version was restored), "objects" (plain
	// objects were copied) or "empty" (the prefix held nothing).
	Mode    string `json:"mode"`
	Version string `json:"version,omitempty"`
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
	Skipped int    `json:"skipped"` // keys that are not valid workspace paths
}

// Import fills dir from loc for init_from_s3: when loc holds versions the
// latest is restored; otherwise every plain object under the prefix (the
// version area excluded) is copied to the same relative path.
func (s *Snapshotter) Import(ctx context.Context, loc Location, dir string, progress func(Progress)) (res ImportResult, err error) {
	start := time.Now()
	defer func() { s.cfg.Metrics.restoreDone("import", time.Since(start).Seconds(), err) }()
	versions, err := s.versions(ctx, loc)
	if err != nil {
		return res, err
	}
	if len(versions) > 0 {
		name := versions[len(versions)-1]
		m, err := s.manifest(ctx, loc, name)
		if err != nil {
			return res, err
		}
		st, err := s.restoreManifest(ctx, loc, m, dir, RestoreOptions{Progress: progress})
		if err != nil {
			return res, err
		}
		return ImportResult{Mode: "version", Version: name, Files: st.Files, Bytes: m.Bytes}, nil
	}

	objs, total, skipped, err := plainObjects(ctx, loc)
	res.Skipped = skipped
	if err != nil {
		return res, err
	}
	if len(objs) == 0 {
		res.Mode = "empty"
		return res, os.MkdirAll(dir, 0o755)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, fmt.Errorf("import target: %w", err)
	}
	var done, doneBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	for _, o := range objs {
		g.Go(func() error {
			n, err := s.importObject(gctx, loc.Store, blob.Join(loc.Prefix, o.rel), dir, o.rel)
			if err != nil {
				return err
			}
			d, b := done.Add(1), doneBytes.Add(n)
			if progress != nil {
				progress(Progress{FilesDone: int(d), FilesTotal: len(objs), BytesDone: b, BytesTotal: total})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	if err := chownTree(dir); err != nil {
		return res, err
	}
	return ImportResult{Mode: "objects", Files: len(objs), Bytes: doneBytes.Load(), Skipped: res.Skipped}, nil
}

// importObject copies one object to dir/rel, creating parent directories
// and refusing to pass through anything that is not a real directory.
func (s *Snapshotter) importObject(ctx context.Context, st blob.Store, key, dir, rel string) (int64, error) {
	cur := dir
	segs := strings.Split(rel, "/")
	for _, seg := range segs[:len(segs)-1] {
		cur = filepath.Join(cur, seg)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return 0, fmt.Errorf("import mkdir: %w", err)
			}
			if fi, err := os.Lstat(cur); err != nil || !fi.IsDir() {
				return 0, errs.E(errs.Conflict, "import: %q conflicts with another object", rel)
			}
		case err != nil:
			return 0, err
		case !fi.IsDir():
			return 0, errs.E(errs.Conflict, "import: %q runs through a file or symlink", rel)
		}
	}
	dst := filepath.Join(dir, filepath.FromSlash(rel))
	if fi, err := os.Lstat(dst); err == nil && !fi.Mode().IsRegular() {
		return 0, errs.E(errs.Conflict, "import: %q exists and is not a regular file", rel)
	}
	rc, err := st.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("import %s: %w", rel, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Dir(dst), ".techboss-import-*")
	if err != nil {
		return 0, err
	}
	bp := s.bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(f, rc, (*bp)[:min(len(*bp), 1<<20)])
	s.bufs.Put(bp)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
		return 0, fmt.Errorf("import %s: %w", rel, err)
	}
	return n, nil
}

// chownTree gives everything under dir the owner of dir itself when the
// server runs as root, so a non-root sandbox user can work on imported files.
func chownTree(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 && st.Gid == 0 {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		return os.Lchown(p, int(st.Uid), int(st.Gid))
	})
}

// ImportTar is Import for drivers without a host workspace: it writes what
// Import would put in the directory as a tar stream (the latest version,
// or the plain objects under the prefix) for sandbox.Archiver's ArchiveIn.
func (s *Snapshotter) ImportTar(ctx context.Context, loc Location, w io.Writer, progress func(Progress)) (res ImportResult, err error) {
	start := time.Now()
	defer func() { s.cfg.Metrics.restoreDone("import", time.Since(start).Seconds(), err) }()
	versions, err := s.versions(ctx, loc)
	if err != nil {
		return res, err
	}
	if len(versions) > 0 {
		name := versions[len(versions)-1]
		m, err := s.manifest(ctx, loc, name)
		if err != nil {
			return res, err
		}
		if err := s.RestoreTar(ctx, loc, name, w); err != nil {
			return res, err
		}
		return ImportResult{Mode: "version", Version: name, Files: m.Files, Bytes: m.Bytes}, nil
	}
	objs, total, skipped, err := plainObjects(ctx, loc)
	res.Skipped = skipped
	if err != nil {
		return res, err
	}
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	var done int
	var doneBytes int64
	for _, o := range objs {
		var parents []string
		for p := parentOf(o.rel); p != "" && !dirs[p]; p = parentOf(p) {
			parents = append(parents, p)
			dirs[p] = true
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: parents[i] + "/", Mode: 0o755, ModTime: start}); err != nil {
				return res, err
			}
		}
		rc, err := loc.Store.Get(ctx, blob.Join(loc.Prefix, o.rel))
		if err != nil {
			return res, fmt.Errorf("import %s: %w", o.rel, err)
		}
		// The size listed may be stale; the header must match the body.
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: o.rel, Mode: 0o644, Size: o.size, ModTime: start}); err != nil {
			rc.Close()
			return res, err
		}
		n, err := io.Copy(tw, io.LimitReader(rc, o.size))
		rc.Close()
		if err == nil && n != o.size {
			err = errs.E(errs.Conflict, "import: %q changed while it was being copied", o.rel)
		}
		if err != nil {
			return res, fmt.Errorf("import %s: %w", o.rel, err)
		}
		done++
		doneBytes += n
		if progress != nil {
			progress(Progress{FilesDone: done, FilesTotal: len(objs), BytesDone: doneBytes, BytesTotal: total})
		}
	}
	if err := tw.Close(); err != nil {
		return res, err
	}
	mode := "objects"
	if len(objs) == 0 {
		mode = "empty"
	}
	return ImportResult{Mode: mode, Files: len(objs), Bytes: doneBytes, Skipped: res.Skipped}, nil
}

// plainObject is one plain object under a prefix, relative to it.
type plainObject struct {
	rel  string
	size int64
}

// plainObjects lists the plain objects under loc's prefix that an import
// copies: not the version area, not folder markers, and not keys that are
// no safe relative path (those are counted as skipped).
func plainObjects(ctx context.Context, loc Location) (objs []plainObject, total int64, skipped int, err error) {
	base := ""
	if loc.Prefix != "" {
		base = loc.Prefix + "/"
	}
	for in, err := range loc.Store.List(ctx, base) {
		if err != nil {
			return nil, 0, skipped, fmt.Errorf("import: list %q: %w", base, err)
		}
		rel := strings.TrimPrefix(in.Key, base)
		if rel == Area || strings.HasPrefix(rel, Area+"/") || strings.HasSuffix(rel, "/") {
			continue // the version area; folder markers
		}
		if ValidatePath(rel) != nil {
			skipped++
			continue
		}
		objs = append(objs, plainObject{rel, in.Size})
		total += in.Size
	}
	return objs, total, skipped, nil
}
