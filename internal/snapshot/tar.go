package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/errs"
)

// SnapshotTar records a workspace read as a tar stream (for drivers whose
// workspace is not a host directory: sandbox.Archiver's ArchiveOut) as a
// new version. Entry names are relative to the workspace root. Every file
// is hashed (a tar has no inode to cache on); only blobs the store lacks
// are uploaded. Large files are spooled to a temporary file.
func (s *Snapshotter) SnapshotTar(ctx context.Context, loc Location, r io.Reader) (res *Result, err error) {
	start := time.Now()
	defer func() {
		var st Stats
		if res != nil {
			st = res.Stats
		}
		s.cfg.Metrics.snapshotDone(time.Since(start).Seconds(), st, err)
	}()
	unlock := s.lock(loc)
	defer unlock()
	versions, err := s.versions(ctx, loc)
	if err != nil {
		return nil, err
	}
	up := &uploader{s: s, loc: loc, known: map[string]bool{}, flights: map[string]*flight{}}
	if len(versions) > 0 {
		prev, err := s.manifest(ctx, loc, versions[len(versions)-1])
		if err != nil {
			return nil, fmt.Errorf("read previous version: %w", err)
		}
		for _, e := range prev.Entries {
			if e.Type == File {
				up.known[e.SHA256] = true
			}
		}
	}
	m := &Manifest{Format: FormatVersion, StartedAt: s.cfg.Now().UTC()}
	var st Stats
	byPath := map[string]int{}
	add := func(e Entry) {
		if i, ok := byPath[e.Path]; ok {
			m.Entries[i] = e // a later entry for the same path wins, as in extraction
			return
		}
		byPath[e.Path] = len(m.Entries)
		m.Entries = append(m.Entries, e)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			g.Wait()
			return nil, errs.Wrap(errs.Invalid, err, "read workspace tar")
		}
		if gctx.Err() != nil {
			break
		}
		name := strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+hdr.Name), "/"), "/")
		if name == "" || ValidatePath(name) != nil || name != strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/") {
			if name != "" {
				st.Skipped++
			}
			continue
		}
		e := Entry{Path: name, Mode: uint32(hdr.Mode) & 0o7777, MTime: hdr.ModTime.UnixNano(), UID: uint32(hdr.Uid), GID: uint32(hdr.Gid)}
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.Type = Dir
			add(e)
		case tar.TypeSymlink:
			e.Type, e.Target, e.Mode = Symlink, hdr.Linkname, 0o777
			if e.Target == "" {
				st.Skipped++
				continue
			}
			add(e)
		case tar.TypeLink:
			i, ok := byPath[strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")]
			if !ok || m.Entries[i].Type != File {
				st.Skipped++
				continue
			}
			e = m.Entries[i] // its hash is known: files are hashed as they are read
			e.Path = name
			add(e)
		case tar.TypeReg:
			e.Type, e.Size = File, hdr.Size
			idx := len(m.Entries)
			if j, ok := byPath[name]; ok {
				idx = j
			}
			add(e)
			if err := s.tarFile(gctx, g, up, tr, hdr.Size, &m.Entries, idx); err != nil {
				g.Wait()
				return nil, err
			}
		default:
			st.Skipped++
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.Entries = addParents(m.Entries)
	sortEntries(m.Entries)
	for _, e := range m.Entries {
		switch e.Type {
		case File:
			if e.SHA256 == "" {
				return nil, errs.E(errs.Invalid, "workspace tar: hard link %q to a file whose content is unknown", e.Path)
			}
			st.Files++
			st.Bytes += e.Size
		case Dir:
			st.Dirs++
		case Symlink:
			st.Symlinks++
		}
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("workspace tar: %w", err)
	}
	st.HashedFiles = st.Files
	st.UploadedBlobs = int(up.blobs.Load())
	st.UploadedBytes = up.bytes.Load()
	st.DedupedBytes = max(st.Bytes-st.UploadedBytes, 0)
	m.Files, m.Bytes = st.Files, st.Bytes
	if err := s.writeManifest(ctx, loc, versions, m); err != nil {
		return nil, err
	}
	st.Duration = time.Since(start)
	return &Result{Manifest: m, Stats: st}, nil
}

// tarFile hashes one file from the tar stream (on the reading goroutine,
// so entries[idx] has its hash on return) and stores its blob in the
// background under g.
func (s *Snapshotter) tarFile(ctx context.Context, g *errgroup.Group, up *uploader, r io.Reader, size int64, entries *[]Entry, idx int) error {
	set := func(sha string) { (*entries)[idx].SHA256 = sha }
	if size <= s.cfg.SmallFile {
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return errs.Wrap(errs.Invalid, err, "read workspace tar")
		}
		sum := sha256.Sum256(buf)
		sha := hex.EncodeToString(sum[:])
		set(sha)
		g.Go(func() error {
			return up.ensure(ctx, sha, size, func(key string) (int64, error) {
				return size, up.loc.Store.Put(ctx, key, bytes.NewReader(buf), size)
			})
		})
		return nil
	}
	f, err := os.CreateTemp("", "techboss-snapshot-*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	os.Remove(f.Name()) // unlinked: vanishes when closed
	h := sha256.New()
	bp := s.bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(r, size), (*bp)[:min(len(*bp), 1<<20)])
	s.bufs.Put(bp)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		f.Close()
		if errs.NoSpace(err) { // the spool file, not the tar, failed
			return errs.Full(fmt.Errorf("spool: %w", err), "the server's temporary directory")
		}
		return errs.Wrap(errs.Invalid, err, "read workspace tar")
	}
	sha := hex.EncodeToString(h.Sum(nil))
	set(sha)
	g.Go(func() error {
		defer f.Close()
		return up.ensure(ctx, sha, size, func(key string) (int64, error) {
			return size, up.loc.Store.Put(ctx, key, io.NewSectionReader(f, 0, size), size)
		})
	})
	return nil
}

// addParents adds directory entries a tar left implicit.
func addParents(es []Entry) []Entry {
	have := make(map[string]bool, len(es))
	for _, e := range es {
		have[e.Path] = true
	}
	for _, e := range es {
		for p := parentOf(e.Path); p != "" && !have[p]; p = parentOf(p) {
			have[p] = true
			es = append(es, Entry{Path: p, Type: Dir, Mode: 0o755})
		}
	}
	return es
}

// RestoreTar writes version name as a tar stream (for sandbox.Archiver's
// ArchiveIn): directories, files with their content and modes, symlinks.
// It does not delete anything: the caller clears the workspace first.
func (s *Snapshotter) RestoreTar(ctx context.Context, loc Location, name string, w io.Writer) (err error) {
	start := time.Now()
	defer func() { s.cfg.Metrics.restoreDone("restore", time.Since(start).Seconds(), err) }()
	m, err := s.Manifest(ctx, loc, name)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range m.Entries {
		hdr := &tar.Header{Name: e.Path, Mode: int64(e.Mode), ModTime: time.Unix(0, e.MTime), Uid: int(e.UID), Gid: int(e.GID), Format: tar.FormatPAX}
		switch e.Type {
		case Dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.Path+"/"
		case Symlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Target
		case File:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.Type != File {
			continue
		}
		rc, err := loc.Store.Get(ctx, loc.blobKey(e.SHA256))
		if err != nil {
			if errors.Is(err, errs.ErrNotFound) {
				return errs.E(errs.Conflict, "restore: content of %q is missing from the store", e.Path)
			}
			return err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(rc, e.Size+1))
		rc.Close()
		if err != nil {
			return err
		}
		if n != e.Size || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
			return errs.E(errs.Conflict, "restore: stored content of %q does not match its hash", e.Path)
		}
	}
	return tw.Close()
}
