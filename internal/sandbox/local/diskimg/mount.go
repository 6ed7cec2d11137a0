package diskimg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
)

// ErrNotMounted is returned by Find when the directory is not a mount of
// the image.
var ErrNotMounted = errors.New("disk image not mounted")

// ErrInUse is returned by Mount when the image is mounted already (by this
// process or another): two ext4 mounts of one image through two loop
// devices would corrupt it. It is errs.Conflict.
var ErrInUse = errs.E(errs.Conflict, "disk image is in use")

// ErrStillAttached is returned by Unmount when the filesystem is detached
// from its mount point but something else (a process with a file open on
// it, another mount namespace holding a copy of the mount) still uses it,
// so its loop device, and the image's host blocks, are not released yet.
// They are released by the kernel when that last user goes; Attached finds
// such devices later.
var ErrStillAttached = errors.New("loop device still attached")

// mountFlags: nosuid and nodev, because the disk is written by the
// sandbox; not noexec, because sandboxes run the programs they build.
const mountFlags = unix.MS_NOSUID | unix.MS_NODEV

// mountData: noinit_itable keeps the kernel from zeroing the inode tables
// mkfs left lazy, which would allocate them in the sparse image.
// Sandbox disks (no journal, see Create) are also mounted nobarrier.
const (
	mountData          = "noinit_itable"
	mountDataEphemeral = mountData + ",nobarrier"
)

// Disk is an image mounted through a loop device.
type Disk struct {
	// Image is the image file, absolute with symlinks resolved, as the
	// kernel names the loop device's backing file.
	Image string
	// Dir is the mount point, absolute.
	Dir string
	// Device is the loop device, /dev/loopN. It is informational: the
	// device is released by itself when the filesystem is.
	Device string
}

// Mount attaches image to a free loop device and mounts it on dir, which
// must exist. The loop device is set to clear itself when the filesystem
// lets go of it, so there is nothing to detach besides unmounting; if Mount
// fails, no loop device stays attached.
func Mount(image, dir string) (*Disk, error) {
	img, err := resolve(image)
	if err != nil {
		return nil, fmt.Errorf("mount disk image: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mount disk image: %w", err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("mount disk image: %w", err)
	}
	defer f.Close()
	// The lock belongs to the open file, which the loop device keeps: it
	// holds as long as the image is attached, across server restarts, and
	// goes with the loop device.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("mount %s: %w", img, ErrInUse)
		}
		return nil, fmt.Errorf("mount disk image %s: lock: %w", img, err)
	}
	journal, err := hasJournal(f)
	if err != nil {
		return nil, fmt.Errorf("mount disk image %s: %w", img, err)
	}
	data := mountDataEphemeral
	if journal {
		data = mountData
	}
	dev, loop, err := attach(f, img)
	if err != nil {
		return nil, fmt.Errorf("mount disk image %s: %w", img, err)
	}
	// Our descriptor is the device's only user until the mount takes its
	// own reference; closing it after a failed mount clears the device.
	defer loop.Close()
	if err := unix.Mount(dev, dir, "ext4", mountFlags, data); err != nil {
		return nil, fmt.Errorf("mount disk image %s on %s: %w", img, dir, err)
	}
	return &Disk{Image: img, Dir: dir, Device: dev}, nil
}

// hasJournal reads the ext4 superblock's has_journal feature, which tells
// volumes (CreateVolume) from sandbox disks (Create). The image is the
// server's own (the sandbox writes only through the mounted filesystem),
// and a superblock that is not ext4 fails the mount anyway.
func hasJournal(f *os.File) (bool, error) {
	const (
		superblock       = 1024
		magicOff         = 0x38 // __le16 s_magic
		featureCompatOff = 0x5c // __le32 s_feature_compat
		compatHasJournal = 0x4
	)
	b := make([]byte, 0x60)
	if _, err := f.ReadAt(b, superblock); err != nil {
		return false, fmt.Errorf("read superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(b[magicOff:]) != 0xef53 {
		return false, errors.New("not an ext4 image (no ext2/3/4 superblock)")
	}
	return binary.LittleEndian.Uint32(b[featureCompatOff:])&compatHasJournal != 0, nil
}

// attach binds backing to a free loop device with autoclear and returns
// the device path and an open descriptor of it.
func attach(backing *os.File, name string) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer ctl.Close()
	// Another process may take the device LOOP_CTL_GET_FREE named before
	// we configure it (EBUSY): ask again.
	for range 64 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		loop, err := openLoop(dev, n)
		if err != nil {
			return "", nil, err
		}
		err = configure(loop, backing, name)
		runtime.KeepAlive(backing)
		if err == nil {
			return dev, loop, nil
		}
		_ = loop.Close()
		if !errors.Is(err, unix.EBUSY) {
			return "", nil, fmt.Errorf("configure %s: %w", dev, err)
		}
	}
	return "", nil, errors.New("no free loop device: every one found was taken by others first")
}

// configure binds backing to loop. Direct I/O keeps the image's pages out
// of the host page cache (the filesystem above caches them already); a
// kernel or backing filesystem that cannot do it gets buffered I/O.
// LOOP_CONFIGURE (Linux 5.8) does it in one step; older kernels get
// LOOP_SET_FD and LOOP_SET_STATUS64.
func configure(loop, backing *os.File, name string) error {
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: 4096}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], name)
	lfd := int(loop.Fd())
	err := unix.IoctlLoopConfigure(lfd, &cfg)
	if errors.Is(err, unix.EINVAL) {
		cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
		err = unix.IoctlLoopConfigure(lfd, &cfg)
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
	if err := unix.IoctlSetInt(lfd, unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(lfd, &cfg.Info); err != nil {
		_ = unix.IoctlSetInt(lfd, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// openLoop opens a loop device, making its node if /dev is not a devtmpfs
// that the kernel fills.
func openLoop(dev string, n int) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	b, rerr := os.ReadFile("/sys/block/loop" + strconv.Itoa(n) + "/dev")
	if rerr != nil {
		return nil, err
	}
	var major, minor uint32
	if _, serr := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); serr != nil {
		return nil, err
	}
	if merr := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); merr != nil && !errors.Is(merr, unix.EEXIST) {
		return nil, fmt.Errorf("create %s: %w", dev, merr)
	}
	return os.OpenFile(dev, os.O_RDWR, 0)
}

// Find returns the Disk of image mounted on dir, for a server that
// restarted while its sandboxes kept running: the driver persists the image
// path and the mount point, not the device. It returns ErrNotMounted
// (wrapped) when dir is not a mount point or something else is mounted
// there.
func Find(image, dir string) (*Disk, error) {
	img, err := resolve(image)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", image, ErrNotMounted)
		}
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("find disk image mount: %w", err)
	}
	m, ok := mountAt(string(b), dir)
	if !ok {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotMounted)
	}
	backing, name, err := loopBacking(m.dev)
	if err != nil || backing != img {
		return nil, fmt.Errorf("%s holds %q, not the disk image %s: %w", dir, m.source, img, ErrNotMounted)
	}
	return &Disk{Image: img, Dir: dir, Device: "/dev/" + name}, nil
}

// Unmount unmounts the image mounted on dir, if it is, and checks that no
// loop device still holds the image (ErrStillAttached). Use it when the
// Disk is not at hand (after a restart, at teardown).
func Unmount(ctx context.Context, image, dir string) error {
	d, err := Find(image, dir)
	if errors.Is(err, ErrNotMounted) {
		img, rerr := resolve(image)
		if rerr != nil {
			return nil // no image, nothing can hold it
		}
		return waitReleased(ctx, img, "", dir)
	}
	if err != nil {
		return err
	}
	return d.Unmount(ctx)
}

// Unmount unmounts the disk and waits until the kernel has released its
// loop device.
//
// The release is not always immediate: another mount namespace created
// while the disk was mounted holds a copy of the mount (every bubblewrap
// sandbox starting does, for the few milliseconds until it drops the
// host's mount tree), and the filesystem lives until the last copy goes.
// A process that keeps such a copy (a foreign sandbox made with bwrap
// --ro-bind / /, a container with -v /:/host) pins the disk until it
// exits. Making the parent directory unbindable does not prevent that:
// those tools make their copy of the tree rslave, hence bindable, before
// binding it.
// Unmount waits for that up to releaseWait (or until ctx is done). When
// something still uses the filesystem in this namespace (EBUSY: a process
// with a file open on it), it detaches the mount lazily: the mount point
// is free at once, and the kernel releases the filesystem and its loop
// device when the last user goes.
//
// ErrStillAttached means the wait ended first: a leak until that user goes
// (Attached and AttachedUnder find it later). The image file may be
// removed regardless; its blocks are freed at the release.
func (d *Disk) Unmount(ctx context.Context) error {
	// Unmount only what is ours: the disk may be unmounted already, and
	// something else mounted on Dir since.
	_, err := Find(d.Image, d.Dir)
	if err == nil {
		err = unix.Unmount(d.Dir, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(d.Dir, unix.MNT_DETACH)
		}
	}
	// EINVAL: not a mount point any more, someone unmounted it meanwhile.
	if err != nil && !errors.Is(err, ErrNotMounted) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount disk image %s: %w", d.Dir, err)
	}
	return waitReleased(ctx, d.Image, d.Device, d.Dir)
}

// releaseWait bounds how long Unmount waits for the loop device to go.
const releaseWait = 2 * time.Second

// waitReleased polls until no loop device is backed by image (only dev,
// when known). The kernel offers no event for a loop device's release
// without udev, so this polls, quickly at first: the usual holder, a
// starting sandbox, lets go within milliseconds.
func waitReleased(ctx context.Context, image, dev, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, releaseWait)
	defer cancel()
	delay := 200 * time.Microsecond
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		devs, err := holders(image, dev)
		if err != nil || len(devs) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unmount %s: %s still holds %s: %w", dir, strings.Join(devs, ", "), image, ErrStillAttached)
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
		t.Reset(delay)
	}
}

// holders returns the loop devices backed by image: dev if it is (a
// device number may be reused by another image at once), or, without dev,
// any.
func holders(image, dev string) ([]string, error) {
	if dev == "" {
		return attached(image)
	}
	b, err := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file")
	if err != nil || backingName(b) != image {
		return nil, nil // detached (ENOENT), or bound to another file since
	}
	return []string{dev}, nil
}

// Attached lists the loop devices whose backing file is image (also after
// image was removed). The driver can call it for images it gave up on, or
// sweep with AttachedUnder at startup, to report leaks.
func Attached(image string) ([]string, error) {
	img, err := resolve(image)
	if err != nil {
		// Removed: the kernel names it by the path it had.
		img, err = filepath.Abs(image)
		if err != nil {
			return nil, err
		}
	}
	return attached(img)
}

func attached(img string) ([]string, error) {
	all, err := loops()
	if err != nil {
		return nil, err
	}
	var out []string
	for dev, backing := range all {
		if backing == img {
			out = append(out, dev)
		}
	}
	return out, nil
}

// AttachedUnder maps the loop devices whose backing file is under dir to
// those files.
func AttachedUnder(dir string) (map[string]string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	all, err := loops()
	if err != nil {
		return nil, err
	}
	for dev, backing := range all {
		if !strings.HasPrefix(backing, dir+"/") {
			delete(all, dev)
		}
	}
	return all, nil
}

// loops maps each attached loop device (/dev/loopN) to its backing file,
// without the " (deleted)" the kernel appends once the file is removed.
func loops() (map[string]string, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := os.ReadFile("/sys/block/" + e.Name() + "/loop/backing_file")
		if err != nil {
			continue // not attached (or detached while we looked)
		}
		out["/dev/"+e.Name()] = backingName(b)
	}
	return out, nil
}

// loopBacking returns the backing file of the loop device dev (major:minor)
// and the device's name.
func loopBacking(dev string) (backing, name string, err error) {
	link, err := os.Readlink("/sys/dev/block/" + dev)
	if err != nil {
		return "", "", err
	}
	name = filepath.Base(link)
	if !strings.HasPrefix(name, "loop") {
		return "", "", fmt.Errorf("%s is %s, not a loop device", dev, name)
	}
	b, err := os.ReadFile("/sys/dev/block/" + dev + "/loop/backing_file")
	if err != nil {
		return "", "", err
	}
	return backingName(b), name, nil
}

func backingName(b []byte) string {
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
}

// resolve returns the absolute path of an existing file with symlinks
// resolved, as the kernel reports a loop device's backing file.
func resolve(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

// Allocated returns the host space image takes (its allocated blocks):
// what a volume costs the host, without walking its files.
func Allocated(image string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		return 0, fmt.Errorf("disk image size: %w", err)
	}
	return st.Blocks * 512, nil
}

// Trim hands the blocks the filesystem on dir no longer uses back to the
// host (FITRIM; the loop device punches holes in the image). Images are
// sparse and only grow as the sandbox writes: without a trim an image keeps
// its high-water mark after files are deleted. Worth calling for
// long-lived persistent volumes, e.g. when a sandbox releases one.
func Trim(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("trim %s: %w", dir, err)
	}
	defer f.Close()
	r := struct{ start, len, minlen uint64 }{0, ^uint64(0), 0}
	const fitrim = 0xc0185879 // _IOWR('X', 121, struct fstrim_range)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fitrim, uintptr(unsafe.Pointer(&r))); e != 0 {
		return fmt.Errorf("trim %s: %w", dir, e)
	}
	return nil
}
