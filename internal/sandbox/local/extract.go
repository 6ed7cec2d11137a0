package local

import (
	"archive/tar"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/image"
)

// stagePrefix names the hidden directory an archive is extracted into
// before it is moved into place (see extractAll).
const stagePrefix = ".techboss-extract-"

// extractAll extracts the tar stream r into dst all or nothing: first into
// a hidden staging directory inside dst (same filesystem, so moving is a
// rename), and only once the whole stream has extracted cleanly are the
// entries moved into place: a directory merges into an existing one (which
// keeps its mode, owner and times), anything else replaces what is there,
// symlinks included, never written through. If extraction fails, the
// staging directory goes and dst is as it was. Moving in can still fail
// part-way (a mount point in the way, a full disk), leaving what was moved.
//
// The sandbox can see the staging directory and race us in it; every
// access goes through dst, an os.Root, so at worst it spoils its own
// upload. owner, when set, gets every entry, including the parents the
// archive implies without listing them.
func extractAll(dst *os.Root, r io.Reader, owner *[2]int) error {
	stage := stagePrefix + rand.Text()[:12]
	if err := dst.Mkdir(stage, 0o700); err != nil {
		return err
	}
	defer func() { _ = dst.RemoveAll(stage) }()
	sr, err := openDirChecked(dst, stage)
	if err != nil {
		return err
	}
	body := &recordingReader{r: r}
	err = image.Untar(sr, body, image.UntarOptions{ChownTo: owner})
	if err == nil && owner != nil {
		err = chownImplied(sr, owner)
	}
	sr.Close()
	if err != nil {
		return archiveReadError(err, body.err)
	}
	return mergeInto(dst, stage, ".")
}

// recordingReader remembers the first error of the stream it reads, to
// tell a failing upload from a bad archive.
type recordingReader struct {
	r   io.Reader
	err error
}

func (b *recordingReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// errNotTar and errTruncatedTar classify a body that is not a whole tar
// stream, errBody one that could not be read.
var (
	errNotTar       = errors.New("body is not a tar stream")
	errTruncatedTar = errors.New("truncated tar stream")
	errBody         = errors.New("read archive")
)

// archiveReadError tells apart what the upload's reader failed with
// (returned as is: the caller knows its body), a body that is not a tar
// stream, and extraction errors.
func archiveReadError(err, readErr error) error {
	switch {
	case readErr != nil && !errors.Is(readErr, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %w", errBody, readErr)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("%w: %w", errNotTar, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %w", errTruncatedTar, err)
	}
	return err
}

// archiveError maps an extraction error to a public one.
func archiveError(p string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNotTar):
		return errs.Wrap(errs.Invalid, err, "archive: the body is not a tar stream")
	case errors.Is(err, errTruncatedTar):
		return errs.Wrap(errs.Invalid, err, "archive: truncated tar stream")
	case errors.Is(err, errBody):
		return err // the caller's reader's own error (a size limit, a cut upload)
	}
	return fileError(p, err)
}

// openDirChecked opens the directory name in root, checking the handle is
// the directory Lstat saw there and not where a symlink swapped in since
// leads.
func openDirChecked(root *os.Root, name string) (*os.Root, error) {
	fi, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s: %w", name, syscall.ENOTDIR)
	}
	d, err := root.OpenRoot(name)
	if err != nil {
		return nil, err
	}
	if got, err := d.Lstat("."); err != nil || !os.SameFile(fi, got) {
		d.Close()
		return nil, fmt.Errorf("%s changed while being extracted", name)
	}
	return d, nil
}

// chownImplied gives owner the directories Untar created for entries whose
// parents the archive does not list (it creates those as the driver).
func chownImplied(stage *os.Root, owner *[2]int) error {
	return fs.WalkDir(stage.FS(), ".", func(name string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." || !de.IsDir() {
			return nil
		}
		// Lchown: never through a symlink the sandbox swapped in.
		return stage.Lchown(name, owner[0], owner[1])
	})
}

// mergeInto moves the entries of stage/rel in dst to rel: a directory
// whose place holds a directory (not a symlink to one) is merged into it,
// anything else takes the place of what is there.
func mergeInto(dst *os.Root, stage, rel string) error {
	from := path.Join(stage, rel)
	d, err := dst.Open(from)
	if err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		to := path.Join(rel, e.Name())
		if e.IsDir() {
			if fi, err := dst.Lstat(to); err == nil && fi.IsDir() {
				if err := mergeInto(dst, stage, to); err != nil {
					return err
				}
				continue
			}
		}
		if err := moveEntry(dst, path.Join(from, e.Name()), to); err != nil {
			return fmt.Errorf("move %s into place: %w", to, err)
		}
	}
	return nil
}

// moveEntry puts the entry at from in place of to (both in dst). Across
// filesystems (a mount point inside the target), it copies the entry to a
// hidden name beside to first.
func moveEntry(dst *os.Root, from, to string) error {
	err := placeEntry(dst, from, to)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	tmp := path.Join(path.Dir(to), stagePrefix+rand.Text()[:12])
	if err := copyEntry(dst, from, tmp); err != nil {
		_ = dst.RemoveAll(tmp)
		return err
	}
	if err := placeEntry(dst, tmp, to); err != nil {
		_ = dst.RemoveAll(tmp)
		return err
	}
	// Whatever to held is at tmp now (or nothing is).
	return dst.RemoveAll(tmp)
}

// placeEntry renames from to to without replacing, or, when to exists,
// exchanges the two (renameat2 RENAME_EXCHANGE: a file for a directory
// too), leaving the old entry at from. Each name's last component is
// resolved against its parent directory's descriptor, opened in dst, and
// never followed.
func placeEntry(dst *os.Root, from, to string) error {
	fd, err := dst.Open(path.Dir(from))
	if err != nil {
		return err
	}
	defer fd.Close()
	td, err := dst.Open(path.Dir(to))
	if err != nil {
		return err
	}
	defer td.Close()
	ffd, tfd := int(fd.Fd()), int(td.Fd())
	fromName, toName := path.Base(from), path.Base(to)
	for range 3 { // the target may come or go between the two calls
		err = unix.Renameat2(ffd, fromName, tfd, toName, unix.RENAME_NOREPLACE)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		err = unix.Renameat2(ffd, fromName, tfd, toName, unix.RENAME_EXCHANGE)
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return err
}

// copyEntry copies the tree at from to the new name to (both in dst),
// keeping modes, owners and modification times; symlinks are copied, not
// followed.
func copyEntry(dst *os.Root, from, to string) error {
	fi, err := dst.Lstat(from)
	if err != nil {
		return err
	}
	uid, gid := -1, -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(st.Uid), int(st.Gid)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := dst.Readlink(from)
		if err != nil {
			return err
		}
		if err := dst.Symlink(target, to); err != nil {
			return err
		}
		return dst.Lchown(to, uid, gid)
	case fi.IsDir():
		if err := dst.Mkdir(to, 0o700); err != nil {
			return err
		}
		d, err := dst.Open(from)
		if err != nil {
			return err
		}
		ents, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := copyEntry(dst, path.Join(from, e.Name()), path.Join(to, e.Name())); err != nil {
				return err
			}
		}
		nd, err := openDirChecked(dst, to)
		if err != nil {
			return err
		}
		defer nd.Close()
		if err := nd.Lchown(".", uid, gid); err != nil {
			return err
		}
		if err := nd.Chmod(".", fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		return nd.Chtimes(".", fi.ModTime(), fi.ModTime())
	case fi.Mode().IsRegular():
		// os.Root follows a symlink the sandbox may have swapped in since
		// Lstat: only the file Lstat saw is copied, never, say, a file
		// on the sandbox's /proc read as host root.
		src, err := dst.Open(from)
		if err != nil {
			return err
		}
		defer src.Close()
		if got, err := src.Stat(); err != nil || !os.SameFile(fi, got) {
			return fmt.Errorf("%s changed while being extracted", from)
		}
		if err := checkFS(src, from); err != nil {
			return err
		}
		f, err := dst.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(f, struct{ io.Reader }{src}, make([]byte, copyBuf))
		if err == nil {
			err = f.Chown(uid, gid)
		}
		if err == nil { // after chown, which clears setuid/setgid
			err = f.Chmod(fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
		}
		if err == nil {
			tv := unix.NsecToTimeval(fi.ModTime().UnixNano())
			err = unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv})
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return nil // Untar makes nothing else
}
