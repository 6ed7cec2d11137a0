package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// pushBusybox serves an in-memory registry on 127.0.0.1 and pushes the
// busybox test image.
func pushBusybox(t testing.TB) (ref string, srv *httptest.Server) {
	t.Helper()
	return sandboxtest.PushBusybox(t)
}

func TestOCIImageBuildAndCache(t *testing.T) {
	requireHost(t)
	ref, srv := pushBusybox(t)
	reg := prometheus.NewRegistry()
	d, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	spec := sandbox.Spec{
		ImageBase: ref,
		DockerfileCommands: []string{
			"ARG GREETING=hello",
			"RUN echo $GREETING > /built.txt && mkdir -p /opt/tool",
			"ENV TOOL_HOME=/opt/tool PATH=/opt/tool:$PATH",
			"WORKDIR /app",
			"RUN pwd > where.txt && printf '#!/bin/sh\\necho tool-ran\\n' > /opt/tool/mytool && chmod +x /opt/tool/mytool",
			`SHELL ["/bin/sh", "-ec"]`,
			"RUN rm -rf /home",
			"USER nobody",
		},
	}
	var log bytes.Buffer
	sb1 := createWithLog(t, d, spec, &log)
	if !strings.Contains(log.String(), "RUN") {
		t.Errorf("build log does not show the RUN steps:\n%s", log.String())
	}
	if got := mustSh(t, d, sb1, "cat /built.txt /app/where.txt; mytool; echo $TOOL_HOME $IMAGE_VAR; id -u; test -d /home || echo no-home; echo ${GREETING:-arg-not-kept}"); got != "hello\n/app\ntool-ran\n/opt/tool from-image\n65534\nno-home\narg-not-kept\n" {
		t.Errorf("built sandbox: got %q", got)
	}
	// Files written through the API and the workspace belong to the image's user.
	if _, err := d.WriteFile(testCtx(t), sb1, "/workspace/sub/api.txt", 0o644, strings.NewReader("api")); err != nil {
		t.Fatal(err)
	}
	if got := mustSh(t, d, sb1, "echo more >> /workspace/sub/api.txt && echo new > /workspace/mine && stat -c '%u %g' /workspace/sub /workspace/sub/api.txt /workspace"); got != "65534 65534\n65534 65534\n65534 65534\n" {
		t.Errorf("ownership as the image user: got %q", got)
	}
	// The image's processes still have no capabilities, as nobody or root.
	if got := mustSh(t, d, sb1, "grep CapEff /proc/self/status"); got != "CapEff:\t0000000000000000\n" {
		t.Errorf("got %q", got)
	}
	hits := func(kind string) float64 { return metricValue(t, reg, "techboss_sandbox_image_cache_hits_total", kind) }
	misses := func(kind string) float64 {
		return metricValue(t, reg, "techboss_sandbox_image_cache_misses_total", kind)
	}
	if hits("build") != 0 || misses("build") != 1 || misses("pull") != 1 {
		t.Errorf("first create: build hits %v misses %v, pull misses %v; want 0, 1, 1", hits("build"), misses("build"), misses("pull"))
	}

	// Root writes work (package installs) and vanish with the sandbox.
	asRoot := func(ref sandbox.Ref, script string) execResult {
		var out, errb bytes.Buffer
		st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, User: "root", Stdout: &out, Stderr: &errb})
		if err != nil {
			t.Fatal(err)
		}
		return execResult{st, out.String(), errb.String()}
	}
	if r := asRoot(sb1, "echo pkg > /usr/bin/installed-pkg && cat /usr/bin/installed-pkg"); r.stdout != "pkg\n" {
		t.Errorf("root write: %+v %q %q", r.st, r.stdout, r.stderr)
	}

	log.Reset()
	sb2 := createWithLog(t, d, spec, &log)
	if hits("build") != 1 || misses("build") != 1 || hits("pull") != 1 || misses("pull") != 1 {
		t.Errorf("second create: build hits %v misses %v, pull hits %v misses %v; want 1, 1, 1, 1 (no pull, no build)", hits("build"), misses("build"), hits("pull"), misses("pull"))
	}
	if strings.Contains(log.String(), "RUN ") {
		t.Errorf("second create ran the build again:\n%s", log.String())
	}
	if got := mustSh(t, d, sb2, "cat /built.txt"); got != "hello\n" {
		t.Errorf("cached build: got %q", got)
	}
	if r := asRoot(sb2, "cat /usr/bin/installed-pkg"); r.st.Code == 0 {
		t.Errorf("sandbox 2 sees sandbox 1's install")
	}

	t.Run("Errors", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			spec  sandbox.Spec
			field string
			kind  errs.Kind
		}{
			{"UnknownImage", sandbox.Spec{ImageBase: strings.Replace(ref, "busybox", "nope", 1)}, "image_base", errs.Invalid},
			{"FailingRun", sandbox.Spec{ImageBase: ref, DockerfileCommands: []string{"RUN echo boom >&2; exit 3"}}, "dockerfile_commands", errs.Invalid},
			{"Unsupported", sandbox.Spec{ImageBase: ref, DockerfileCommands: []string{"FROM alpine"}}, "dockerfile_commands[0]", errs.Invalid},
			{"Unreachable", sandbox.Spec{ImageBase: "127.0.0.1:1/x/y:z"}, "image_base", errs.Dependency},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: c.spec})
				e, ok := errs.Public(err)
				if !ok || e.Kind != c.kind || len(e.Fields) == 0 || e.Fields[0].Field != c.field {
					t.Errorf("got %v, want a %v error naming %s", err, c.kind, c.field)
				}
			})
		}
	})

	// A symlinked mount point is refused with an error naming the image.
	t.Run("SymlinkedMountPoint", func(t *testing.T) {
		id := sandboxtest.NewID()
		_, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: id, OwnerID: "o",
			Spec:   sandbox.Spec{ImageBase: ref, DockerfileCommands: []string{"RUN mkdir -p /opt && ln -s /etc /opt/tools"}},
			Mounts: []sandbox.Mount{{Source: t.TempDir(), Target: "/opt/tools/x", ReadOnly: true}},
		})
		if e, ok := errs.Public(err); !ok || e.Kind != errs.Invalid || e.Fields[0].Field != "image_base" {
			t.Errorf("got %v, want an invalid image_base error", err)
			_ = d.Destroy(context.Background(), sandbox.Ref(id))
		}
		if _, err := os.Stat("/etc/x"); err == nil {
			t.Errorf("/etc/x created on the host")
		}
	})

	// Cached images need no registry: stop it and create again.
	srv.Close()
	sb3 := createWithLog(t, d, spec, io.Discard)
	if got := mustSh(t, d, sb3, "cat /built.txt"); got != "hello\n" {
		t.Errorf("offline create: got %q", got)
	}

	// The base image alone, and the conformance suite on it.
	t.Run("Conformance", func(t *testing.T) {
		sandboxtest.Exercise(t, func(t *testing.T) sandbox.Driver { return d }, sandboxtest.WithSpec(sandbox.Spec{ImageBase: ref}), sandboxtest.WithLargeOutput(8<<20))
	})

}

func createWithLog(t testing.TB, d *Driver, sp sandbox.Spec, log io.Writer) sandbox.Ref {
	t.Helper()
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sp, Log: log})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background(), ref); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Destroy: %v", err)
		}
	})
	return ref
}

func metricValue(t testing.TB, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A private registry: a create pulls with the spec's login, and the
// image cache, shared by every user, never hands the image to a create
// without that login (by tag or by digest).
func TestPrivateRegistryLogin(t *testing.T) {
	requireHost(t)
	ref, _ := sandboxtest.PushPrivateBusybox(t, "ci-bot", "s3cr3t-registry-pw")
	d, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	create := func(auth *sandbox.RegistryAuth, image string) (sandbox.Ref, error) {
		r, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: image}, RegistryAuth: auth})
		if err == nil {
			t.Cleanup(func() { _ = d.Destroy(context.Background(), r) })
		}
		return r, err
	}
	wantField := func(err error, field string) {
		t.Helper()
		var e *errs.Error
		if !errors.As(err, &e) || len(e.Fields) == 0 || e.Fields[0].Field != field {
			t.Fatalf("err = %v, want a field error on %s", err, field)
		}
		if strings.Contains(err.Error(), "s3cr3t-registry-pw") {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
	// No login, or a wrong one: refused, naming what to fix.
	_, err = create(nil, ref)
	wantField(err, "image_base")
	_, err = create(&sandbox.RegistryAuth{Username: "ci-bot", Password: "wrong"}, ref)
	wantField(err, "registry_credential")

	sb, err := create(&sandbox.RegistryAuth{Username: "ci-bot", Password: "s3cr3t-registry-pw"}, ref)
	if err != nil {
		t.Fatalf("create with the login: %v", err)
	}
	if got := mustSh(t, d, sb, "echo $IMAGE_VAR"); got != "from-image\n" {
		t.Fatalf("got %q", got)
	}
	// The image is now in the cache: without the login it stays refused,
	// by tag and by digest (a leaked digest does not open it).
	_, err = create(nil, ref)
	wantField(err, "image_base")
	nref, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(nref, remote.WithAuth(&authn.Basic{Username: "ci-bot", Password: "s3cr3t-registry-pw"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = create(nil, strings.TrimSuffix(ref, ":latest")+"@"+desc.Digest.String())
	wantField(err, "image_base")
	// With the login again, the cached layers are used (no second pull).
	if _, err := create(&sandbox.RegistryAuth{Username: "ci-bot", Password: "s3cr3t-registry-pw"}, ref); err != nil {
		t.Fatal(err)
	}
}
