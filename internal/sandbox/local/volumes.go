package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/diskimg"
)

// volumeOwnerDir is the directory an owner's volumes live in: a user's
// under volumes/<owner>, a team's (owner key "team:<id>") under
// team-volumes/<sha256 of the id>, so no team id reaches a path as it is.
// ok is false for an owner that is neither.
func (d *Driver) volumeOwnerDir(owner string) (dir string, ok bool) {
	if team, isTeam := strings.CutPrefix(owner, "team:"); isTeam {
		if team == "" {
			return "", false
		}
		sum := sha256.Sum256([]byte(team))
		return filepath.Join(d.opts.DataDir, "team-volumes", hex.EncodeToString(sum[:])), true
	}
	if !validName(owner) {
		return "", false
	}
	return filepath.Join(d.opts.DataDir, "volumes", owner), true
}

// volumeDir is a volume's mount point (or legacy directory); callers
// checked the owner with volumeOwnerDir.
func (d *Driver) volumeDir(owner, name string) string {
	dir, _ := d.volumeOwnerDir(owner)
	return filepath.Join(dir, name)
}

func (d *Driver) volumeInUse(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.sbs {
		if s.st.Volume == key && !s.gone {
			return true
		}
	}
	for _, k := range d.starting {
		if k == key {
			return true
		}
	}
	return false
}

// volumeImage is a volume's disk image, beside its mount point.
func (d *Driver) volumeImage(owner, name string) string { return d.volumeDir(owner, name) + ".img" }

// acquireVolume mounts the volume's disk for one more sandbox (creating it,
// of sizeMB MiB or the default, on first use) and returns the workspace
// directory on it and the image. A volume from before disk limits is a
// plain directory: it is used as it is (with no limit of its own).
func (d *Driver) acquireVolume(ctx context.Context, owner, name string, sizeMB int) (workspace, img string, err error) {
	d.volMu.Lock()
	defer d.volMu.Unlock()
	key, dir, img := owner+"/"+name, d.volumeDir(owner, name), d.volumeImage(owner, name)
	if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
		if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
			d.log.Warn("volume from before disk limits: a plain directory without a limit of its own", "volume", key)
			return dir, "", nil
		}
		if sizeMB <= 0 {
			sizeMB = d.opts.DefaultDiskMB
		}
		if err := diskimg.CheckFree(d.opts.DataDir, int64(sizeMB)); err != nil {
			return "", "", err
		}
		if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
			return "", "", fmt.Errorf("create volume: %w", err)
		}
		if err := diskimg.CreateVolume(ctx, img, int64(sizeMB)); err != nil {
			return "", "", fmt.Errorf("create volume: %w", err)
		}
	} else if err != nil {
		return "", "", fmt.Errorf("volume: %w", err)
	}
	if d.volRefs[key] == 0 {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", "", fmt.Errorf("mount volume: %w", err)
		}
		if _, err := diskimg.Find(img, dir); err != nil {
			if _, err := diskimg.Mount(img, dir); err != nil {
				return "", "", fmt.Errorf("mount volume %s: %w", name, err)
			}
		}
	}
	d.volRefs[key]++
	// The sandbox gets a directory on the volume, never its root (and
	// lost+found).
	return filepath.Join(dir, "workspace"), img, nil
}

// releaseVolume lets go of the volume's disk for one sandbox, unmounting it
// after the last.
func (d *Driver) releaseVolume(key, img string, deadline time.Time) error {
	d.volMu.Lock()
	defer d.volMu.Unlock()
	d.volRefs[key]--
	if d.volRefs[key] > 0 {
		return nil
	}
	delete(d.volRefs, key)
	dir := strings.TrimSuffix(img, ".img")
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := diskimg.Unmount(ctx, img, dir); err != nil && !errors.Is(err, diskimg.ErrStillAttached) {
		return err
	}
	return nil
}

// ListVolumes lists an owner's persistent volumes.
func (d *Driver) ListVolumes(ctx context.Context, ownerID string) ([]sandbox.Volume, error) {
	dir, ok := d.volumeOwnerDir(ownerID)
	if !ok {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []sandbox.Volume{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := []sandbox.Volume{}
	for _, e := range ents {
		name, isImage := strings.CutSuffix(e.Name(), ".img")
		if !validName(name) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		var size int64
		switch {
		case isImage && e.Type().IsRegular():
			size, _ = diskimg.Allocated(p)
		case e.IsDir():
			if _, err := os.Stat(p + ".img"); err == nil {
				continue // the mount point of an image volume
			}
			size = legacySize(ctx, p)
		default:
			continue
		}
		out = append(out, sandbox.Volume{
			Name:      name,
			SizeBytes: size,
			CreatedAt: birthTime(p),
			InUse:     d.volumeInUse(ownerID + "/" + name),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func birthTime(p string) time.Time {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_BTIME|unix.STATX_MTIME, &stx); err == nil {
		if stx.Mask&unix.STATX_BTIME != 0 {
			return time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)).UTC()
		}
		return time.Unix(stx.Mtime.Sec, int64(stx.Mtime.Nsec)).UTC()
	}
	return time.Time{}
}

// DeleteVolume removes a volume; errs.Conflict while a sandbox mounts it.
func (d *Driver) DeleteVolume(ctx context.Context, ownerID, name string) error {
	if _, ok := d.volumeOwnerDir(ownerID); !ok || !validName(name) {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "volume not found")
	}
	d.volMu.Lock()
	defer d.volMu.Unlock()
	p, img := d.volumeDir(ownerID, name), d.volumeImage(ownerID, name)
	_, perr := os.Stat(p)
	_, ierr := os.Stat(img)
	if errors.Is(perr, fs.ErrNotExist) && errors.Is(ierr, fs.ErrNotExist) {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "volume not found")
	}
	if d.volumeInUse(ownerID+"/"+name) || d.volRefs[ownerID+"/"+name] > 0 {
		return errs.E(errs.Conflict, "volume %q is mounted by a running sandbox", name)
	}
	if ierr == nil {
		// Unmounted already unless a crash left it mounted.
		if err := diskimg.Unmount(ctx, img, p); err != nil && !errors.Is(err, diskimg.ErrStillAttached) {
			return fmt.Errorf("delete volume: %w", err)
		}
		if err := os.Remove(img); err != nil {
			return fmt.Errorf("delete volume: %w", err)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete volume: %w", err)
		}
		return nil
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	return nil
}

// legacySize adds up a plain-directory volume's regular files, walking it
// through a handle (the sandbox wrote it).
func legacySize(ctx context.Context, dir string) int64 {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0
	}
	defer root.Close()
	var size int64
	_ = fs.WalkDir(root.FS(), ".", func(_ string, de fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if de.Type().IsRegular() {
			if fi, err := de.Info(); err == nil {
				size += fi.Size()
			}
		}
		return ctx.Err()
	})
	return size
}
