package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
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

// ImportOptions tunes an import.
type ImportOptions struct {
	// Progress, if set, is called after each file (see RestoreOptions).
	Progress func(Progress)
	// IDs is the sandbox's user-namespace map, applied when the latest
	// version is restored (see RestoreOptions.IDs). Plain objects get the
	// owner of dir itself, which is already a host owner.
	IDs sandbox.IDMap
}

// Import fills dir from loc for init_from_s3: when loc holds versions the
// latest is restored; otherwise every plain object under the prefix (the
// version area excluded) is copied to the same relative path. dir's
// content is the sandbox's and is changed only through a tree (see
// Restore).
func (s *Snapshotter) Import(ctx context.Context, loc Location, dir string, opts ImportOptions) (res ImportResult, err error) {
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
		st, err := s.restoreManifest(ctx, loc, m, dir, RestoreOptions{Progress: opts.Progress, IDs: opts.IDs})
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
	top, err := openTree(dir)
	if err != nil {
		return res, fmt.Errorf("import target: %w", err)
	}
	defer top.Close()
	var done, doneBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	// Objects are listed in key order: those sharing a directory come in a
	// row, which the cursor resolves (and creates) once.
	c := &cursor{top: top}
	defer c.Close()
	for _, o := range objs {
		d, err := c.mkdirs(parentOf(o.rel), 0o755)
		if err != nil {
			g.Wait()
			return res, importErr(o.rel, err)
		}
		d = d.hold()
		g.Go(func() error {
			defer d.Close()
			n, err := s.importObject(gctx, loc.Store, blob.Join(loc.Prefix, o.rel), d, o.rel)
			if err != nil {
				return err
			}
			n1, b := done.Add(1), doneBytes.Add(n)
			if opts.Progress != nil {
				opts.Progress(Progress{FilesDone: int(n1), FilesTotal: len(objs), BytesDone: b, BytesTotal: total})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	if err := chownTree(ctx, top); err != nil {
		return res, err
	}
	return ImportResult{Mode: "objects", Files: len(objs), Bytes: doneBytes.Load(), Skipped: res.Skipped}, nil
}

func importErr(rel string, err error) error {
	if _, ok := errs.Public(err); ok {
		return err
	}
	return fmt.Errorf("import %s: %w", rel, err)
}

// importObject copies one object to rel, whose directory d is, by a file
// created under a fresh name and renamed into place.
func (s *Snapshotter) importObject(ctx context.Context, st blob.Store, key string, d *tree, rel string) (int64, error) {
	name := baseOf(rel)
	if fi, err := d.lstat(name); err == nil && !fi.Mode().IsRegular() {
		return 0, errs.E(errs.Conflict, "import: %q exists and is not a regular file", rel)
	}
	rc, err := st.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("import %s: %w", rel, err)
	}
	defer rc.Close()
	f, tmp, err := d.createTemp(".techboss-import-")
	if err != nil {
		return 0, importErr(rel, err)
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
		err = d.rename(tmp, name)
	}
	if err != nil {
		d.remove(tmp)
		return 0, importErr(rel, err)
	}
	return n, nil
}

// chownTree gives everything below the tree's top the owner of the top
// itself when the server runs as root, so a non-root sandbox user can work
// on imported files. Each entry is changed through its directory's handle,
// never followed.
func chownTree(ctx context.Context, top *tree) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := top.r.Lstat(".")
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 && st.Gid == 0 {
		return nil
	}
	return top.walk(ctx, func(d *tree, rel string, fi fs.FileInfo) (bool, error) {
		if err := d.lchown(fi.Name(), int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("import chown %s: %w", rel, err)
		}
		return fi.IsDir(), nil
	}, nil)
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
