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
	"time"
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
// are refused, never followed.
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
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("extract %s: %w", hdr.Name, err)
				}
			}
			dirs = append(dirs, dirTime{name, hdr.ModTime})
		case tar.TypeReg, tar.TypeRegA: //lint:ignore SA1019 old image layers still carry '\x00' regular-file headers
			total += hdr.Size
			if o.MaxBytes > 0 && total > o.MaxBytes {
				return fmt.Errorf("archive larger than %d bytes", o.MaxBytes)
			}
			if fi, err := root.Lstat(name); err == nil && !fi.Mode().IsRegular() {
				if err := root.RemoveAll(name); err != nil {
					return fmt.Errorf("extract %s: %w", hdr.Name, err)
				}
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			_, err = io.CopyBuffer(f, tr, make([]byte, 256<<10))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := root.RemoveAll(name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
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
			continue
		default:
			// Devices, FIFOs and the like are not needed in a rootfs
			// (bubblewrap provides /dev) and are skipped.
			continue
		}
		if o.Owners {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		} else if o.ChownTo != nil {
			if err := root.Lchown(name, o.ChownTo[0], o.ChownTo[1]); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := root.Chmod(name, mode); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			if hdr.Typeflag != tar.TypeDir && !hdr.ModTime.IsZero() {
				_ = root.Chtimes(name, hdr.ModTime, hdr.ModTime)
			}
		}
	}
	// Directory times last: creating their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if !dirs[i].t.IsZero() {
			_ = root.Chtimes(dirs[i].name, dirs[i].t, dirs[i].t)
		}
	}
	return nil
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
