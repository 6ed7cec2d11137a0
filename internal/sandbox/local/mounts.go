package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/diskimg"
	"github.com/techbossai/techboss/internal/sandbox/local/netpolicy"
)

// mkdirFor creates dir (and parents) for bubblewrap to traverse: mode 0710,
// owned by host root with the sandboxes' root group, so a sandbox's
// unprivileged root may pass through it and nobody else on the host may.
func mkdirFor(dir string, ids sandbox.IDMap) error {
	if err := os.MkdirAll(dir, 0o710); err != nil {
		return err
	}
	if err := os.Chown(dir, 0, int(ids.ToHost(0))); err != nil {
		return err
	}
	return os.Chmod(dir, 0o710)
}

// bindInto bind-mounts the host path source at target inside the sandbox
// root (opened as root, mounted at merged), creating the mount point. The
// mount point is resolved beneath the root without following any symlink
// (openat2), so an image cannot redirect the mount onto the host.
func bindInto(root *os.Root, merged, source, target string, readOnly bool) error {
	fi, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("mount %s: %w", target, err)
	}
	rel := strings.TrimPrefix(filepath.Clean("/"+target), "/")
	if rel == "" {
		return fmt.Errorf("mount %s: not below /", target)
	}
	if dir := filepath.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", target, err)
		}
	}
	if fi.IsDir() {
		if err := root.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("mount point %s: %w", target, err)
		}
	} else if f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		_ = f.Close()
	} else {
		return fmt.Errorf("mount point %s: %w", target, err)
	}
	dirfd, err := unix.Open(merged, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount %s: %w", target, err)
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return fmt.Errorf("mount point %s: %w", target, err)
	}
	defer unix.Close(fd)
	at := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Mount(source, at, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mount %s: %w", target, err)
	}
	if readOnly {
		// The remount must name the new mount, not the fd's (the old) one.
		fd2, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return fmt.Errorf("mount %s read-only: %w", target, err)
		}
		defer unix.Close(fd2)
		if err := unix.Mount("", "/proc/self/fd/"+strconv.Itoa(fd2), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mount %s read-only: %w", target, err)
		}
	}
	return nil
}

// shiftWorkspace gives a workspace created before sandboxes had user
// namespaces (owned by host ids below the range) to the sandbox's ids, once:
// uid n becomes ids.ToHost(n). The walk is by handle beneath the workspace.
func shiftWorkspace(dir string, ids sandbox.IDMap) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || ids.Identity() || st.Uid >= ids.HostBase {
		return nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		s, ok := info.Sys().(*syscall.Stat_t)
		if !ok || s.Uid >= ids.HostBase {
			return nil
		}
		return root.Lchown(p, int(ids.ToHost(s.Uid)), int(ids.ToHost(s.Gid)))
	})
	if err != nil {
		return fmt.Errorf("shift workspace ids: %w", err)
	}
	return nil
}

// attachDisk gives the sandbox a disk of sizeMB MiB (0: the default) in its
// directory, mounted at dir/disk, and returns the mount point. The host's
// free space is checked first (507 when short).
func (d *Driver) attachDisk(ctx context.Context, st *state, sizeMB int) (string, error) {
	if sizeMB <= 0 {
		sizeMB = d.opts.DefaultDiskMB
	}
	if err := diskimg.CheckFree(d.opts.DataDir, int64(sizeMB)); err != nil {
		return "", err
	}
	img, mnt := filepath.Join(st.Dir, "disk.img"), filepath.Join(st.Dir, "disk")
	if err := d.disks.Take(ctx, img, int64(sizeMB)); err != nil {
		return "", fmt.Errorf("sandbox disk: %w", err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return "", fmt.Errorf("sandbox disk: %w", err)
	}
	st.Disk = img // teardown removes the image with the dir
	if _, err := diskimg.Mount(img, mnt); err != nil {
		return "", fmt.Errorf("sandbox disk: %w", err)
	}
	st.DiskDir = mnt
	return mnt, nil
}

// netPolicy turns a spec's network into what netpolicy enforces: nil for
// none (loopback only), else full or an allow-list, with the operator's
// ranges.
func (d *Driver) netPolicy(n sandbox.Network) (*netpolicy.Policy, error) {
	switch n.Mode {
	case "", sandbox.NetworkNone:
		return nil, nil
	case sandbox.NetworkFull:
		return &netpolicy.Policy{Mode: netpolicy.Full, Operator: d.opts.NetworkOperator}, nil
	case sandbox.NetworkAllow:
		rules, err := netpolicy.ParseAllow(n.Allow)
		if err != nil {
			return nil, err
		}
		return &netpolicy.Policy{Mode: netpolicy.AllowList, Allow: rules, Operator: d.opts.NetworkOperator}, nil
	}
	return nil, errs.Field("network", `must be "none", "full" or {"allow": [...]}`)
}

// userNSPath is a process's user namespace: pasta joins the sandbox's, so
// it holds no capability on the host.
func userNSPath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/ns/user" }

// privateMount makes dir a mount of its own with private propagation
// (mount --make-rprivate on a bind of dir onto itself), so that what the
// driver mounts below it (sandbox roots, disks) is not copied into the
// mount namespaces that share the host's mounts: on a systemd host / is
// shared, and every mount below it would otherwise appear, and pin its
// loop device, in each service's namespace. (The bind itself reaches them
// once, empty: a mount attached below a shared one always does.)
// Idempotent: a dir that is a mount point already (a previous
// driver's, kept while its sandboxes' mounts were below it) is only made
// private again. A dir with mounts below it that is not a mount point
// itself is left shared (a bind would hide or double those mounts); the
// returned bool says whether dir is private.
func privateMount(dir string) (bool, error) {
	mounts, err := diskimg.Mounts()
	if err != nil {
		return false, err
	}
	isMount, below := false, false
	for _, m := range mounts {
		isMount = isMount || m.Point == dir
		below = below || strings.HasPrefix(m.Point, dir+"/")
	}
	if !isMount {
		if below {
			return false, nil
		}
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return false, fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return false, fmt.Errorf("make %s a private mount: %w", dir, err)
	}
	return true, nil
}

// unmountPrivate undoes privateMount's bind when nothing is mounted below
// it any more (a plain unmount fails with EBUSY otherwise, and the bind
// stays for the next driver): test data directories must be removable, and
// a host must not gather a bind per data directory it ever used.
//
// A plain unmount also fails while a file below is open (a sandbox's log
// held by its last processes as they exit, a formatting disk image): with
// no mount below, the bind is detached lazily then. That is harmless, as
// it is a bind of dir onto itself: the files stay where they are, and
// those still open go on working.
func unmountPrivate(dir string) {
	if unix.Unmount(dir, 0) == nil {
		return
	}
	mounts, err := diskimg.Mounts()
	if err != nil {
		return
	}
	for _, m := range mounts {
		if strings.HasPrefix(m.Point, dir+"/") {
			return // sandboxes' mounts, which the next driver takes over
		}
	}
	_ = unix.Unmount(dir, unix.MNT_DETACH)
}

// detachRoot takes the sandbox's root, and what is mounted in it
// (/workspace, /tmp, the server's mounts), out of the host's mount table
// once bubblewrap has started the sandbox: the sandbox's mount namespace
// holds its own copy, which keeps the filesystems alive, and the server
// reaches the root through /proc/<pid>/root. Every mount left in the
// host's table is copied and read again by each bubblewrap that starts
// (several times: it reads the whole table after each of its ~20 bind
// mounts), so without this a start slowed with the number of sandboxes
// running. The sandbox's disk stays mounted: its /workspace is read on the
// host for snapshots.
//
// start calls it only when the run dir is a private mount (New leaves it
// shared when an older driver's mounts are already below it).
func detachRoot(st *state) error {
	if err := unix.Unmount(st.merged(), unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach sandbox root from the host: %w", err)
	}
	return nil
}
