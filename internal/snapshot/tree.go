package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
)

// tree is a handle on one directory of a tree a sandbox can write to (a
// workspace): the only way this package touches such a tree (see the
// package comment). Every operation names a single entry of the directory
// the handle holds, so no path string is ever resolved from the top:
//
//   - the handle is an os.Root, which keeps every access beneath it even
//     when an entry is swapped for a symlink out of the tree mid-call;
//   - a subdirectory is entered (sub, dir, walk) only after Lstat says it
//     is one, and the handle opened is checked to be that same directory,
//     so a symlink swapped in, even one pointing inside the tree, is never
//     followed;
//   - file content is read (openFile) and metadata set through an fd
//     checked to be the regular file Lstat saw at that name;
//   - an entry that changes under us fails with errMoved (errs.Conflict):
//     callers skip it or fail, they never retry through the path.
//
// A handle kept open (a cursor's, a walk's) may end up at another path if
// the sandbox renames the directory, but never outside the tree: the
// sandbox sees the tree through a mount, and rename across mounts fails
// (EXDEV). os.Root does not stop at mount points; the sandbox's own mounts
// live in its mount namespace and do not propagate to the host's.
//
// A tree is safe for concurrent use. Handles are reference counted: hold
// takes a reference for another goroutine, Close drops one, and the
// directory is closed with the last.
type tree struct {
	r    *os.Root
	rel  string // this directory's path from the top handle ("" at the top)
	refs atomic.Int32
}

// errMoved marks an entry that changed while we used it: replaced by a
// symlink or by another file or directory.
var errMoved = errors.New("changed while in use")

// moved returns errMoved for the entry at rel as a public conflict.
func moved(rel string) error {
	return errs.Wrap(errs.Conflict, errMoved,
		fmt.Sprintf("%q changed while it was in use (replaced, e.g. by a symlink); it was left alone", rel))
}

// maxDepth bounds how deep a walk goes (and so how many directory handles
// it holds): a manifest path of at most 4096 bytes has at most 2048
// components.
const maxDepth = 2048

// openTree opens the directory dir, a host path whose own components are
// the host's: only dir's content is the sandbox's. dir must be a directory,
// not a symlink to one.
func openTree(dir string) (*tree, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, errs.E(errs.Invalid, "%s is not a directory", dir)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	if got, err := r.Lstat("."); err != nil || !os.SameFile(fi, got) {
		r.Close()
		return nil, errs.E(errs.Conflict, "%s changed while it was being opened", dir)
	}
	t := &tree{r: r}
	t.refs.Store(1)
	return t, nil
}

// hold takes another reference to t, for a goroutine that Closes it.
func (t *tree) hold() *tree {
	t.refs.Add(1)
	return t
}

// Close drops a reference; the last closes the directory.
func (t *tree) Close() error {
	if t.refs.Add(-1) == 0 {
		return t.r.Close()
	}
	return nil
}

// path returns the path of entry name from the top handle.
func (t *tree) path(name string) string {
	if t.rel == "" {
		return name
	}
	return t.rel + "/" + name
}

// entry checks name is one entry of a directory: never "", ".", ".." or a
// path with a separator, which would make os.Root resolve a path.
func entry(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%w: %q is not a directory entry", fs.ErrInvalid, name)
	}
	return nil
}

// enter opens the subdirectory name that Lstat described as fi, checking
// the handle opened is that very directory.
func (t *tree) enter(name string, fi fs.FileInfo) (*tree, error) {
	if err := entry(name); err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, moved(t.path(name))
	}
	r, err := t.r.OpenRoot(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, err
		}
		// Now a symlink out of the tree (os.Root refuses it), or a file.
		return nil, moved(t.path(name))
	}
	if got, err := r.Lstat("."); err != nil || !os.SameFile(fi, got) {
		r.Close()
		return nil, moved(t.path(name))
	}
	sub := &tree{r: r, rel: t.path(name)}
	sub.refs.Store(1)
	return sub, nil
}

// sub opens the subdirectory name without following a symlink.
func (t *tree) sub(name string) (*tree, error) {
	fi, err := t.lstat(name)
	if err != nil {
		return nil, err
	}
	return t.enter(name, fi)
}

// dir opens the directory at rel below t (t itself for ""), one component
// at a time, following no symlink.
func (t *tree) dir(rel string) (*tree, error) {
	cur := t.hold()
	if rel == "" {
		return cur, nil
	}
	for name := range strings.SplitSeq(rel, "/") {
		next, err := cur.sub(name)
		cur.Close()
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

// mkdirs is dir, creating missing directories with mode perm (before
// umask). An existing component that is not a directory is a conflict.
func (t *tree) mkdirs(rel string, perm fs.FileMode) (*tree, error) {
	cur := t.hold()
	if rel == "" {
		return cur, nil
	}
	for name := range strings.SplitSeq(rel, "/") {
		next, err := cur.sub(name)
		if errors.Is(err, fs.ErrNotExist) {
			if err = cur.mkdir(name, perm); err == nil || errors.Is(err, fs.ErrExist) {
				next, err = cur.sub(name)
			}
		}
		cur.Close()
		if err != nil {
			if errors.Is(err, errMoved) {
				return nil, errs.Wrap(errs.Conflict, err, fmt.Sprintf("%q runs through a file or symlink", rel))
			}
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

// lstat describes entry name without following it.
func (t *tree) lstat(name string) (fs.FileInfo, error) {
	if err := entry(name); err != nil {
		return nil, err
	}
	return t.r.Lstat(name)
}

// readlink returns the target of symlink name (recorded, never followed).
func (t *tree) readlink(name string) (string, error) {
	if err := entry(name); err != nil {
		return "", err
	}
	return t.r.Readlink(name)
}

// openFile opens the regular file name for reading, never through a
// symlink, and returns its fstat. Anything else at name (now) is errMoved.
func (t *tree) openFile(name string) (*os.File, fs.FileInfo, error) {
	fi, err := t.lstat(name)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, moved(t.path(name))
	}
	// O_NONBLOCK: a FIFO swapped in must not block the open.
	f, err := t.r.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, nil, err
		}
		return nil, nil, moved(t.path(name)) // now a symlink out of the tree, which os.Root refuses
	}
	got, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !got.Mode().IsRegular() || !os.SameFile(fi, got) {
		f.Close()
		return nil, nil, moved(t.path(name))
	}
	return f, got, nil
}

// create makes the new regular file name (never through an existing entry)
// for writing, mode 0600 until the caller sets it.
func (t *tree) create(name string) (*os.File, error) {
	if err := entry(name); err != nil {
		return nil, err
	}
	return t.r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// createTemp is create under a fresh name starting with prefix, for a
// file that replaces another by rename.
func (t *tree) createTemp(prefix string) (*os.File, string, error) {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		name := prefix + hex.EncodeToString(b[:])
		f, err := t.create(name)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, name, err
	}
}

// mkdir creates directory name.
func (t *tree) mkdir(name string, perm fs.FileMode) error {
	if err := entry(name); err != nil {
		return err
	}
	return t.r.Mkdir(name, perm)
}

// symlink creates the symlink name -> target.
func (t *tree) symlink(target, name string) error {
	if err := entry(name); err != nil {
		return err
	}
	return t.r.Symlink(target, name)
}

// remove removes entry name (not following it).
func (t *tree) remove(name string) error {
	if err := entry(name); err != nil {
		return err
	}
	return t.r.Remove(name)
}

// rename renames entry oldname to newname within this directory.
func (t *tree) rename(oldname, newname string) error {
	if err := entry(oldname); err != nil {
		return err
	}
	if err := entry(newname); err != nil {
		return err
	}
	return t.r.Rename(oldname, newname)
}

// lchown sets the owner of entry name itself (a symlink is not followed).
func (t *tree) lchown(name string, uid, gid int) error {
	if err := entry(name); err != nil {
		return err
	}
	return t.r.Lchown(name, uid, gid)
}

// removeAll removes entry name and everything below it. os.Root removes
// relative to directory handles and never follows a symlink. Read-only
// directories inside (which stop a non-root server) are made writable,
// through handles, and the removal retried.
func (t *tree) removeAll(name string) error {
	if err := entry(name); err != nil {
		return err
	}
	err := t.r.RemoveAll(name)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	if fi, err := t.lstat(name); err == nil && fi.IsDir() {
		_ = t.chmodDir(name, 0o700)
		if sub, err := t.sub(name); err == nil {
			_ = sub.walk(context.Background(), func(d *tree, _ string, fi fs.FileInfo) (bool, error) {
				if fi.IsDir() {
					_ = d.chmodDir(fi.Name(), 0o700)
					return true, nil
				}
				return false, nil
			}, nil)
			sub.Close()
		}
	}
	return t.r.RemoveAll(name)
}

// chmodDir sets the mode of subdirectory name: through a handle on it, or,
// when it cannot be entered (no search permission; non-root servers only),
// by name, where os.Root keeps the change inside the tree.
func (t *tree) chmodDir(name string, mode fs.FileMode) error {
	sub, err := t.sub(name)
	if errors.Is(err, fs.ErrPermission) {
		return t.r.Chmod(name, mode)
	}
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.chmod(mode)
}

// chmod sets the mode of this directory itself.
func (t *tree) chmod(mode fs.FileMode) error { return t.r.Chmod(".", mode) }

// chown sets the owner of this directory itself.
func (t *tree) chown(uid, gid int) error { return t.r.Lchown(".", uid, gid) }

// chtimes sets the access and modification times of this directory itself.
func (t *tree) chtimes(tm time.Time) error { return t.r.Chtimes(".", tm, tm) }

// walk calls visit for every entry below t, depth first, each directory's
// entries in byte order of their names, a directory before its content.
// visit gets the handle of the entry's directory, the entry's path from
// the top handle and its Lstat; for a directory it returns whether to
// enter it. An entry that vanishes before it is seen, or a directory that
// cannot be entered because it changed since visit saw it (errMoved) or
// lies deeper than maxDepth, is passed to skip (fi nil when it vanished)
// instead; skip may be nil.
func (t *tree) walk(ctx context.Context, visit func(d *tree, rel string, fi fs.FileInfo) (bool, error), skip func(rel string, fi fs.FileInfo, err error)) error {
	if skip == nil {
		skip = func(string, fs.FileInfo, error) {}
	}
	var n int
	return t.walkDir(ctx, 0, &n, visit, skip)
}

func (t *tree) walkDir(ctx context.Context, depth int, n *int, visit func(*tree, string, fs.FileInfo) (bool, error), skip func(string, fs.FileInfo, error)) error {
	f, err := t.r.Open(".")
	if err != nil {
		return fmt.Errorf("open %s: %w", t.rel, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", t.rel, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if *n++; *n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rel := t.path(name)
		fi, err := t.r.Lstat(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				skip(rel, nil, err)
				continue
			}
			return fmt.Errorf("stat %s: %w", rel, err)
		}
		enter, err := visit(t, rel, fi)
		if err != nil {
			return err
		}
		if !enter || !fi.IsDir() {
			continue
		}
		if depth+1 >= maxDepth {
			skip(rel, fi, errs.E(errs.Invalid, "%q lies deeper than %d directories", rel, maxDepth))
			continue
		}
		sub, err := t.enter(name, fi)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errMoved) {
				skip(rel, fi, err)
				continue
			}
			return fmt.Errorf("enter %s: %w", rel, err)
		}
		err = sub.walkDir(ctx, depth+1, n, visit, skip)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// cursor resolves the directories of a tree for one goroutine's pass over
// sorted paths, keeping the last handle: consecutive paths mostly share
// their directory, and a deeper one is entered from it.
type cursor struct {
	top *tree
	rel string
	cur *tree
}

// dir returns the handle of directory rel, valid until the next call or
// Close (hold it to keep it longer).
func (c *cursor) dir(rel string) (*tree, error) { return c.move(rel, (*tree).dir) }

// mkdirs is dir, creating missing directories (see tree.mkdirs).
func (c *cursor) mkdirs(rel string, perm fs.FileMode) (*tree, error) {
	return c.move(rel, func(t *tree, rel string) (*tree, error) { return t.mkdirs(rel, perm) })
}

func (c *cursor) move(rel string, open func(from *tree, rel string) (*tree, error)) (*tree, error) {
	if c.cur != nil && c.rel == rel {
		return c.cur, nil
	}
	from, sub := c.top, rel
	if c.cur != nil && c.rel != "" && strings.HasPrefix(rel, c.rel+"/") {
		from, sub = c.cur, rel[len(c.rel)+1:]
	}
	d, err := open(from, sub)
	c.Close()
	if err != nil {
		return nil, err
	}
	c.cur, c.rel = d, rel
	return d, nil
}

// Close drops the cursor's handle.
func (c *cursor) Close() {
	if c.cur != nil {
		c.cur.Close()
		c.cur, c.rel = nil, ""
	}
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

// baseOf returns the last component of a slash-separated path.
func baseOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }
