package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/techbossai/techboss/client"
)

// remoteArg splits "SANDBOX:PATH"; a local path ("./x", "/x", "x") has no
// colon before its first slash.
func remoteArg(s string) (id, p string, ok bool) {
	i := strings.Index(s, ":")
	if i <= 0 || strings.Contains(s[:i], "/") {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func cpCmd(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "cp")
	o := addAPIFlags(fs)
	pos, err := parseArgs(fs, args, 2, 2, "SRC DST (one of them SANDBOX:PATH; directories are copied whole)")
	if err != nil {
		return err
	}
	srcID, srcPath, srcRemote := remoteArg(pos[0])
	dstID, dstPath, dstRemote := remoteArg(pos[1])
	if srcRemote == dstRemote {
		return errors.New("cp: exactly one of SRC and DST must be SANDBOX:PATH")
	}
	c, err := connect(e, o)
	if err != nil {
		return err
	}
	var res map[string]any
	if dstRemote {
		res, err = upload(ctx, c, pos[0], dstID, dstPath)
	} else {
		res, err = download(ctx, c, srcID, srcPath, pos[1])
	}
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "copied %d files (%d bytes)\n", res["files"], res["bytes"])
	return nil
}

// upload copies a local file or directory tree to a sandbox path (a
// directory's contents land in the path; a path ending in / receives a
// file under its own name).
func upload(ctx context.Context, c *client.Client, local, id, dst string) (map[string]any, error) {
	fi, err := os.Stat(local)
	if err != nil {
		return nil, err
	}
	if dst == "" {
		dst = "/workspace"
	}
	if !fi.IsDir() {
		if strings.HasSuffix(dst, "/") {
			dst += filepath.Base(local)
		}
		f, err := os.Open(local)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		n, err := c.WriteFile(ctx, id, dst, f, fi.Mode().Perm())
		if err != nil {
			return nil, err
		}
		return map[string]any{"path": dst, "files": 1, "bytes": n}, nil
	}
	pr, pw := io.Pipe()
	var files, bytes int64
	go func() {
		tw := tar.NewWriter(pw)
		err := filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(local, p)
			if err != nil || rel == "." {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			var link string
			if info.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(p); err != nil {
					return err
				}
			} else if !info.Mode().IsRegular() && !info.IsDir() {
				return nil // sockets, devices: not copied
			}
			hdr, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			hdr.Name = filepath.ToSlash(rel)
			hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = "", "", 0, 0
			if info.IsDir() {
				hdr.Name += "/"
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if info.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				n, err := io.Copy(tw, f)
				f.Close()
				if err != nil {
					return err
				}
				files++
				bytes += n
			}
			return nil
		})
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	err = c.ArchiveIn(ctx, id, dst, pr)
	pr.CloseWithError(errors.New("upload ended"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"path": dst, "files": files, "bytes": bytes}, nil
}

// download copies a sandbox file or tree to a local path: a directory's
// contents land in local (created); a file is written to local, or into
// it when local is a directory.
func download(ctx context.Context, c *client.Client, id, src, local string) (map[string]any, error) {
	if src == "" {
		src = "/workspace"
	}
	isDir, err := remoteIsDir(ctx, c, id, src)
	if err != nil {
		return nil, err
	}
	dir, single := local, ""
	if isDir {
		if err := os.MkdirAll(local, 0o755); err != nil {
			return nil, err
		}
	} else {
		if fi, err := os.Stat(local); err == nil && fi.IsDir() {
			single = path.Base(src)
		} else {
			dir, single = filepath.Dir(local), filepath.Base(local)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	rc, err := c.ArchiveOut(ctx, id, src)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var files, bytes int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		name := strings.TrimSuffix(path.Clean(hdr.Name), "/")
		if single != "" {
			name = single // the one entry a file's archive holds
		}
		if name == "." {
			continue
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return nil, err
			}
		case tar.TypeSymlink:
			_ = root.Remove(name)
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o755); err != nil {
					return nil, err
				}
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
			if err != nil {
				return nil, err
			}
			n, err := io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, err
			}
			files++
			bytes += n
		}
	}
	return map[string]any{"path": local, "files": files, "bytes": bytes}, nil
}

func remoteIsDir(ctx context.Context, c *client.Client, id, p string) (bool, error) {
	clean := path.Clean(p)
	if clean == "/" || clean == "/workspace" || clean == "." {
		return true, nil
	}
	entries, err := c.ListDir(ctx, id, path.Dir(clean))
	if err != nil {
		return false, err
	}
	for _, en := range entries {
		if en.Name == path.Base(clean) {
			return en.Type == "dir", nil
		}
	}
	return false, fmt.Errorf("%s: no such file or directory in the sandbox", p)
}
