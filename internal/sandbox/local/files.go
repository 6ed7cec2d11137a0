package local

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/image"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/netns"
)

// SandboxPath validates an absolute path inside a sandbox and returns it
// relative to the sandbox root ("." for "/"). It refuses relative paths,
// NUL bytes and any ".." component, and the kernel interfaces /proc, /sys
// and /dev (the driver acts as host root; it must never write there).
// Symlinks are resolved later by os.Root, which refuses any that leave
// the root.
func SandboxPath(p string) (string, error) {
	if p == "" || !strings.HasPrefix(p, "/") {
		return "", errs.Field("path", "must be an absolute path inside the sandbox")
	}
	if strings.ContainsRune(p, 0) {
		return "", errs.Field("path", "must not contain NUL bytes")
	}
	if len(p) > 4096 {
		return "", errs.Field("path", "too long")
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", errs.Field("path", `must not contain ".."`)
		}
	}
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		return ".", nil
	}
	switch first, _, _ := strings.Cut(rel, "/"); first {
	case "proc", "sys", "dev":
		return "", errs.E(errs.Forbidden, "path: /%s is not accessible through the files API", first)
	}
	return rel, nil
}

// openRoot opens the running sandbox's root as seen by its processes
// (/proc/<init>/root: the overlay plus /workspace, /tmp and other mounts).
func (d *Driver) openRoot(ref sandbox.Ref) (*os.Root, *state, error) {
	s, err := d.get(ref)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	st := s.st
	gone := s.gone
	s.mu.Unlock()
	if gone || !st.alive() {
		return nil, nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
	}
	r, err := os.OpenRoot(st.rootPath())
	if err != nil {
		return nil, nil, errs.Wrap(errs.NotFound, err, "sandbox is not running")
	}
	// The PID could have been reused between the check and the open.
	if !st.alive() {
		_ = r.Close()
		return nil, nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
	}
	return r, &st, nil
}

// openPath is openRoot for the sandbox path p, checked and made relative
// to the root (see SandboxPath).
func (d *Driver) openPath(ref sandbox.Ref, p string) (*os.Root, *state, string, error) {
	rel, err := SandboxPath(p)
	if err != nil {
		return nil, nil, "", err
	}
	root, st, err := d.openRoot(ref)
	if err != nil {
		return nil, nil, "", err
	}
	return root, st, rel, nil
}

// fileError maps a filesystem error to a public one.
func fileError(p string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return errs.Wrap(errs.NotFound, err, "no such file: "+p)
	case errors.Is(err, fs.ErrExist):
		return errs.Wrap(errs.Conflict, err, "already exists: "+p)
	case errors.Is(err, syscall.ENOTDIR):
		return errs.Wrap(errs.Invalid, err, "not a directory: "+p)
	case errors.Is(err, syscall.EISDIR):
		return errs.Wrap(errs.Invalid, err, "is a directory: "+p)
	case errors.Is(err, syscall.ENOTEMPTY):
		return errs.Wrap(errs.Conflict, err, "directory not empty: "+p)
	case errors.Is(err, syscall.EBUSY):
		return errs.Wrap(errs.Conflict, err, "in use (a mount point): "+p)
	case errors.Is(err, image.ErrUnsafePath):
		return errs.Wrap(errs.Invalid, err, err.Error())
	case errs.NoSpace(err):
		// The sandbox's own disk image (disk_mb) is full: the user's quota,
		// not the host's, so a 4xx they can act on rather than a 507.
		return errs.Wrap(errs.TooLarge, err, "no space left on the sandbox's disk (disk_mb; free space in the sandbox or create it with a larger disk_mb): "+p)
	}
	if _, ok := errs.Public(err); ok {
		return err
	}
	// os.Root's refusals (symlinks leaving the root) and anything else.
	return errs.Wrap(errs.Forbidden, err, "path escapes the sandbox root or is not accessible: "+p)
}

// checkFS refuses files on kernel pseudo-filesystems reached via symlinks.
func checkFS(f *os.File, p string) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return fmt.Errorf("statfs %s: %w", p, err)
	}
	switch sfs.Type {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC, unix.DEBUGFS_MAGIC, unix.SECURITYFS_MAGIC:
		return errs.E(errs.Forbidden, "path: %s is on a kernel filesystem", p)
	}
	return nil
}

func fileInfo(name string, fi fs.FileInfo, target string) sandbox.FileInfo {
	t := "other"
	switch {
	case fi.Mode().IsRegular():
		t = "file"
	case fi.IsDir():
		t = "dir"
	case fi.Mode()&fs.ModeSymlink != 0:
		t = "symlink"
	}
	return sandbox.FileInfo{Name: name, Type: t, Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime(), Target: target}
}

// ReadFile copies a regular file from the sandbox to w.
func (d *Driver) ReadFile(ctx context.Context, ref sandbox.Ref, p string, w io.Writer) (sandbox.FileInfo, error) {
	root, _, rel, err := d.openPath(ref, p)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return sandbox.FileInfo{}, fileError(p, err)
	}
	defer f.Close()
	if err := checkFS(f, p); err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return sandbox.FileInfo{}, fileError(p, err)
	}
	if !fi.Mode().IsRegular() {
		return sandbox.FileInfo{}, errs.Field("path", "not a regular file")
	}
	info := fileInfo(path.Base(p), fi, "")
	if _, err := copyOverlapped(w, f); err != nil {
		return info, fmt.Errorf("read %s: %w", p, err)
	}
	return info, nil
}

// WriteFile creates or replaces a file (and its parent directories).
//
// A regular file (or a new one) is replaced atomically: the upload goes to
// a hidden file beside it, which then trades places with the old one
// (renameat2 RENAME_EXCHANGE), so a failed or cut upload leaves the old
// file as it was, and a reader in the sandbox never sees half a file. The
// exchange, unlike a rename over the old file or O_TRUNC, does not make
// ext4 write the new file's data back to disk there and then (its
// auto_da_alloc heuristics), which made a 256 MiB overwrite wait for the
// disk. A symlink is written through, in place, as before.
func (d *Driver) WriteFile(ctx context.Context, ref sandbox.Ref, p string, mode fs.FileMode, r io.Reader) (int64, error) {
	rel, err := SandboxPath(p)
	if err != nil {
		return 0, err
	}
	if rel == "." {
		return 0, errs.Field("path", "is the root directory")
	}
	root, st, err := d.openRoot(ref)
	if err != nil {
		return 0, err
	}
	closeRoot := true
	defer func() {
		if closeRoot {
			root.Close()
		}
	}()
	owner := sandboxOwner(root, st)
	dir, base := path.Split(rel)
	dir = path.Clean(dir + ".")
	if dir != "." {
		if err := mkdirAllOwned(root, dir, owner); err != nil {
			return 0, fileError(p, err)
		}
	}
	if mode == 0 {
		mode = 0o644
	}
	if fi, err := root.Lstat(rel); err == nil && !fi.Mode().IsRegular() {
		if fi.IsDir() {
			return 0, errs.Field("path", "is a directory")
		}
		return writeInPlace(root, rel, p, mode, owner, r)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fileError(p, err)
	}
	tmp := path.Join(dir, "."+base+".techboss-upload-"+rand.Text()[:12])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return 0, fileError(p, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			_ = root.Remove(tmp)
		}
	}()
	n, err := fillFile(f, p, mode, owner, r)
	if err != nil {
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, writeError(p, err)
	}
	exchanged, err := swapInto(root, dir, path.Base(tmp), base)
	if err != nil {
		return n, fileError(p, err)
	}
	done = true
	if exchanged {
		// The old file is at tmp now. It goes in the background: unlinking
		// it frees its page cache, 30-40 ms for 256 MiB that the upload's
		// caller need not wait for (Close waits).
		closeRoot = false
		d.bg.Go(func() {
			defer root.Close()
			_ = root.Remove(tmp)
		})
	}
	return n, nil
}

// writeInPlace truncates and writes the file at rel (following a symlink
// inside the sandbox).
func writeInPlace(root *os.Root, rel, p string, mode fs.FileMode, owner *[2]int, r io.Reader) (int64, error) {
	f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode.Perm())
	if err != nil {
		return 0, fileError(p, err)
	}
	defer f.Close()
	n, err := fillFile(f, p, mode, owner, r)
	if err != nil {
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, writeError(p, err)
	}
	return n, nil
}

// fillFile sets f's mode and owner and copies r into it.
func fillFile(f *os.File, p string, mode fs.FileMode, owner *[2]int, r io.Reader) (int64, error) {
	if err := checkFS(f, p); err != nil {
		return 0, err
	}
	if err := f.Chmod(mode.Perm()); err != nil {
		return 0, fileError(p, err)
	}
	if owner != nil {
		if err := f.Chown(owner[0], owner[1]); err != nil {
			return 0, fileError(p, err)
		}
	}
	n, err := copyOverlapped(f, r)
	if err != nil {
		return n, writeError(p, err)
	}
	return n, nil
}

// writeError classifies a failed write of p's content: the sandbox's disk
// full is fileError's 413 naming disk_mb; anything else (the request body
// failing, say) keeps its own kind.
func writeError(p string, err error) error {
	if errs.NoSpace(err) {
		return fileError(p, err)
	}
	return fmt.Errorf("write %s: %w", p, err)
}

// swapInto puts dir/from at dir/to: it exchanges the two when to exists
// (from is then the old file, and exchanged is true), else renames without
// replacing. Both names are single components resolved against dir's
// descriptor, opened inside root, so neither can lead outside the sandbox.
func swapInto(root *os.Root, dir, from, to string) (exchanged bool, err error) {
	d, err := root.Open(dir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	rc, err := d.SyscallConn()
	if err != nil {
		return false, err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		for range 3 { // the target may come or go between the two calls
			opErr = unix.Renameat2(int(fd), from, int(fd), to, unix.RENAME_EXCHANGE)
			if opErr == nil {
				exchanged = true
				return
			}
			if !errors.Is(opErr, unix.ENOENT) {
				break
			}
			opErr = unix.Renameat2(int(fd), from, int(fd), to, unix.RENAME_NOREPLACE)
			if !errors.Is(opErr, unix.EEXIST) {
				break
			}
		}
		if errors.Is(opErr, unix.EINVAL) || errors.Is(opErr, unix.ENOSYS) {
			// A filesystem without renameat2 flags: a plain rename is
			// still atomic.
			opErr = unix.Renameat(int(fd), from, int(fd), to)
		}
	})
	return exchanged, errors.Join(err, opErr)
}

// Remove deletes a file, symlink or directory tree.
func (d *Driver) Remove(ctx context.Context, ref sandbox.Ref, p string) error {
	rel, err := SandboxPath(p)
	if err != nil {
		return err
	}
	if rel == "." {
		return errs.Field("path", "cannot remove the root directory")
	}
	root, _, err := d.openRoot(ref)
	if err != nil {
		return err
	}
	defer root.Close()
	if _, err := root.Lstat(rel); err != nil {
		return fileError(p, err)
	}
	return fileError(p, root.RemoveAll(rel))
}

// ListDir lists a directory without following entries' symlinks.
func (d *Driver) ListDir(ctx context.Context, ref sandbox.Ref, dir string) ([]sandbox.FileInfo, error) {
	root, _, rel, err := d.openPath(ref, dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, fileError(dir, err)
	}
	defer f.Close()
	if err := checkFS(f, dir); err != nil {
		return nil, err
	}
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fileError(dir, err)
	}
	out := make([]sandbox.FileInfo, 0, len(ents))
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ = root.Readlink(path.Join(rel, e.Name()))
		}
		out = append(out, fileInfo(e.Name(), fi, target))
	}
	return out, nil
}

// Stat describes a path without following a final symlink.
func (d *Driver) Stat(ctx context.Context, ref sandbox.Ref, p string) (sandbox.FileInfo, error) {
	root, _, rel, err := d.openPath(ref, p)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	if err != nil {
		return sandbox.FileInfo{}, fileError(p, err)
	}
	target := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ = root.Readlink(rel)
	}
	return fileInfo(path.Base("/"+rel), fi, target), nil
}

// ArchiveOut writes a tar of the file or directory tree at p (entries
// relative to p; symlinks stored, not followed). Kernel filesystems
// mounted in the tree (the sandbox's /proc, /dev/pts) appear as empty
// directories: the driver reads as host root, and they are not the
// sandbox's files. A file that grows or shrinks while it is read is
// stored at the size it had when opened (padded with zeros, as tar does).
func (d *Driver) ArchiveOut(ctx context.Context, ref sandbox.Ref, p string, w io.Writer) error {
	root, _, rel, err := d.openPath(ref, p)
	if err != nil {
		return err
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	if err != nil {
		return fileError(p, err)
	}
	tw := tar.NewWriter(w)
	buf := make([]byte, copyBuf)
	if !fi.IsDir() {
		if err := addTar(ctx, tw, root, rel, path.Base(rel), fi, buf); err != nil {
			return err
		}
		return tw.Close()
	}
	sub, err := root.OpenRoot(rel)
	if err != nil {
		return fileError(p, err)
	}
	defer sub.Close()
	if kernel, err := onKernelFS(sub, "."); err != nil || kernel {
		if err == nil {
			err = errs.E(errs.Forbidden, "path: %s is on a kernel filesystem", p)
		}
		return fileError(p, err)
	}
	err = fs.WalkDir(sub.FS(), ".", func(name string, de fs.DirEntry, err error) error {
		// What went away since it was listed (a build's temporary file)
		// is left out, as tar does, rather than failing the archive.
		if errors.Is(err, fs.ErrNotExist) && name != "." {
			return nil
		}
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := addTar(ctx, tw, sub, name, name, fi, buf); errors.Is(err, fs.ErrNotExist) {
			return nil // nothing written for it yet
		} else if err != nil {
			return err
		}
		if fi.IsDir() {
			if kernel, err := onKernelFS(sub, name); err != nil {
				return err
			} else if kernel {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return fileError(p, err)
	}
	return tw.Close()
}

// onKernelFS reports whether the directory name in root is on a kernel
// filesystem (see checkFS).
func onKernelFS(root *os.Root, name string) (bool, error) {
	f, err := root.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := checkFS(f, name); err != nil {
		if _, ok := errs.Public(err); ok {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// addTar writes the entry for name (described by fi, from the walk) to tw.
// A regular file's content comes only from the file the walk saw (os.Root
// would follow a symlink the sandbox put in its place since), which must
// not be on a kernel filesystem; its header from the file as opened.
func addTar(ctx context.Context, tw *tar.Writer, root *os.Root, name, entry string, fi fs.FileInfo, buf []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	link := ""
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for try := 0; ; try++ {
		if fi.Mode()&fs.ModeSymlink != 0 {
			var err error
			if link, err = root.Readlink(name); err != nil {
				return err
			}
			break
		}
		if fi.IsDir() {
			break
		}
		if !fi.Mode().IsRegular() {
			return nil // sockets, devices, fifos
		}
		var err error
		if f, err = root.Open(name); err != nil {
			return err
		}
		got, err := f.Stat()
		if err != nil {
			return err
		}
		if os.SameFile(fi, got) {
			if err := checkFS(f, entry); err != nil {
				return err
			}
			fi = got
			break
		}
		// Replaced since it was listed (an editor's save, or a race): look again.
		f.Close()
		f = nil
		if try == 2 {
			return fmt.Errorf("%s: %w", entry, errChanging)
		}
		if fi, err = root.Lstat(name); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = entry
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if f == nil {
		return nil
	}
	n, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
	if err != nil {
		return err
	}
	if n < hdr.Size { // it shrank while being read
		_, err = io.CopyBuffer(tw, io.LimitReader(zeroReader{}, hdr.Size-n), buf)
	}
	return err
}

// errChanging reports a file replaced again and again while being archived.
var errChanging = errors.New("keeps being replaced while it is archived")

// zeroReader reads as an endless run of zero bytes.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// ArchiveIn extracts a tar stream into the directory p (created if
// missing). Entries escaping p (.., absolute climbs, symlinks) are refused.
// It is all or nothing (see extractAll): a refused or broken archive leaves
// p as it was, and p is removed again if ArchiveIn created it.
func (d *Driver) ArchiveIn(ctx context.Context, ref sandbox.Ref, p string, r io.Reader) error {
	root, st, rel, err := d.openPath(ref, p)
	if err != nil {
		return err
	}
	defer root.Close()
	owner := sandboxOwner(root, st)
	var created []string // the directories of rel made here, outermost first
	if rel != "." {
		parts := strings.Split(rel, "/")
		for i := range parts {
			dir := strings.Join(parts[:i+1], "/")
			if _, err := root.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
				created = append(created, dir)
			}
		}
		if err := mkdirAllOwned(root, rel, owner); err != nil {
			return fileError(p, err)
		}
	}
	sub, err := root.OpenRoot(rel)
	if err == nil {
		err = extractAll(sub, r, owner)
		sub.Close()
	}
	if err != nil {
		// Remove only what is still empty: the sandbox may have used it.
		for i := len(created) - 1; i >= 0; i-- {
			_ = root.Remove(created[i])
		}
		return archiveError(p, err)
	}
	return nil
}

// sandboxOwner resolves the sandbox's default user (the image's USER) to
// host uid/gid through the sandbox's own /etc/passwd and its id map; nil
// when files the server creates need no chown (root, no user namespace).
func sandboxOwner(root *os.Root, st *state) *[2]int {
	u := st.User
	if u == "" || u == "root" || u == "0" {
		u = "0"
	}
	name, group, _ := strings.Cut(u, ":")
	uid, gid := -1, -1
	if n, err := strconv.Atoi(name); err == nil {
		uid, gid = n, n
	}
	if b, err := readBounded(root, "etc/passwd"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 4 && (f[0] == name || f[2] == name) {
				uid, _ = strconv.Atoi(f[2])
				gid, _ = strconv.Atoi(f[3])
				break
			}
		}
	}
	if group != "" {
		if n, err := strconv.Atoi(group); err == nil {
			gid = n
		} else if b, err := readBounded(root, "etc/group"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Split(line, ":"); len(f) >= 3 && f[0] == group {
					gid, _ = strconv.Atoi(f[2])
				}
			}
		}
	}
	if uid <= 0 {
		uid, gid = 0, 0
	}
	if gid < 0 {
		gid = uid
	}
	if uid == 0 && st.IDs.Identity() {
		return nil // files the server creates are root's already
	}
	return &[2]int{int(st.IDs.ToHost(uint32(uid))), int(st.IDs.ToHost(uint32(gid)))}
}

// readBounded reads a small sandbox file (a passwd or group database) of at
// most 1 MiB: the sandbox writes these, and a huge one must not cost the
// server its memory.
func readBounded(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// mkdirAllOwned creates dir and missing parents, giving new ones to owner.
func mkdirAllOwned(root *os.Root, dir string, owner *[2]int) error {
	if owner == nil {
		return root.MkdirAll(dir, 0o755)
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		err := root.Mkdir(p, 0o755)
		if err == nil {
			if err := root.Lchown(p, owner[0], owner[1]); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// WorkspaceDir returns the host directory bound at the sandbox's /workspace.
func (d *Driver) WorkspaceDir(ref sandbox.Ref) (string, sandbox.IDMap, error) {
	s, err := d.get(ref)
	if err != nil {
		return "", sandbox.IDMap{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Workspace, s.st.IDs, nil
}

// Listen opens a TCP listener inside the sandbox's network namespace. The
// socket is created on a thread that entered the namespace; that thread is
// never returned to the Go scheduler (the goroutine exits locked), so no
// other code ever runs in the sandbox's namespace.
func (d *Driver) Listen(ctx context.Context, ref sandbox.Ref, addr string) (net.Listener, error) {
	s, err := d.get(ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	if !st.alive() {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
	}
	nsf, err := os.Open("/proc/" + strconv.Itoa(st.nsPID()) + "/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open sandbox network namespace: %w", err)
	}
	defer nsf.Close()
	var l net.Listener
	err = netns.Do(int(nsf.Fd()), func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in sandbox: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		_ = l.Close()
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "sandbox is not running")
	}
	s.listeners = append(s.listeners, l)
	return l, nil
}
