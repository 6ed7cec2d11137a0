package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/image"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

// resolveImage returns the root filesystem for a spec: the host skeleton or
// a pulled image, plus the cached or freshly built dockerfile_commands layer.
func (d *Driver) resolveImage(ctx context.Context, sp sandbox.Spec, regAuth *sandbox.RegistryAuth, log io.Writer) (image.Rootfs, error) {
	// Validate the commands before any pull, so a bad line fails fast.
	if _, err := image.Parse(sp.DockerfileCommands); err != nil {
		return image.Rootfs{}, err
	}
	var base image.Rootfs
	switch sp.ImageBase {
	case "", "host":
		skel, err := d.hostSkeleton()
		if err != nil {
			return image.Rootfs{}, err
		}
		base = image.Rootfs{Layers: []string{skel}, Digest: "host", Host: true,
			Config: image.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}}
	default:
		var err error
		var auth authn.Authenticator
		if regAuth != nil {
			auth = &authn.Basic{Username: regAuth.Username, Password: regAuth.Password}
		}
		base, err = d.images.PullAuth(ctx, sp.ImageBase, auth, log)
		if err != nil {
			return image.Rootfs{}, err
		}
	}
	if len(sp.DockerfileCommands) == 0 {
		return base, nil
	}
	return d.images.Build(ctx, base, sp.DockerfileCommands, log, d.runBuild)
}

// runBuild runs RUN steps in a build sandbox: network allowed, the upper
// dir kept as the build's layer, no workspace volume.
func (d *Driver) runBuild(ctx context.Context, base image.Rootfs, upper string, steps []image.Step, log io.Writer) error {
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := "build-" + hex.EncodeToString(b[:])
	// RUN steps fetch packages: a full network, under the same rules as a
	// sandbox's (no host, no private ranges).
	policy, _ := d.netPolicy(sandbox.Network{Mode: sandbox.NetworkFull})
	st, err := d.start(ctx, startRequest{id: id, owner: "build", rootfs: base, network: true, policy: policy,
		spNet: sandbox.Network{Mode: sandbox.NetworkFull}, upper: upper, log: log})
	if err != nil {
		return fmt.Errorf("start build sandbox: %w", err)
	}
	torn := false
	defer func() {
		if torn {
			return
		}
		if err := d.teardown(st); err != nil {
			d.log.Error("remove build sandbox", "sandbox_id", id, "err", err)
		}
	}()
	if log == nil {
		log = io.Discard
	}
	for _, s := range steps {
		logf(log, "RUN %s", strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(s.Raw, "RUN"), "run")))
		// mkdir -p the working directory first, as docker build does.
		dirReq := agent.Request{Op: "exec", Argv: []string{"mkdir", "-p", s.Dir}, Env: s.Env, Dir: "/"}
		_, _ = d.exec(ctx, &st, dirReq, sandbox.ExecRequest{})
		var tail tailWriter
		out := io.MultiWriter(log, &tail)
		es, err := d.exec(ctx, &st, agent.Request{Op: "exec", Argv: s.Argv, Env: s.Env, Dir: s.Dir, User: s.User},
			sandbox.ExecRequest{Stdout: out, Stderr: out})
		if err != nil {
			return fmt.Errorf("build step %q: %w", s.Raw, err)
		}
		if es.Code != 0 {
			e := errs.E(errs.Invalid, "dockerfile_commands: %q failed with exit code %d: %s", s.Raw, es.Code, tail.String())
			e.Fields = []errs.FieldError{{Field: "dockerfile_commands", Reason: fmt.Sprintf("%q exited with code %d", s.Raw, es.Code)}}
			return e
		}
	}
	// The build's processes end before the server looks at what they
	// wrote; then only through a handle on the layer.
	torn = true
	if err := d.teardown(st); err != nil {
		return fmt.Errorf("remove build sandbox: %w", err)
	}
	// Build sandboxes leave their mount points behind in the layer; drop
	// the ones that would shadow nothing useful but keep real content.
	root, err := os.OpenRoot(upper)
	if err != nil {
		return fmt.Errorf("open build layer: %w", err)
	}
	defer root.Close()
	for _, mp := range []string{"workspace"} {
		// Remove refuses a non-empty directory and never follows a link.
		if fi, err := root.Lstat(mp); err == nil && fi.IsDir() {
			_ = root.Remove(mp)
		}
	}
	return nil
}

// tailWriter keeps the last 2 KiB written, for error messages.
type tailWriter struct{ b []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = t.b[len(t.b)-2048:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(bytes.TrimSpace(t.b)) }

// hostSkeleton returns the lower layer of host-image sandboxes: empty
// mount points for the host's /usr, /etc and /lib* plus the usual top-level
// directories, and the host's merged-/usr symlinks.
func (d *Driver) hostSkeleton() (string, error) {
	d.skelMu.Lock()
	defer d.skelMu.Unlock()
	if d.skel != "" {
		return d.skel, nil
	}
	dir := filepath.Join(d.opts.DataDir, "images", fmt.Sprintf("ids-%d", d.opts.IDs.HostBase), "host-skeleton")
	marker := dir + ".complete"
	if _, err := os.Stat(marker); err == nil {
		d.skel = dir
		return dir, nil
	}
	_ = os.RemoveAll(dir)
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("host skeleton: %w", err)
	}
	mk := func(name string, mode os.FileMode) error {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return os.Chmod(p, mode)
	}
	for _, n := range []string{"usr", "etc", "home", "opt", "srv", "mnt", "media", "run", "var", "var/lib", "var/cache", "var/log", "workspace", "proc", "dev", "sys"} {
		if err := mk(n, 0o755); err != nil {
			return "", fmt.Errorf("host skeleton: %w", err)
		}
	}
	for n, m := range map[string]os.FileMode{"root": 0o700, "tmp": 0o1777 | os.ModeSticky, "var/tmp": 0o1777 | os.ModeSticky} {
		if err := mk(n, m&os.ModePerm|m&os.ModeSticky); err != nil {
			return "", fmt.Errorf("host skeleton: %w", err)
		}
	}
	for _, n := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		fi, err := os.Lstat("/" + n)
		if err != nil {
			continue
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink("/" + n)
			if err != nil {
				return "", fmt.Errorf("host skeleton: %w", err)
			}
			if err := os.Symlink(target, filepath.Join(tmp, n)); err != nil {
				return "", fmt.Errorf("host skeleton: %w", err)
			}
		} else if fi.IsDir() {
			if err := mk(n, 0o755); err != nil {
				return "", fmt.Errorf("host skeleton: %w", err)
			}
		}
	}
	// The sandbox's root owns its skeleton, as host root owns the host's.
	if err := shiftSkeleton(tmp, d.opts.IDs); err != nil {
		return "", fmt.Errorf("host skeleton: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("host skeleton: %w", err)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "", fmt.Errorf("host skeleton: %w", err)
	}
	d.skel = dir
	return dir, nil
}

// shiftSkeleton gives the skeleton (made by the server, nothing of a
// sandbox's in it) to the sandboxes' root.
func shiftSkeleton(dir string, ids sandbox.IDMap) error {
	root := int(ids.ToHost(0))
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, root, root)
	})
}
