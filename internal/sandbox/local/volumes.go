package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

func (d *Driver) volumeDir(owner, name string) string {
	return filepath.Join(d.opts.DataDir, "volumes", owner, name)
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

// ListVolumes lists an owner's persistent volumes.
func (d *Driver) ListVolumes(ctx context.Context, ownerID string) ([]sandbox.Volume, error) {
	if !validName(ownerID) {
		return nil, nil
	}
	dir := filepath.Join(d.opts.DataDir, "volumes", ownerID)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []sandbox.Volume{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := []sandbox.Volume{}
	for _, e := range ents {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		var size int64
		_ = filepath.WalkDir(p, func(_ string, de fs.DirEntry, err error) error {
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
		out = append(out, sandbox.Volume{
			Name:      e.Name(),
			SizeBytes: size,
			CreatedAt: birthTime(p),
			InUse:     d.volumeInUse(ownerID + "/" + e.Name()),
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
	if !validName(ownerID) || !validName(name) {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "volume not found")
	}
	d.volMu.Lock()
	defer d.volMu.Unlock()
	p := d.volumeDir(ownerID, name)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "volume not found")
	}
	if d.volumeInUse(ownerID + "/" + name) {
		return errs.E(errs.Conflict, "volume %q is mounted by a running sandbox", name)
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	return nil
}
