package security

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Writing past disk_mb fails with ENOSPC inside the sandbox, wherever the
// sandbox writes (its root, /workspace, /tmp), and the host's disk grows by
// at most the limit.
func TestDiskFillPastLimit(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		const limitMB = 64
		ref := create(t, d, sandbox.Spec{DiskMB: limitMB})
		ws, _, err := d.WorkspaceDir(ref)
		if err != nil {
			t.Fatal(err)
		}
		// What the sandbox costs the host is its disk image's allocated
		// blocks (the whole host's free space moves with every other test
		// writing beside this one).
		img := filepath.Join(filepath.Dir(filepath.Dir(ws)), "disk.img")
		before := allocatedMB(t, img)
		for _, target := range []string{"/workspace/fill", "/tmp/fill", "/var/fill"} {
			// 4x the limit: dd stops at the first failed write.
			r := sh(t, d, ref, "dd if=/dev/zero of="+target+" bs=1M count="+strconv.Itoa(4*limitMB)+" 2>&1; echo rc=$?")
			if !strings.Contains(r.stdout, "No space left on device") {
				t.Errorf("filling %s: want ENOSPC, got %q", target, r.stdout)
			}
			mustSh(t, d, ref, "rm -f "+target)
		}
		// All three at once cannot exceed the one limit either.
		r := sh(t, d, ref, "dd if=/dev/zero of=/workspace/a bs=1M count=40 2>/dev/null; dd if=/dev/zero of=/tmp/b bs=1M count=40 2>&1; echo rc=$?")
		if !strings.Contains(r.stdout, "No space left on device") {
			t.Errorf("/workspace and /tmp together past the limit: want ENOSPC, got %q", r.stdout)
		}
		mustSh(t, d, ref, "sync")
		after := allocatedMB(t, img)
		if after > limitMB+16 {
			t.Errorf("the sandbox's disk image holds %d MiB of the host's disk (was %d), more than its %d MiB limit", after, before, limitMB)
		}
		if after-before < limitMB/2 {
			t.Errorf("the disk image grew by %d MiB only: the fills did not land on it (%s)", after-before, img)
		}
		// The sandbox is still usable once it frees space.
		mustSh(t, d, ref, "rm -f /workspace/a /tmp/b && echo ok > /workspace/after")
	})
}

// A sandbox asking for more disk than the host has free is refused with a
// clear 507 before anything is allocated.
func TestDiskLargerThanHost(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		_, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: "too-big-" + strconv.Itoa(os.Getpid()), OwnerID: "attacker",
			Spec: sandbox.Spec{ImageBase: "host", DiskMB: 1 << 30}})
		if err == nil {
			t.Fatal("a 1 PiB disk was created")
		}
		if k := errs.KindOf(err); k != errs.InsufficientStorage || !strings.Contains(err.Error(), "disk_mb") {
			t.Errorf("got %v (%v), want an insufficient-storage error naming disk_mb", err, k)
		}
	})
}

// allocatedMB is the host disk a file takes (its allocated blocks, not
// its apparent size: the images are sparse).
func allocatedMB(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("the sandbox's disk image: %v", err)
	}
	return st.Blocks * 512 >> 20
}

// A persistent volume is a disk of its own: /workspace on it stops at its
// size too, its data outlives the sandbox, and two sandboxes may share it.
func TestVolumeDiskLimit(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		d := newDriver(t, rt)
		const limitMB = 64
		a := create(t, d, sandbox.Spec{VolumeName: "vol", DiskMB: limitMB})
		r := sh(t, d, a, "echo kept > /workspace/kept; dd if=/dev/zero of=/workspace/fill bs=1M count="+strconv.Itoa(4*limitMB)+" 2>&1; echo rc=$?")
		if !strings.Contains(r.stdout, "No space left on device") {
			t.Errorf("filling a volume: want ENOSPC, got %q", r.stdout)
		}
		mustSh(t, d, a, "rm /workspace/fill")
		b := create(t, d, sandbox.Spec{VolumeName: "vol", DiskMB: limitMB})
		if got := mustSh(t, d, b, "cat /workspace/kept"); got != "kept\n" {
			t.Errorf("second sandbox on the volume reads %q", got)
		}
		ctx := testCtx(t)
		if err := d.DeleteVolume(ctx, "attacker", "vol"); err == nil {
			t.Fatal("a volume in use was deleted")
		}
		for _, ref := range []sandbox.Ref{a, b} {
			if err := d.Destroy(ctx, ref); err != nil {
				t.Fatal(err)
			}
		}
		c := create(t, d, sandbox.Spec{VolumeName: "vol"})
		if got := mustSh(t, d, c, "cat /workspace/kept"); got != "kept\n" {
			t.Errorf("after both sandboxes ended, the volume reads %q", got)
		}
		if err := d.Destroy(ctx, c); err != nil {
			t.Fatal(err)
		}
		vols, err := d.ListVolumes(ctx, "attacker")
		if err != nil || len(vols) != 1 || vols[0].Name != "vol" || vols[0].InUse {
			t.Fatalf("volumes %+v, %v", vols, err)
		}
		if err := d.DeleteVolume(ctx, "attacker", "vol"); err != nil {
			t.Fatalf("delete volume: %v", err)
		}
		if vols, _ := d.ListVolumes(ctx, "attacker"); len(vols) != 0 {
			t.Errorf("volumes after delete: %+v", vols)
		}
	})
}
