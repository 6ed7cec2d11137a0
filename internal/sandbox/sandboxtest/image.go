package sandboxtest

import (
	"archive/tar"
	"bytes"
	"crypto/subtle"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImageFile is one extra entry of a test image's root filesystem.
type ImageFile struct {
	Name string // relative path, e.g. "lib/ld-musl-x86_64.so.1"
	Mode int64
	Body []byte
	Dir  bool
}

// busyboxLayer builds a rootfs tar from Debian's static busybox: the
// binary, one symlink per applet and a minimal /etc/passwd and /etc/group.
func busyboxLayer(t testing.TB, extra []ImageFile) []byte {
	t.Helper()
	bb := "/bin/busybox"
	if out, err := exec.Command("ldd", bb).CombinedOutput(); err == nil || !strings.Contains(string(out), "not a dynamic") {
		why := "needs a static /bin/busybox (apt-get install busybox-static)"
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(n string, mode int64) {
		_ = tw.WriteHeader(&tar.Header{Name: n + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: time.Unix(1700000000, 0)})
	}
	file := func(n string, mode int64, body []byte) {
		_ = tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)})
		_, _ = tw.Write(body)
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var"} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	file("bin/busybox", 0o755, bin)
	for _, p := range strings.Fields(string(list)) {
		if p == "bin/busybox" {
			continue
		}
		target := strings.Repeat("../", strings.Count(p, "/")) + "bin/busybox"
		_ = tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: target})
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	for _, f := range extra {
		if f.Dir {
			dir(f.Name, int64(f.Mode))
			continue
		}
		file(f.Name, int64(f.Mode), f.Body)
	}
	_ = tw.Close()
	return buf.Bytes()
}

// PushBusybox serves an in-memory OCI registry on 127.0.0.1 (closed at
// cleanup) and pushes an image built from Debian's static busybox (the
// binary, one symlink per applet, /etc/passwd and /etc/group) plus extra
// files; it returns the image reference. Without a static /bin/busybox it
// skips, or fails under TECHBOSS_REQUIRE_ALL=1.
func PushBusybox(t testing.TB, extra ...ImageFile) (ref string, srv *httptest.Server) {
	t.Helper()
	return pushBusybox(t, nil, extra)
}

func pushBusybox(t testing.TB, auth *authn.Basic, extra []ImageFile) (ref string, srv *httptest.Server) {
	t.Helper()
	layerTar := busyboxLayer(t, extra)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var opts []remote.Option
	if auth != nil {
		h = basicAuth(h, auth.Username, auth.Password)
		opts = append(opts, remote.WithAuth(auth))
	}
	srv = httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	ref = u.Host + "/test/busybox:latest"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatal(err)
	}
	return ref, srv
}

// PushPrivateBusybox is PushBusybox on a registry that answers only
// requests with HTTP basic auth as username:password (as a private
// registry does: 401 with a Basic challenge otherwise).
func PushPrivateBusybox(t testing.TB, username, password string, extra ...ImageFile) (ref string, srv *httptest.Server) {
	t.Helper()
	return pushBusybox(t, &authn.Basic{Username: username, Password: password}, extra)
}

func basicAuth(next http.Handler, user, pass string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="test registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}
