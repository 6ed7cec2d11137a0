package diskimg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
)

func TestCreateIsSparse(t *testing.T) {
	requireLoop(t)
	for _, sizeMB := range []int64{512, 10240} {
		for _, k := range kinds {
			t.Run(fmt.Sprintf("%s/%d", k.name, sizeMB), func(t *testing.T) {
				img := filepath.Join(t.TempDir(), "disk.img")
				if err := k.create(t.Context(), img, sizeMB); err != nil {
					t.Fatal(err)
				}
				fi, err := os.Stat(img)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := fi.Size(), sizeMB<<20; got != want {
					t.Errorf("size: got %d, want %d", got, want)
				}
				// Formatting writes only superblocks, descriptors, bitmaps
				// and the root directory: a few MiB at most, whatever the size.
				if got := allocated(t, img); got > 8<<20 {
					t.Errorf("a fresh %d MiB image allocates %d KiB on the host, want at most 8 MiB", sizeMB, got>>10)
				} else {
					t.Logf("fresh %d MiB image: %d KiB allocated", sizeMB, got>>10)
				}
			})
		}
	}
}

// kinds are the two formats: sandbox disks and persistent volumes.
var kinds = []struct {
	name   string
	create func(context.Context, string, int64) error
}{{"disk", Create}, {"volume", CreateVolume}}

func TestCreateRefuses(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	for _, sizeMB := range []int64{0, -1, MinMB - 1, MaxMB + 1} {
		img := filepath.Join(dir, fmt.Sprintf("bad%d.img", sizeMB))
		err := Create(t.Context(), img, sizeMB)
		if errs.KindOf(err) != errs.Invalid {
			t.Errorf("Create(%d MiB): got %v, want an errs.Invalid error", sizeMB, err)
		}
		if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Create(%d MiB) left %s behind (stat: %v)", sizeMB, img, err)
		}
	}
	// An existing file is neither overwritten nor removed.
	img := filepath.Join(dir, "exists.img")
	if err := os.WriteFile(img, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Create(t.Context(), img, 64); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create over an existing file: got %v, want os.ErrExist", err)
	}
	if b, err := os.ReadFile(img); err != nil || string(b) != "keep" {
		t.Errorf("existing file after Create: %q, %v; want \"keep\"", b, err)
	}
	// A cancelled format leaves nothing behind.
	cctx, cancel := context.WithCancel(t.Context())
	cancel()
	img = filepath.Join(dir, "cancelled.img")
	if err := Create(cctx, img, 64); err == nil {
		t.Error("Create with a cancelled context succeeded")
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cancelled Create left %s behind (stat: %v)", img, err)
	}
}

// TestWriteUntilFull is issue 14: writing past disk_mb must fail with
// ENOSPC and must not grow the host's disk by more than the limit.
func TestWriteUntilFull(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { testWriteUntilFull(t, k.create) })
	}
}

func testWriteUntilFull(t *testing.T, create func(context.Context, string, int64) error) {
	const sizeMB = 512
	d := newMountedKind(t, sizeMB, create)
	f, err := os.Create(filepath.Join(d.Dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte("techboss"), 1<<17) // 1 MiB, not zeros
	var written int64
	for written < 2*sizeMB<<20 {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("write after %d MiB: got %v, want ENOSPC", written>>20, err)
			}
			break
		}
	}
	if written >= 2*sizeMB<<20 {
		t.Fatalf("wrote %d MiB to a %d MiB disk without an error", written>>20, sizeMB)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after ENOSPC: %v", err)
	}
	// A second file cannot take more either.
	if err := os.WriteFile(filepath.Join(d.Dir, "more"), buf, 0o644); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("writing another file on a full disk: got %v, want ENOSPC", err)
	}
	unix.Sync()
	alloc := allocated(t, d.Image)
	t.Logf("%d MiB disk: %d MiB written before ENOSPC; image allocates %d MiB on the host", sizeMB, written>>20, alloc>>20)
	// The host file's extent tree is its only overhead.
	if limit := int64(sizeMB<<20) + 1<<20; alloc > limit {
		t.Errorf("image allocates %d bytes, want at most the limit plus 1 MiB (%d)", alloc, limit)
	}
	if min := int64(sizeMB<<20) * 9 / 10; written < min {
		t.Errorf("only %d MiB usable of %d MiB, want at least 90%%", written>>20, sizeMB)
	}
}

// TestManyFilesUntilFull: small files run out of inodes with a clean
// ENOSPC, and not before the inode ratio promises.
func TestManyFilesUntilFull(t *testing.T) {
	const sizeMB = 512
	d := newMounted(t, sizeMB)
	var st unix.Statfs_t
	if err := unix.Statfs(d.Dir, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB disk: %d inodes, %d free", sizeMB, st.Files, st.Ffree)
	n, err := 0, error(nil)
	for dir := 0; err == nil; dir++ {
		sub := filepath.Join(d.Dir, fmt.Sprintf("d%03d", dir))
		if err = os.Mkdir(sub, 0o755); err != nil {
			break
		}
		for i := 0; i < 1000; i++ {
			var fd int
			fd, err = unix.Open(filepath.Join(sub, fmt.Sprintf("f%04d", i)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				break
			}
			_ = unix.Close(fd)
			n++
		}
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("after %d files: got %v, want ENOSPC", n, err)
	}
	t.Logf("%d MiB disk: %d empty files before ENOSPC", sizeMB, n)
	if want := int(sizeMB<<20/BytesPerInode) * 98 / 100; n < want {
		t.Errorf("only %d files fit on %d MiB, want at least %d", n, sizeMB, want)
	}
}

// TestMountOptions: the sandbox can run what it builds on its disk, but
// cannot use device nodes or set-user-ID programs from it.
func TestMountOptions(t *testing.T) {
	d := newMounted(t, 64)
	var st unix.Statfs_t
	if err := unix.Statfs(d.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		t.Errorf("filesystem type %#x, want ext4", st.Type)
	}
	for _, f := range []struct {
		flag int64
		name string
		want bool
	}{{unix.ST_NOSUID, "nosuid", true}, {unix.ST_NODEV, "nodev", true}, {unix.ST_NOEXEC, "noexec", false}} {
		if got := st.Flags&f.flag != 0; got != f.want {
			t.Errorf("%s: got %v, want %v", f.name, got, f.want)
		}
	}
	bin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d.Dir, "true")
	if err := os.WriteFile(p, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(p).CombinedOutput(); err != nil {
		t.Errorf("running a binary from the disk: %v: %s", err, out)
	}
	null := filepath.Join(d.Dir, "null")
	if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(null, os.O_WRONLY, 0); !errors.Is(err, unix.EACCES) {
		if f != nil {
			f.Close()
		}
		t.Errorf("opening a device node on the disk: got %v, want EACCES", err)
	}
	// Sandbox disks are mounted without barriers, volumes with.
	if !strings.Contains(superOptions(t, d.Dir), "nobarrier") {
		t.Errorf("sandbox disk mounted with barriers: %q", superOptions(t, d.Dir))
	}
	vol := newMountedKind(t, 64, CreateVolume)
	if strings.Contains(superOptions(t, vol.Dir), "nobarrier") {
		t.Errorf("volume mounted without barriers: %q", superOptions(t, vol.Dir))
	}
	// Direct I/O keeps the image out of the host page cache.
	dio, err := os.ReadFile("/sys/block/" + filepath.Base(d.Device) + "/loop/dio")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s direct I/O: %s", d.Device, strings.TrimSpace(string(dio)))
}

// TestOverlayUpper: the sandbox's root overlay can keep its upper and
// work dirs on the disk, and the limit holds through the overlay.
func TestOverlayUpper(t *testing.T) {
	d := newMounted(t, 64)
	lower := t.TempDir()
	if err := os.WriteFile(filepath.Join(lower, "image-file"), []byte("from the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	upper, work := filepath.Join(d.Dir, "upper"), filepath.Join(d.Dir, "work")
	for _, p := range []string{upper, work} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := t.TempDir()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay with its upper on the disk: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Error(err)
		}
	})
	if err := os.WriteFile(filepath.Join(merged, "image-file"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "image-file")); err != nil || string(b) != "changed" {
		t.Errorf("copied-up file in the upper dir: %q, %v; want \"changed\"", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(lower, "image-file")); string(b) != "from the image" {
		t.Errorf("lower file changed to %q", b)
	}
	f, err := os.Create(filepath.Join(merged, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var written int64
	for ; written < 128<<20; written += 1 << 20 {
		if _, err = f.Write(buf); err != nil {
			break
		}
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("filling a 64 MiB disk through the overlay: got %v after %d MiB, want ENOSPC", err, written>>20)
	}
}

func TestFind(t *testing.T) {
	d := newMounted(t, 64)
	got, err := Find(d.Image, d.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *d {
		t.Errorf("Find: got %+v, want %+v", *got, *d)
	}
	// Through a symlink to the image, as the kernel resolves it.
	link := filepath.Join(t.TempDir(), "link.img")
	if err := os.Symlink(d.Image, link); err != nil {
		t.Fatal(err)
	}
	if got, err := Find(link, d.Dir); err != nil || got.Device != d.Device {
		t.Errorf("Find through a symlink: got %+v, %v; want %s", got, err, d.Device)
	}
	other := filepath.Join(t.TempDir(), "other.img")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, image, dir string }{
		{"another image", other, d.Dir},
		{"a dir that is no mount point", d.Image, t.TempDir()},
		{"a removed image", filepath.Join(t.TempDir(), "gone.img"), d.Dir},
		{"a mount that is not a disk image", d.Image, "/proc"},
	} {
		if got, err := Find(c.image, c.dir); !errors.Is(err, ErrNotMounted) {
			t.Errorf("Find(%s): got %+v, %v; want ErrNotMounted", c.name, got, err)
		}
	}
}

func TestUnmountReleasesLoop(t *testing.T) {
	d := newMounted(t, 64)
	if devs, err := Attached(d.Image); err != nil || len(devs) != 1 || devs[0] != d.Device {
		t.Fatalf("Attached while mounted: got %v, %v; want [%s]", devs, err, d.Device)
	}
	if err := d.Unmount(t.Context()); err != nil {
		t.Fatal(err)
	}
	if devs, err := Attached(d.Image); err != nil || len(devs) != 0 {
		t.Errorf("Attached after Unmount: got %v, %v; want none", devs, err)
	}
	// Idempotent, also for a server that lost the Disk.
	if err := d.Unmount(t.Context()); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
	if err := Unmount(t.Context(), d.Image, d.Dir); err != nil {
		t.Errorf("Unmount of an unmounted image: %v", err)
	}
}

// TestUnmountBusy: a user of the filesystem keeps the loop device; Unmount
// detaches the mount, says so, and the device goes with the last user.
func TestUnmountBusy(t *testing.T) {
	d := newMounted(t, 64)
	f, err := os.Create(filepath.Join(d.Dir, "held"))
	if err != nil {
		t.Fatal(err)
	}
	// The file stays open, so the wait ends at the timeout, not sooner.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err = d.Unmount(ctx)
	if !errors.Is(err, ErrStillAttached) {
		f.Close()
		t.Fatalf("Unmount with a file open: got %v, want ErrStillAttached", err)
	}
	if _, err := Find(d.Image, d.Dir); !errors.Is(err, ErrNotMounted) {
		t.Errorf("after a lazy unmount, Find: got %v, want ErrNotMounted", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if devs, err := Attached(d.Image); err != nil || len(devs) != 0 {
		t.Errorf("Attached after the last user closed: got %v, %v; want none", devs, err)
	}
}

// TestMountInUse: an image is mounted once at a time; two loop devices on
// one ext4 image would corrupt it.
func TestMountInUse(t *testing.T) {
	d := newMounted(t, 64)
	other := filepath.Join(t.TempDir(), "again")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if d2, err := Mount(d.Image, other); !errors.Is(err, ErrInUse) || errs.KindOf(err) != errs.Conflict {
		if err == nil {
			_ = d2.Unmount(t.Context())
		}
		t.Fatalf("second Mount of a mounted image: got %v, want ErrInUse (errs.Conflict)", err)
	}
	if devs, err := Attached(d.Image); err != nil || len(devs) != 1 {
		t.Errorf("loop devices on the image after a refused Mount: %v, %v; want only %s", devs, err, d.Device)
	}
	if err := d.Unmount(t.Context()); err != nil {
		t.Fatal(err)
	}
	d2, err := Mount(d.Image, other)
	if err != nil {
		t.Fatalf("Mount after Unmount: %v", err)
	}
	if err := d2.Unmount(t.Context()); err != nil {
		t.Error(err)
	}
}

func TestMountNotAnImage(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if d, err := Mount(img, dir); err == nil {
		_ = d.Unmount(t.Context())
		t.Fatal("mounting an unformatted file succeeded")
	}
	// A failed mount after the loop device is attached detaches it.
	good := filepath.Join(dir, "good.img")
	if err := Create(t.Context(), good, 64); err != nil {
		t.Fatal(err)
	}
	if d, err := Mount(good, filepath.Join(dir, "missing")); err == nil {
		_ = d.Unmount(t.Context())
		t.Fatal("mounting on a missing dir succeeded")
	}
	for _, p := range []string{img, good} {
		if devs, err := Attached(p); err != nil || len(devs) != 0 {
			t.Errorf("after a failed Mount, loop devices on %s: %v, %v; want none", p, devs, err)
		}
	}
}

// TestConcurrentMounts: mounts racing for free loop devices each get
// their own.
func TestConcurrentMounts(t *testing.T) {
	requireLoop(t)
	const n = 6
	dir := t.TempDir()
	disks := make([]*Disk, n)
	g, ctx := errgroup.WithContext(t.Context())
	for i := range n {
		g.Go(func() error {
			img := filepath.Join(dir, fmt.Sprintf("%d.img", i))
			mnt := filepath.Join(dir, fmt.Sprint(i))
			if err := Create(ctx, img, 64); err != nil {
				return err
			}
			if err := os.Mkdir(mnt, 0o700); err != nil {
				return err
			}
			d, err := Mount(img, mnt)
			if err != nil {
				return err
			}
			disks[i] = d
			return nil
		})
	}
	err := g.Wait()
	t.Cleanup(func() {
		for _, d := range disks {
			if d != nil {
				if err := d.Unmount(context.Background()); err != nil {
					t.Error(err)
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range disks {
		if seen[d.Device] {
			t.Errorf("%s used twice", d.Device)
		}
		seen[d.Device] = true
		if err := os.WriteFile(filepath.Join(d.Dir, "id"), []byte(d.Image), 0o644); err != nil {
			t.Error(err)
		}
	}
	for _, d := range disks {
		if b, err := os.ReadFile(filepath.Join(d.Dir, "id")); err != nil || string(b) != d.Image {
			t.Errorf("%s holds %q, %v; want %q", d.Dir, b, err, d.Image)
		}
	}
}

func TestTrim(t *testing.T) {
	d := newMounted(t, 512)
	p := filepath.Join(d.Dir, "big")
	if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 200<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	full := allocated(t, d.Image)
	if full < 200<<20 {
		t.Fatalf("image allocates %d MiB after writing 200 MiB", full>>20)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	if err := Trim(d.Dir); err != nil {
		t.Fatal(err)
	}
	after := allocated(t, d.Image)
	t.Logf("image: %d MiB allocated with a 200 MiB file, %d MiB after removing it and Trim", full>>20, after>>20)
	if after > full-150<<20 {
		t.Errorf("Trim freed only %d MiB of the 200 MiB removed", (full-after)>>20)
	}
}

func TestCheckFree(t *testing.T) {
	dir := t.TempDir()
	if err := CheckFree(dir, 1); err != nil {
		t.Errorf("CheckFree(1 MiB): %v", err)
	}
	err := CheckFree(dir, MaxMB*64)
	if errs.KindOf(err) != errs.InsufficientStorage {
		t.Fatalf("CheckFree(1 EiB): got %v, want errs.InsufficientStorage", err)
	}
	e, _ := errs.Public(err)
	for _, want := range []string{"data dir has", "MiB free", fmt.Sprintf("needs %d MiB (disk_mb)", MaxMB*64)} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	if strings.Contains(e.Message, dir) {
		t.Errorf("public message %q names the host path %s", e.Message, dir)
	}
	if err := CheckFree(filepath.Join(dir, "missing"), 1); err == nil || errs.KindOf(err) == errs.InsufficientStorage {
		t.Errorf("CheckFree on a missing dir: got %v, want a plain error", err)
	}
}

// superOptions returns the filesystem options of the mount on dir.
func superOptions(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return f[len(f)-1]
		}
	}
	t.Fatalf("%s not in mountinfo", dir)
	return ""
}

// TestUnmountPinnedByCopy: a recursive bind of a tree holding a disk (what
// a foreign `bwrap --ro-bind / /` does in its namespace) keeps the disk and
// its loop device alive; Unmount says so, and once the copy is gone the
// device goes.
func TestUnmountPinnedByCopy(t *testing.T) {
	requireLoop(t)
	parent := t.TempDir()
	mnt := filepath.Join(parent, "sandboxes", "disk")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := Create(t.Context(), img, 64); err != nil {
		t.Fatal(err)
	}
	d, err := Mount(img, mnt)
	if err != nil {
		t.Fatal(err)
	}
	foreign := t.TempDir()
	if err := unix.Mount(parent, foreign, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(foreign, unix.MNT_DETACH)
		_ = d.Unmount(context.Background())
	})
	if _, err := os.Stat(filepath.Join(foreign, "sandboxes", "disk", "lost+found")); err != nil {
		t.Fatalf("the recursive bind does not show the disk: %v", err)
	}
	// The copy stays, so the wait ends at the timeout, not sooner.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := d.Unmount(ctx); !errors.Is(err, ErrStillAttached) {
		t.Errorf("Unmount of a disk a recursive bind copied: got %v, want ErrStillAttached", err)
	}
	if err := unix.Unmount(foreign, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(t.Context()); err != nil {
		t.Errorf("Unmount after the copy went: %v", err)
	}
}

// TestUnmountLeavesOthers: a Disk's Unmount does not unmount what was
// mounted on its directory after it.
func TestUnmountLeavesOthers(t *testing.T) {
	d := newMounted(t, 64)
	if err := unix.Unmount(d.Dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", d.Dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(d.Dir, 0)
	if err := d.Unmount(t.Context()); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.Dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Errorf("after Unmount of the earlier disk, %s holds type %#x (%v), want the tmpfs", d.Dir, st.Type, err)
	}
}
