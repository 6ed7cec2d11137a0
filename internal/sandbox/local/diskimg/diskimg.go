// Package diskimg enforces a sandbox's disk limit (disk_mb) with a
// filesystem of its own: a sparse image file formatted as ext4 and mounted
// through a loop device. Everything the sandbox writes (its overlay upper
// dir, /workspace, /tmp) lives on that filesystem, so writing past the limit
// fails with ENOSPC inside the sandbox and the image never allocates more
// host blocks than its size.
//
// Why ext4 on a loop device rather than project quotas or a size-limited
// tmpfs: quotas need the data dir's filesystem to be XFS or ext4 mounted
// with prjquota (not something a self-hoster controls), and tmpfs costs RAM.
// ext4 is in every kernel, mkfs.ext4 (e2fsprogs) is on every distribution,
// overlayfs accepts it as an upper layer, and it reports ENOSPC for blocks
// and for inodes alike.
//
// The image is attached with the loop ioctls directly (no mount or losetup
// processes) and with LO_FLAGS_AUTOCLEAR, so the loop device goes away when
// the filesystem's last user lets go of it; Unmount checks that it did.
// While attached, the image is locked (flock, held by the loop device), so
// it cannot be mounted twice.
//
// Formatting takes tens of milliseconds (an mkfs process), which a sandbox
// start cannot afford: Pool keeps images of the default size formatted in
// advance.
//
// # Use from the driver
//
// At startup: NewPool(<data>/diskpool, defaultMB, n, log) and run its Run
// under the server's errgroup.
//
// Sandbox start, with D = <data>/sandboxes/<id>:
//
//	CheckFree(<data>, disk_mb)                 // errs.InsufficientStorage (507)
//	pool.Take(ctx, D/disk.img, disk_mb)        // a ready image, or mkfs now
//	Mount(D/disk.img, D/disk)                  // D/disk created first, 0700
//	mkdir D/disk/{upper,work,workspace} 0755, D/disk/tmp 1777
//	overlay root: upperdir=D/disk/upper, workdir=D/disk/work
//	bwrap: --bind D/disk/tmp /tmp (instead of --tmpfs), --bind D/disk/workspace /workspace
//
// and persist D/disk.img and D/disk in the sandbox's state. After a
// restart, Find(image, dir) says whether the disk is still mounted there.
// At teardown, after the sandbox's processes are gone and its root overlay
// is unmounted: Unmount(ctx, D/disk.img, D/disk), then remove D only if
// it succeeded or failed with ErrStillAttached (the mount point is free
// then; the image's blocks are freed when the last holder goes). Any other
// error means the disk may still be mounted on D/disk: removing D would
// delete the sandbox's files through the mount.
//
// Persistent volumes: CreateVolume(<data>/volumes/<owner>/<name>.img,
// size) once; Mount it while a sandbox uses it (ErrInUse, errs.Conflict,
// while another does), with a workspace/ subdirectory as the bound
// /workspace, so the sandbox never owns the filesystem's root; Trim, then
// Unmount when the sandbox ends. Allocated gives a volume's host size.
package diskimg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
)

// Size bounds, in MiB. Below MinMB ext4's own metadata (journal, inode
// tables, lost+found) is most of the disk; MaxMB keeps sizes well inside
// int64 byte counts and ext4's limits.
const (
	MinMB = 32
	MaxMB = 16 << 20 // 16 TiB
)

// BytesPerInode is the inode ratio: one inode per 8 KiB of disk, 65536
// inodes on a 512 MiB disk and 1.3 million on 10 GiB. mke2fs's default
// (16 KiB) runs out of inodes early on the small-file trees agents make
// (node_modules, .git, Python venvs); 4 KiB, one inode per block, would
// cost 6% of the disk in inode tables. The tables are never written until
// used, so on the host they cost nothing either way.
const BytesPerInode = 8192

// mkfsArgs are the mkfs.ext4 options, chosen for a fresh sparse file:
//   - -b 4096: the page size; fixed so small disks do not get 1 KiB blocks.
//   - -m 0: no blocks reserved for root (the sandbox's root is the user).
//   - -O ^resize_inode: disks do not grow, so no GDT blocks reserved for it.
//   - lazy_itable_init, lazy_journal_init: do not zero inode tables and
//     journal; a sparse file reads as zeros already. Mount adds
//     noinit_itable so the kernel does not zero them later either (that
//     would allocate the tables on the host: 160 MiB for 10 GiB).
//   - nodiscard: nothing to discard in a new sparse file.
//
// Only options e2fsprogs 1.46 knows (Ubuntu 22.04; Debian 12 has 1.47).
var mkfsArgs = []string{
	"-F", "-q",
	"-b", "4096",
	"-m", "0",
	"-i", strconv.Itoa(BytesPerInode),
	"-I", "256",
	"-O", "^resize_inode",
	"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
}

// noJournal is added for sandbox disks: see Create.
var noJournal = []string{"-O", "^has_journal"}

// ErrSize is returned for sizes outside [MinMB, MaxMB]; it is errs.Invalid.
var ErrSize = errs.E(errs.Invalid, "disk_mb must be between %d and %d", MinMB, MaxMB)

// Create makes a sandbox's disk: a sparse image file of sizeMB MiB at path,
// formatted as ext4. path must not exist; on failure nothing is left
// behind.
//
// A sandbox disk has no journal, and Mount mounts it without write
// barriers: nothing on it outlives the host (a sandbox does not survive a
// reboot), so crash consistency buys nothing, while the journal costs 16
// MiB (512 MiB disk) to 64 MiB (10 GiB) of the sandbox's space and 3-5 ms
// per mount, and barriers turn every fsync in the sandbox into a flush of
// the host's disk.
func Create(ctx context.Context, path string, sizeMB int64) error {
	return create(ctx, path, sizeMB, noJournal)
}

// CreateVolume makes a persistent volume's disk: like Create, but with a
// journal (mke2fs's default size, written only as used), and Mount keeps
// write barriers for it, so the volume survives a host crash.
func CreateVolume(ctx context.Context, path string, sizeMB int64) error {
	return create(ctx, path, sizeMB, nil)
}

func create(ctx context.Context, path string, sizeMB int64, extra []string) (err error) {
	if sizeMB < MinMB || sizeMB > MaxMB {
		return ErrSize
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	terr := f.Truncate(sizeMB << 20)
	if cerr := f.Close(); terr == nil {
		terr = cerr
	}
	if terr != nil {
		return fmt.Errorf("size disk image: %w", terr)
	}
	return mkfs(ctx, path, extra)
}

// mkfs formats path. mke2fs is killed outright when ctx ends: it writes
// only to the image, which the caller then removes, so it needs no grace.
func mkfs(ctx context.Context, path string, extra []string) error {
	bin, err := findMkfs()
	if err != nil {
		return err
	}
	args := append(append(append([]string(nil), mkfsArgs...), extra...), path)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("format disk image: %w", ctx.Err())
		}
		return fmt.Errorf("format disk image: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// findMkfs looks for mkfs.ext4 in PATH and then in the sbin directories,
// which a non-login PATH often lacks.
func findMkfs() (string, error) {
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errs.Wrap(errs.Unavailable, exec.ErrNotFound, "mkfs.ext4 not found: install e2fsprogs")
}

// CheckFree returns an errs.InsufficientStorage error unless the
// filesystem holding dir has at least needMB MiB available.
//
// Policy: the driver passes the sandbox's whole limit (disk_mb). Images are
// sparse, so this reserves nothing and sandboxes overcommit the host, as
// containers with quotas do; what it guarantees is that a sandbox, at the
// moment it starts, could fill its own disk. Starting one on a host with
// less free space than that would let it fill the host instead, and a full
// host surfaces inside the sandbox as EIO from the loop device, not as a
// clean ENOSPC. Available means f_bavail: the host filesystem's
// root-reserved blocks are not counted, but note that loop I/O is written
// by a kernel thread that may use them.
func CheckFree(dir string, needMB int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("check free space: %w", err)
	}
	unit := int64(st.Frsize)
	if unit <= 0 {
		unit = int64(st.Bsize)
	}
	freeMB := int64(st.Bavail) * unit >> 20
	if freeMB < needMB {
		// The public text names no host path; the cause (logged) does.
		return errs.Wrap(errs.InsufficientStorage, fmt.Errorf("%d MiB free under %s", freeMB, dir),
			fmt.Sprintf("the server's data dir has %d MiB free, the sandbox needs %d MiB (disk_mb); free space on it or ask for a smaller disk_mb", freeMB, needMB))
	}
	return nil
}
