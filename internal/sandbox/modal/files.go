package modal

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"strings"
	"time"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// MaxFileSize bounds one WriteFile: the SDK's filesystem API holds a
// file in memory.
const MaxFileSize = 256 << 20

// cleanPath validates a sandbox path: absolute, no NUL, no "..". The
// sandbox itself is the isolation boundary on Modal, so symlinks inside it
// resolve inside it.
func cleanPath(field, p string) (string, error) {
	switch {
	case p == "":
		return "", errs.Field(field, "required")
	case strings.ContainsRune(p, 0):
		return "", errs.Field(field, "must not contain NUL")
	case !strings.HasPrefix(p, "/"):
		return "", errs.Field(field, "must be an absolute path")
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", errs.Field(field, "must not contain '..'")
		}
	}
	return path.Clean(p), nil
}

func fileInfo(fi *modalsdk.FileInfo) sandbox.FileInfo {
	out := sandbox.FileInfo{Name: fi.Name, Size: fi.Size, Mode: fs.FileMode(fi.Mode & 0o7777 & uint32(fs.ModePerm))}
	switch fi.Type {
	case modalsdk.FileTypeFile:
		out.Type = "file"
	case modalsdk.FileTypeDirectory:
		out.Type, out.Mode = "dir", out.Mode|fs.ModeDir
	case modalsdk.FileTypeSymlink:
		out.Type, out.Mode = "symlink", out.Mode|fs.ModeSymlink
		if fi.SymlinkTarget != nil {
			out.Target = *fi.SymlinkTarget
		}
	default:
		out.Type = "other"
	}
	if fi.ModifiedTime > 0 {
		sec, frac := math.Modf(fi.ModifiedTime)
		out.ModTime = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	}
	return out
}

// Stat describes one path (a symlink itself, not its target).
func (d *Driver) Stat(ctx context.Context, r sandbox.Ref, p string) (sandbox.FileInfo, error) {
	p, err := cleanPath("path", p)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	h, _, err := d.handle(r)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := h.Filesystem.Stat(ctx, p, nil)
	if err != nil {
		return sandbox.FileInfo{}, mapErr(err, "stat "+p)
	}
	return fileInfo(fi), nil
}

// ReadFile copies a file to w.
func (d *Driver) ReadFile(ctx context.Context, r sandbox.Ref, p string, w io.Writer) (sandbox.FileInfo, error) {
	fi, err := d.Stat(ctx, r, p)
	if err != nil {
		return fi, err
	}
	if fi.Type == "dir" {
		return fi, errs.Field("path", "is a directory")
	}
	h, _, err := d.handle(r)
	if err != nil {
		return fi, err
	}
	b, err := h.Filesystem.ReadBytes(ctx, path.Clean(p), nil)
	if err != nil {
		return fi, mapErr(err, "read "+p)
	}
	if _, err := w.Write(b); err != nil {
		return fi, fmt.Errorf("write file content: %w", err)
	}
	fi.Size = int64(len(b))
	return fi, nil
}

// WriteFile writes r to a file (parents are created) and sets its mode.
func (d *Driver) WriteFile(ctx context.Context, ref sandbox.Ref, p string, mode fs.FileMode, r io.Reader) (int64, error) {
	p, err := cleanPath("path", p)
	if err != nil {
		return 0, err
	}
	h, _, err := d.handle(ref)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return 0, fmt.Errorf("read file content: %w", err)
	}
	if len(b) > MaxFileSize {
		return 0, errs.E(errs.TooLarge, "file larger than %d bytes", MaxFileSize)
	}
	if err := h.Filesystem.WriteBytes(ctx, b, p, nil); err != nil {
		return 0, mapErr(err, "write "+p)
	}
	if perm := mode.Perm(); perm != 0 && perm != 0o644 {
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"chmod", fmt.Sprintf("%o", perm), p}, Dir: "/"})
		if err != nil {
			return 0, err
		}
		if st.Code != 0 {
			return 0, errs.E(errs.Forbidden, "chmod %s failed with exit code %d", p, st.Code)
		}
	}
	return int64(len(b)), nil
}

// Remove deletes a file or a directory tree.
func (d *Driver) Remove(ctx context.Context, r sandbox.Ref, p string) error {
	p, err := cleanPath("path", p)
	if err != nil {
		return err
	}
	if p == "/" || p == "/workspace" {
		return errs.Field("path", "refusing to remove "+p)
	}
	h, _, err := d.handle(r)
	if err != nil {
		return err
	}
	if err := h.Filesystem.Remove(ctx, p, &modalsdk.SandboxFilesystemRemoveParams{Recursive: true}); err != nil {
		return mapErr(err, "remove "+p)
	}
	return nil
}

// ListDir lists a directory.
func (d *Driver) ListDir(ctx context.Context, r sandbox.Ref, dir string) ([]sandbox.FileInfo, error) {
	dir, err := cleanPath("path", dir)
	if err != nil {
		return nil, err
	}
	h, _, err := d.handle(r)
	if err != nil {
		return nil, err
	}
	list, err := h.Filesystem.ListFiles(ctx, dir, nil)
	if err != nil {
		return nil, mapErr(err, "list "+dir)
	}
	out := make([]sandbox.FileInfo, 0, len(list))
	for i := range list {
		out = append(out, fileInfo(&list[i]))
	}
	return out, nil
}

// ArchiveOut writes a tar of the directory at p to w (tar runs inside).
func (d *Driver) ArchiveOut(ctx context.Context, r sandbox.Ref, p string, w io.Writer) error {
	p, err := cleanPath("path", p)
	if err != nil {
		return err
	}
	if fi, err := d.Stat(ctx, r, p); err != nil {
		return err
	} else if fi.Type != "dir" {
		return errs.Field("path", "is not a directory")
	}
	var stderr bytes.Buffer
	st, err := d.Exec(ctx, r, sandbox.ExecRequest{Argv: []string{"tar", "-c", "-f", "-", "-C", p, "."}, Dir: "/", Stdout: w, Stderr: &limitedBuffer{b: &stderr, n: 4096}})
	if err != nil {
		return err
	}
	if st.Code != 0 {
		return errs.E(errs.BadGateway, "tar in the sandbox failed (exit %d): %s", st.Code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ArchiveIn extracts a tar stream into the directory at p (created if
// missing). Entries that would land outside p — absolute names, "..",
// hard links out, or paths through a symlink the archive itself created —
// are refused with errs.Invalid before tar sees them.
func (d *Driver) ArchiveIn(ctx context.Context, ref sandbox.Ref, p string, r io.Reader) error {
	p, err := cleanPath("path", p)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	checkErr := make(chan error, 1)
	go func() {
		err := filterTar(r, pw)
		checkErr <- err
		_ = pw.CloseWithError(err)
	}()
	var stderr bytes.Buffer
	st, execErr := d.Exec(ctx, ref, sandbox.ExecRequest{
		Argv:  []string{"sh", "-c", `mkdir -p "$0" && exec tar -x -f - -C "$0"`, p},
		Dir:   "/",
		Stdin: pr, Stdout: io.Discard, Stderr: &limitedBuffer{b: &stderr, n: 4096},
	})
	_ = pr.CloseWithError(errors.New("archive extraction finished"))
	var cerr error
	select {
	case cerr = <-checkErr:
	case <-time.After(5 * time.Second):
	}
	if cerr != nil && errs.KindOf(cerr) != errs.Internal {
		return cerr
	}
	if execErr != nil {
		return execErr
	}
	if cerr != nil {
		return fmt.Errorf("read archive: %w", cerr)
	}
	if st.Code != 0 {
		return errs.E(errs.Invalid, "extracting the archive failed (exit %d): %s", st.Code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// filterTar re-encodes a tar stream, refusing unsafe entries.
func filterTar(r io.Reader, w io.Writer) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	links := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			return errs.Wrap(errs.Invalid, err, "archive: not a valid tar stream")
		}
		name, err := safeName(hdr.Name)
		if err != nil {
			return err
		}
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if links[dir] {
				return errs.Field("archive", fmt.Sprintf("entry %q goes through symlink %q", hdr.Name, dir))
			}
		}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			links[name] = true
		case tar.TypeLink:
			if _, err := safeName(hdr.Linkname); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return errs.Field("archive", fmt.Sprintf("entry %q: device and fifo entries are not allowed", hdr.Name))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

func safeName(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	if n == "" || strings.HasPrefix(n, "/") || strings.ContainsRune(n, 0) {
		return "", errs.Field("archive", fmt.Sprintf("entry %q: absolute or empty names are not allowed", name))
	}
	for _, el := range strings.Split(n, "/") {
		if el == ".." {
			return "", errs.Field("archive", fmt.Sprintf("entry %q: '..' is not allowed", name))
		}
	}
	return path.Clean(n), nil
}

// limitedBuffer keeps the first n bytes written to it.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
