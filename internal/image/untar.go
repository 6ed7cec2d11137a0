package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UntarOptions adjusts Untar.
type UntarOptions struct {
	// Owners keeps the archive's uid/gid (needs root); otherwise files
	// belong to the caller.
	Owners bool
	// MaxBytes bounds the total size of regular files (0: unlimited).
	MaxBytes int64
	// ChrootSymlinks resolves symlinks in entries' parent directories as a
	// chroot into root would (absolute targets are root-relative, ".."
	// stops at root) instead of refusing those pointing outside: image
	// layers routinely contain absolute links such as /var/run -> /run.
	ChrootSymlinks bool
	// ChownTo, when set (and Owners is not), gives every extracted entry
	// this uid/gid: the sandbox user's, so it can change what it received.
	ChownTo *[2]int
	// ShiftIDs, when set, maps every owner Untar gives an entry (the
	// archive's with Owners, ChownTo's, or else root's 0:0) to the host ids
	// stored on disk: the ToHost of the user namespace of the sandbox that
	// will use the tree (needs root). nil: no shift, and with neither Owners
	// nor ChownTo entries belong to the caller.
	ShiftIDs func(uid, gid int) (int, int)
}

// owner returns the owner to give an entry of hdr, if any.
func (o UntarOptions) owner(hdr *tar.Header) (uid, gid int, ok bool) {
	switch {
	case o.Owners:
		uid, gid = hdr.Uid, hdr.Gid
	case o.ChownTo != nil:
		uid, gid = o.ChownTo[0], o.ChownTo[1]
	case o.ShiftIDs == nil:
		return 0, 0, false
	}
	if o.ShiftIDs != nil {
		uid, gid = o.ShiftIDs(uid, gid)
	}
	return uid, gid, true
}

// ErrUnsafePath is returned for archive entries that would land outside
// the target (tar-slip: "..", absolute names, links through symlinks).
var ErrUnsafePath = errors.New("archive entry escapes the target directory")

// cleanEntry turns an archive member name into a root-relative path, or
// reports it as unsafe. Absolute names are taken relative to the target
// (as tar does by default), but no component may be "..".
func cleanEntry(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	name = strings.TrimLeft(name, "/")
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
		}
	}
	p := path.Clean(name)
	if p == "." || p == "" {
		return ".", nil
	}
	return p, nil
}

// Untar extracts the tar stream r into root. Every path is resolved by
// os.Root: ".." components, absolute names climbing out, and symlinks
// (including ones the archive itself just created) that point outside root
// are refused, never followed. An entry's own name is never written
// through: whatever is there (a symlink, a hard link to another file, a
// file where a directory goes) is replaced, a regular file's content goes
// into a file Untar created and its owner, mode and time are set through
// its fd, a directory's through a handle checked to be that directory.
// So a sandbox racing an extraction into its own tree can at most make it
// fail.
func Untar(root *os.Root, r io.Reader, o UntarOptions) error {
	tr := tar.NewReader(r)
	var total int64
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name, err := cleanEntry(hdr.Name)
		if err != nil {
			return err
		}
		if o.ChrootSymlinks {
			if name, err = resolveParents(root, name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		}
		if name == "." && hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: %q", ErrUnsafePath, hdr.Name)
		}
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		}
		mode := fs.FileMode(hdr.Mode).Perm() | modeBits(hdr.Mode)
		uid, gid, chown := o.owner(hdr)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
					if err := root.RemoveAll(name); err != nil {
						return fmt.Errorf("extract %s: %w", hdr.Name, err)
					}
				}
				if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("extract %s: %w", hdr.Name, err)
				}
			}
			d, err := openDir(root, name)
			if err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if chown {
				err = d.Lchown(".", uid, gid)
			}
			if err == nil {
				err = d.Chmod(".", mode)
			}
			d.Close()
			if err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			dirs = append(dirs, dirTime{name, hdr.ModTime})
		case tar.TypeReg, tar.TypeRegA: //lint:ignore SA1019 old image layers still carry '\x00' regular-file headers
			total += hdr.Size
			if o.MaxBytes > 0 && total > o.MaxBytes {
				return fmt.Errorf("archive larger than %d bytes", o.MaxBytes)
			}
			if err := writeFile(root, name, tr, hdr, mode, chown, uid, gid); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := root.RemoveAll(name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if chown {
				if err := root.Lchown(name, uid, gid); err != nil {
					return fmt.Errorf("extract %s: %w", hdr.Name, err)
				}
			}
		case tar.TypeLink:
			target, err := cleanEntry(hdr.Linkname)
			if err != nil {
				return err
			}
			if err := root.RemoveAll(name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		default:
			// Devices, FIFOs and the like are not needed in a rootfs
			// (bubblewrap provides /dev) and are skipped.
		}
	}
	// Directory times last: creating their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if dirs[i].t.IsZero() {
			continue
		}
		if d, err := openDir(root, dirs[i].name); err == nil {
			_ = d.Chtimes(".", dirs[i].t, dirs[i].t)
			d.Close()
		}
	}
	return nil
}

// writeFile extracts a regular file: whatever is at name is removed and a
// new file created (O_EXCL never follows a symlink), so the content never
// goes through an entry that was there, e.g. a symlink or a hard link to
// another file. Owner, mode and time are set through the fd.
func writeFile(root *os.Root, name string, r io.Reader, hdr *tar.Header, mode fs.FileMode, chown bool, uid, gid int) error {
	if err := root.RemoveAll(name); err != nil {
		return err
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(f, r, make([]byte, 256<<10))
	if err == nil && chown {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		err = f.Chmod(mode) // after chown, which clears setuid/setgid
	}
	if err == nil && !hdr.ModTime.IsZero() {
		_ = setTimes(f, hdr.ModTime)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openDir opens directory name in root for changing its metadata, checking
// the handle is the directory Lstat saw there (not a symlink's target).
func openDir(root *os.Root, name string) (*os.Root, error) {
	if name == "." {
		return root.OpenRoot(".")
	}
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

// setTimes sets the access and modification times of the open file f
// (futimens: through the fd, not a name).
func setTimes(f *os.File, tm time.Time) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
	c, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		// utimensat(fd, NULL, ...) is futimens; x/sys/unix has no wrapper
		// that passes a NULL path.
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, fd, 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if e != 0 {
			serr = e
		}
	}); err != nil {
		return err
	}
	return serr
}

// resolveParents rewrites name so that no parent component is a symlink,
// following links with chroot semantics inside root. The result is still
// used through os.Root, which refuses anything that would leave it.
func resolveParents(root *os.Root, name string) (string, error) {
	parts := strings.Split(name, "/")
	var done []string
	hops := 0
	for len(parts) > 1 {
		cur := path.Join(append(append([]string{}, done...), parts[0])...)
		fi, err := root.Lstat(cur)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, parts[0])
			parts = parts[1:]
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%w: too many symlinks in %q", ErrUnsafePath, name)
		}
		target, err := root.Readlink(cur)
		if err != nil {
			return "", err
		}
		var base []string
		if !strings.HasPrefix(target, "/") {
			base = done
		}
		// Clean with chroot semantics: ".." at the root stays at the root.
		joined := path.Clean("/" + path.Join(append(append([]string{}, base...), target)...))
		done = nil
		if joined != "/" {
			done = strings.Split(strings.TrimPrefix(joined, "/"), "/")
		}
		parts = parts[1:]
	}
	out := path.Join(append(done, parts...)...)
	if out == "" {
		out = "."
	}
	return out, nil
}

func modeBits(m int64) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}
