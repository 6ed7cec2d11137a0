package modaltest

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// fsToolsPath is the in-container binary the SDK's filesystem API execs
// with one JSON command argument. The server plays that binary in-process,
// confined to the sandbox's bind directories with os.Root.
const fsToolsPath = "/__modal/.bin/modal-sandbox-fs-tools"

type fsInfo struct {
	Name          string  `json:"name"`
	Path          string  `json:"path"`
	Type          string  `json:"type"`
	Size          int64   `json:"size"`
	Mode          uint32  `json:"mode"`
	Permissions   string  `json:"permissions"`
	Owner         string  `json:"owner"`
	Group         string  `json:"group"`
	ModifiedTime  float64 `json:"modified_time"`
	SymlinkTarget *string `json:"symlink_target"`
}

type fsErr struct {
	kind, msg string
}

func (e *fsErr) Error() string { return e.msg }

func classify(err error) *fsErr {
	var fe *fsErr
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.Is(err, fs.ErrNotExist):
		return &fsErr{"NotFound", "No such file or directory"}
	case errors.Is(err, fs.ErrPermission), strings.Contains(err.Error(), "path escapes"):
		return &fsErr{"PermissionDenied", "Permission denied"}
	case errors.Is(err, syscall.EISDIR):
		return &fsErr{"IsDirectory", "Is a directory"}
	case errors.Is(err, syscall.ENOTDIR):
		return &fsErr{"NotDirectory", "Not a directory"}
	case errors.Is(err, syscall.ENOTEMPTY):
		return &fsErr{"DirectoryNotEmpty", "Directory not empty"}
	case errors.Is(err, fs.ErrExist):
		return &fsErr{"PathAlreadyExists", "File exists"}
	}
	return &fsErr{"Other", err.Error()}
}

// startFSTool runs one fs-tools command against the sandbox's directories.
func (sb *sandbox) startFSTool(p *execProc, argv []string) {
	inR, inW, err := os.Pipe()
	if err != nil {
		sb.execFailed(p)
		return
	}
	p.stdin = inW
	sb.s.wg.Add(1)
	go func() {
		defer sb.s.wg.Done()
		defer inR.Close()
		code := int32(0)
		if err := sb.fsTool(argv, inR, p.out[0]); err != nil {
			fe := classify(err)
			b, _ := json.Marshal(map[string]string{"error_kind": fe.kind, "message": fe.msg})
			_, _ = p.out[1].Write(b)
			code = 1
		}
		p.out[0].close()
		p.out[1].close()
		p.closeStdin()
		p.code = &code
		close(p.done)
		sb.execEnded()
	}()
}

func (sb *sandbox) fsTool(argv []string, stdin io.Reader, stdout io.Writer) error {
	if len(argv) != 2 {
		return &fsErr{"Other", "usage: modal-sandbox-fs-tools COMMAND"}
	}
	var cmd map[string]struct {
		Path      string `json:"path"`
		Parents   bool   `json:"parents"`
		Recursive bool   `json:"recursive"`
	}
	if err := json.Unmarshal([]byte(argv[1]), &cmd); err != nil || len(cmd) != 1 {
		return &fsErr{"Other", "bad command"}
	}
	for op, a := range cmd {
		p := path.Clean(a.Path)
		b, rel, ok := sb.resolve(p)
		if !ok {
			if op == "ReadFile" || op == "Stat" || op == "ListFiles" {
				return &fsErr{"NotFound", "No such file or directory"}
			}
			return &fsErr{"PermissionDenied", "Read-only file system"}
		}
		root, err := os.OpenRoot(b.host)
		if err != nil {
			return err
		}
		defer root.Close()
		write := op == "WriteFile" || op == "MakeDirectory" || op == "Remove"
		if write && b.ro {
			return &fsErr{"PermissionDenied", "Read-only file system"}
		}
		switch op {
		case "ReadFile":
			f, err := root.Open(rel)
			if err != nil {
				return err
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil && fi.IsDir() {
				return &fsErr{"IsDirectory", "Is a directory"}
			}
			_, err = io.Copy(stdout, f)
			return err
		case "WriteFile":
			if d := path.Dir(rel); d != "." {
				if err := root.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if fi, err := root.Stat(rel); err == nil && fi.IsDir() {
				return &fsErr{"IsDirectory", "Is a directory"}
			}
			f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, stdin); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		case "MakeDirectory":
			if a.Parents {
				return root.MkdirAll(rel, 0o755)
			}
			return root.Mkdir(rel, 0o755)
		case "Remove":
			if _, err := root.Lstat(rel); err != nil {
				return err
			}
			if a.Recursive {
				return root.RemoveAll(rel)
			}
			return root.Remove(rel)
		case "Stat":
			fi, err := root.Lstat(rel)
			if err != nil {
				return err
			}
			return json.NewEncoder(stdout).Encode(infoOf(root, rel, p, fi))
		case "ListFiles":
			f, err := root.Open(rel)
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if !fi.IsDir() {
				return &fsErr{"NotDirectory", "Not a directory"}
			}
			ents, err := f.ReadDir(-1)
			if err != nil {
				return err
			}
			out := make([]fsInfo, 0, len(ents))
			for _, e := range ents {
				efi, err := e.Info()
				if err != nil {
					continue
				}
				out = append(out, infoOf(root, path.Join(rel, e.Name()), path.Join(p, e.Name()), efi))
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			return json.NewEncoder(stdout).Encode(out)
		}
		return &fsErr{"Other", "unknown command " + op}
	}
	return nil
}

func infoOf(root *os.Root, rel, abs string, fi fs.FileInfo) fsInfo {
	in := fsInfo{Name: path.Base(abs), Path: abs, Size: fi.Size(), Mode: uint32(fi.Mode().Perm()),
		Permissions: fi.Mode().Perm().String(), Owner: "root", Group: "root",
		ModifiedTime: float64(fi.ModTime().UnixNano()) / 1e9, Type: "file"}
	switch {
	case fi.IsDir():
		in.Type = "directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		in.Type = "symlink"
		if t, err := root.Readlink(rel); err == nil {
			in.SymlinkTarget = &t
		}
	}
	return in
}
