// Package image turns an image_base and dockerfile_commands into a root
// filesystem for the local sandbox driver: OCI images are pulled with
// go-containerregistry (credentials from the docker config through a
// keychain) and flattened into a cache keyed by manifest digest; Dockerfile
// commands are parsed with buildkit's parser and their RUN steps executed
// by a caller-supplied Runner (a build sandbox); each build result is an
// overlay layer cached by hash(base digest + commands).
package image

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/techbossai/techboss/internal/errs"
)

// Config is the part of an image's configuration sandboxes use.
type Config struct {
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	Shell      []string `json:"shell,omitempty"`
}

// Rootfs is a ready root filesystem: overlay lower layers (topmost first).
type Rootfs struct {
	Layers []string
	Config Config
	// Digest identifies the content: the manifest digest, "host", or
	// "build:<key>" for a build result.
	Digest string
	// Host means the layers are a skeleton over which the driver binds the
	// host's /usr, /etc and /lib* read-only.
	Host bool
}

// Runner executes build steps in a build sandbox whose root is an overlay
// of base with upper as its (kept) upper directory.
type Runner func(ctx context.Context, base Rootfs, upper string, steps []Step, log io.Writer) error

// Options configures a Cache.
type Options struct {
	Dir      string         // cache directory (required)
	Keychain authn.Keychain // nil: authn.DefaultKeychain
	Logger   *slog.Logger
	// Metrics registers techboss_sandbox_image_cache_hits_total and friends (nil: not registered).
	Metrics prometheus.Registerer
	// Transport for registry requests (nil: remote's default).
	Transport http.RoundTripper
	// ShiftIDs, when set, maps an image file's owner to the host ids it
	// gets in the cache: sandboxes run in user namespaces whose root is an
	// unprivileged host id, and must own their image's files as before.
	ShiftIDs func(uid, gid int) (int, int)
}

// Cache is the on-disk image and build cache. Safe for concurrent use.
type Cache struct {
	o      Options
	sf     singleflight.Group
	hits   *prometheus.CounterVec
	misses *prometheus.CounterVec
}

// NewCache prepares the cache directory.
func NewCache(o Options) (*Cache, error) {
	if o.Dir == "" {
		return nil, errors.New("image cache: Dir is required")
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, sub := range []string{"rootfs", "builds", "tmp", "tags"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("image cache: %w", err)
		}
	}
	// Leftovers of interrupted pulls and builds.
	if ents, err := os.ReadDir(filepath.Join(o.Dir, "tmp")); err == nil {
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(o.Dir, "tmp", e.Name()))
		}
	}
	c := &Cache{
		o: o,
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_sandbox_image_cache_hits_total",
			Help: "Image pulls and builds served from the local cache, by kind (pull|build).",
		}, []string{"kind"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_sandbox_image_cache_misses_total",
			Help: "Image pulls and builds that had to fetch or run, by kind (pull|build).",
		}, []string{"kind"}),
	}
	if o.Metrics != nil {
		for _, col := range []prometheus.Collector{c.hits, c.misses} {
			if err := o.Metrics.Register(col); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("image cache metrics: %w", err)
				}
			}
		}
	}
	return c, nil
}

func (c *Cache) tmpDir(prefix string) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	d := filepath.Join(c.o.Dir, "tmp", prefix+hex.EncodeToString(b[:]))
	if err := os.Mkdir(d, 0o755); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	return d, nil
}

func readConfig(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return cfg, err
	}
	return cfg, json.Unmarshal(b, &cfg)
}

func writeConfig(dir string, cfg Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Pull resolves ref, and unless its digest is cached, downloads and
// flattens it. Errors name the image_base field.
func (c *Cache) Pull(ctx context.Context, ref string, log io.Writer) (Rootfs, error) {
	return c.PullAuth(ctx, ref, nil, log)
}

// privateMark, in a pulled image's directory, says a user's own registry
// login pulled it: it is served from the cache only to a request that
// showed the registry it may read it (see PullAuth).
const privateMark = "private"

// PullAuth is Pull with a registry login of the caller's own (nil: the
// server's keychain). Images in the cache are shared by every user, so
// the cache must not hand one user's private image to another: a pull
// with a login always asks the registry for the digest with that login
// (the answer proves access) and never records the tag, and an image it
// fetched is marked private, which the cache shortcuts (a cached digest
// or tag, no registry round trip) then skip.
func (c *Cache) PullAuth(ctx context.Context, ref string, auth authn.Authenticator, log io.Writer) (Rootfs, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Rootfs{}, errs.Field("image_base", "invalid image reference: "+err.Error())
	}
	if auth == nil {
		// A digest reference that is cached needs no registry round trip.
		if d, ok := r.(name.Digest); ok {
			if rf, err := c.cachedPublic(d.DigestStr()); err == nil {
				c.hits.WithLabelValues("pull").Inc()
				logf(log, "image %s: cached", ref)
				return rf, nil
			}
		}
		// A tag pulled before is used as is (pull policy "if not present"), so
		// creating from a cached image needs no registry round trip. Digest
		// references pin content; tags are resolved once per cache.
		if dg, err := os.ReadFile(c.tagFile(r.Name())); err == nil {
			if rf, err := c.cachedPublic(strings.TrimSpace(string(dg))); err == nil {
				c.hits.WithLabelValues("pull").Inc()
				logf(log, "image %s: cached", ref)
				return rf, nil
			}
		}
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
	}
	if auth != nil {
		opts = append(opts, remote.WithAuth(auth))
	} else {
		opts = append(opts, remote.WithAuthFromKeychain(c.o.Keychain))
	}
	if c.o.Transport != nil {
		opts = append(opts, remote.WithTransport(c.o.Transport))
	}
	logf(log, "resolving %s", ref)
	img, err := remote.Image(r, opts...)
	if err != nil {
		if auth != nil && refusedLogin(err) {
			return Rootfs{}, errs.Field("registry_credential", fmt.Sprintf("the registry refused this login for %q", ref))
		}
		return Rootfs{}, registryError(ref, err)
	}
	dg, err := img.Digest()
	if err != nil {
		return Rootfs{}, registryError(ref, err)
	}
	remember := func() {
		if auth == nil {
			c.rememberTag(r.Name(), dg.String())
		}
	}
	if rf, err := c.cachedPull(dg.String()); err == nil {
		c.hits.WithLabelValues("pull").Inc()
		remember()
		logf(log, "image %s (%s): cached", ref, dg)
		return rf, nil
	}
	v, err, _ := c.sf.Do("pull:"+dg.String(), func() (any, error) {
		if rf, err := c.cachedPull(dg.String()); err == nil {
			return rf, nil
		}
		c.misses.WithLabelValues("pull").Inc()
		return c.extract(ctx, ref, img, dg, auth != nil, log)
	})
	if err != nil {
		return Rootfs{}, err
	}
	remember()
	return v.(Rootfs), nil
}

// cachedPublic is cachedPull for the shortcuts that skip the registry:
// images a user's own login pulled are not served that way.
func (c *Cache) cachedPublic(digest string) (Rootfs, error) {
	if _, err := os.Lstat(filepath.Join(c.pullDir(digest), privateMark)); !errors.Is(err, os.ErrNotExist) {
		return Rootfs{}, errors.New("pulled with a user's registry login")
	}
	return c.cachedPull(digest)
}

func (c *Cache) tagFile(ref string) string {
	h := sha256.Sum256([]byte(ref))
	return filepath.Join(c.o.Dir, "tags", hex.EncodeToString(h[:]))
}

func (c *Cache) rememberTag(ref, digest string) {
	tmp := c.tagFile(ref) + ".tmp"
	if err := os.WriteFile(tmp, []byte(digest), 0o644); err == nil {
		_ = os.Rename(tmp, c.tagFile(ref))
	}
}

func (c *Cache) pullDir(digest string) string {
	return filepath.Join(c.o.Dir, "rootfs", strings.ReplaceAll(digest, ":", "-"))
}

func (c *Cache) cachedPull(digest string) (Rootfs, error) {
	dir := c.pullDir(digest)
	cfg, err := readConfig(dir)
	if err != nil {
		return Rootfs{}, err
	}
	return Rootfs{Layers: []string{filepath.Join(dir, "fs")}, Config: cfg, Digest: digest}, nil
}

func (c *Cache) extract(ctx context.Context, ref string, img v1.Image, dg v1.Hash, private bool, log io.Writer) (Rootfs, error) {
	layers, _ := img.Layers()
	logf(log, "pulling %s (%s, %d layers)", ref, dg, len(layers))
	cf, err := img.ConfigFile()
	if err != nil {
		return Rootfs{}, registryError(ref, err)
	}
	tmp, err := c.tmpDir("pull-")
	if err != nil {
		return Rootfs{}, err
	}
	defer os.RemoveAll(tmp)
	fsDir := filepath.Join(tmp, "fs")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return Rootfs{}, err
	}
	root, err := os.OpenRoot(fsDir)
	if err != nil {
		return Rootfs{}, err
	}
	defer root.Close()
	rc := mutate.Extract(img)
	defer rc.Close()
	stop := context.AfterFunc(ctx, func() { _ = rc.Close() })
	defer stop()
	if err := Untar(root, rc, UntarOptions{Owners: true, ChrootSymlinks: true, ShiftIDs: c.o.ShiftIDs}); err != nil {
		if ctx.Err() != nil {
			return Rootfs{}, ctx.Err()
		}
		var te *transport.Error
		if errors.As(err, &te) {
			return Rootfs{}, registryError(ref, err)
		}
		return Rootfs{}, fmt.Errorf("flatten %s: %w", ref, err)
	}
	cfg := Config{
		Env:        cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
		Shell:      cf.Config.Shell,
	}
	if err := writeConfig(tmp, cfg); err != nil {
		return Rootfs{}, err
	}
	if private {
		if err := os.WriteFile(filepath.Join(tmp, privateMark), nil, 0o644); err != nil {
			return Rootfs{}, err
		}
	}
	dst := c.pullDir(dg.String())
	if err := os.Rename(tmp, dst); err != nil && !errors.Is(err, os.ErrExist) {
		if _, serr := os.Stat(dst); serr != nil {
			return Rootfs{}, fmt.Errorf("store %s: %w", ref, err)
		}
	}
	logf(log, "pulled %s", ref)
	return c.cachedPull(dg.String())
}

// registryError classifies a registry failure as a user-visible error on image_base.
func registryError(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return errs.Field("image_base", fmt.Sprintf("image %q not found in its registry", ref))
		case http.StatusUnauthorized, http.StatusForbidden:
			return errs.Field("image_base", fmt.Sprintf("access to image %q denied (check registry credentials)", ref))
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return errs.Field("image_base", fmt.Sprintf("image %q not found in its registry", ref))
			}
		}
	}
	e := errs.Wrap(errs.Dependency, err, fmt.Sprintf("image_base: cannot pull %q", ref))
	e.Fields = []errs.FieldError{{Field: "image_base", Reason: "registry unreachable or refused: " + shortErr(err)}}
	return e
}

// refusedLogin reports whether the registry refused the credentials.
func refusedLogin(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden)
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// Build returns base with cmds applied, running them through run unless
// the result for (base digest, cmds) is cached. The build's upper
// directory is written by a build sandbox, so its content is hostile:
// Build never opens or walks it by path. It only renames the directory
// holding it into the cache, and removes it on failure with os.RemoveAll,
// which works relative to directory handles and never follows a symlink;
// the build's config is written beside it, not in it.
func (c *Cache) Build(ctx context.Context, base Rootfs, cmds []string, log io.Writer, run Runner) (Rootfs, error) {
	ins, err := Parse(cmds)
	if err != nil {
		return Rootfs{}, err
	}
	key := BuildKey(base.Digest, cmds)
	if rf, err := c.cachedBuild(base, key); err == nil {
		c.hits.WithLabelValues("build").Inc()
		logf(log, "build %s: cached", key[:12])
		return rf, nil
	}
	v, err, _ := c.sf.Do("build:"+key, func() (any, error) {
		if rf, err := c.cachedBuild(base, key); err == nil {
			return rf, nil
		}
		c.misses.WithLabelValues("build").Inc()
		steps, cfg, err := Plan(base.Config, ins)
		if err != nil {
			return nil, err
		}
		tmp, err := c.tmpDir("build-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		upper := filepath.Join(tmp, "fs")
		if err := os.Mkdir(upper, 0o755); err != nil {
			return nil, err
		}
		logf(log, "building %d commands on %s", len(cmds), base.Digest)
		if err := run(ctx, base, upper, steps, log); err != nil {
			return nil, err
		}
		if err := writeConfig(tmp, cfg); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, c.buildDir(key)); err != nil {
			if _, serr := os.Stat(c.buildDir(key)); serr != nil {
				return nil, fmt.Errorf("store build: %w", err)
			}
		}
		logf(log, "build %s done", key[:12])
		return c.cachedBuild(base, key)
	})
	if err != nil {
		return Rootfs{}, err
	}
	return v.(Rootfs), nil
}

func (c *Cache) buildDir(key string) string { return filepath.Join(c.o.Dir, "builds", key) }

func (c *Cache) cachedBuild(base Rootfs, key string) (Rootfs, error) {
	dir := c.buildDir(key)
	cfg, err := readConfig(dir)
	if err != nil {
		return Rootfs{}, err
	}
	return Rootfs{
		Layers: append([]string{filepath.Join(dir, "fs")}, base.Layers...),
		Config: cfg,
		Digest: "build:" + key,
		Host:   base.Host,
	}, nil
}
