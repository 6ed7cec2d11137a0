package modal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/sandbox/modal/modaltest"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer starts the loopback Modal stand-in and points the SDK at it.
// Tests using it cannot run in parallel (the SDK reads MODAL_SERVER_URL
// from the process environment).
func startServer(t *testing.T, opts modaltest.Options) *modaltest.Server {
	t.Helper()
	if _, err := exec.LookPath("bwrap"); err != nil {
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatalf("bubblewrap (bwrap) is required: %v", err)
		}
		t.Skip("why: the loopback Modal server runs sandbox commands with bubblewrap (apt bubblewrap), not installed")
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Secrets == nil {
		opts.Secrets = map[string]map[string]string{
			"s3-bucket":         {"AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "secret-test"},
			"anthropic-api-key": {"ANTHROPIC_API_KEY": "sk-ant-test"},
			"registry-creds":    {"REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"},
		}
	}
	srv, err := modaltest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("MODAL_SERVER_URL", srv.URL())
	t.Setenv("MODAL_CONFIG_PATH", filepath.Join(t.TempDir(), "no-profile.toml"))
	for _, k := range []string{"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_ENVIRONMENT", "MODAL_PROFILE"} {
		t.Setenv(k, "")
	}
	return srv
}

func newDriver(t *testing.T, opts modal.Options) *modal.Driver {
	t.Helper()
	if opts.TokenID == "" {
		opts.TokenID, opts.TokenSecret = modaltest.DefaultTokenID, modaltest.DefaultTokenSecret
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := modal.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func run(t *testing.T, d sandbox.Driver, ref sandbox.Ref, script string) (string, sandbox.ExitStatus) {
	t.Helper()
	var out, stderr bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, Stdout: &out, Stderr: &stderr})
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	if st.Code != 0 {
		t.Logf("exec %q: exit %d, stderr %q", script, st.Code, stderr.String())
	}
	return out.String(), st
}

// TestExercise runs the conformance suite on both SDK paths: V2 sandboxes
// (the default) and V1 ones (which the SDK uses for GPU sandboxes).
func TestExercise(t *testing.T) {
	startServer(t, modaltest.Options{})
	newD := func(t *testing.T) sandbox.Driver { return newDriver(t, modal.Options{}) }
	t.Run("V2", func(t *testing.T) {
		sandboxtest.Exercise(t, newD, sandboxtest.WithLargeOutput(16<<20))
	})
	t.Run("V1-GPU", func(t *testing.T) {
		sandboxtest.Exercise(t, newD, sandboxtest.WithLargeOutput(4<<20), sandboxtest.WithSpec(sandbox.Spec{ImageBase: "host", GPU: "T4"}))
	})
}

// BenchmarkExec measures one exec of `true` (plus the PID wrapper) through
// the SDK and the loopback Modal server.
func BenchmarkExec(b *testing.B) {
	if _, err := exec.LookPath("bwrap"); err != nil {
		b.Skip("why: bwrap not installed")
	}
	srv, err := modaltest.Start(modaltest.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	b.Setenv("MODAL_SERVER_URL", srv.URL())
	b.Setenv("MODAL_CONFIG_PATH", filepath.Join(b.TempDir(), "none.toml"))
	ctx := context.Background()
	d, err := modal.New(ctx, modal.Options{TokenID: modaltest.DefaultTokenID, TokenSecret: modaltest.DefaultTokenSecret})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ref, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "bench", Spec: sandbox.Spec{ImageBase: "host"}})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Destroy(ctx, ref)
	b.ResetTimer()
	for b.Loop() {
		st, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if err != nil || st.Code != 0 {
			b.Fatalf("exec: %+v %v", st, err)
		}
	}
}

func TestCreateRequestCarriesSpec(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{AppName: "tb-test", RegistrySecret: "registry-creds", Secrets: []string{"anthropic-api-key"}})
	cmds := []string{
		"RUN apk add --no-cache bash git",
		"RUN mkdir -p /workspace",
		"ENV LANG=C.UTF-8",
	}
	tests := []struct {
		name string
		spec sandbox.Spec
		want modaltest.CreateRecord
	}{
		{
			name: "gpu uses the V1 create",
			spec: sandbox.Spec{ImageBase: "alpine:3.21", DockerfileCommands: cmds, VolumeName: "proj", Env: map[string]string{"FOO": "bar"},
				CPU: 2, MemoryMB: 4096, IdleTimeoutS: 600, MaxLifetimeS: 3600, GPU: "a10g:2", Network: sandbox.Network{Mode: "full"}},
			want: modaltest.CreateRecord{
				V2:                 false,
				ImageChain:         [][]string{{"FROM alpine:3.21"}, append([]string{"FROM base"}, cmds...)},
				RegistrySecretName: "registry-creds",
				Workdir:            "/workspace",
				Env:                map[string]string{"FOO": "bar", "ANTHROPIC_API_KEY": "sk-ant-test"},
				SecretNames:        []string{"anthropic-api-key"},
				TimeoutSecs:        3600, IdleTimeoutSecs: 600,
				GPU:      "A10G:2",
				MilliCPU: 2000, MemoryMB: 4096,
				Volumes: map[string]string{"/workspace": modal.VolumeName("owner-1", "proj")},
			},
		},
		{
			name: "no gpu uses the V2 create",
			spec: sandbox.Spec{ImageBase: "alpine:3.21", DockerfileCommands: cmds, S3BucketName: "bkt", S3KeyPrefix: "users/1",
				IdleTimeoutS: 60},
			want: modaltest.CreateRecord{
				V2:                 true,
				ImageChain:         [][]string{{"FROM alpine:3.21"}, append([]string{"FROM base"}, cmds...)},
				RegistrySecretName: "registry-creds",
				Workdir:            "/workspace",
				Env:                map[string]string{"ANTHROPIC_API_KEY": "sk-ant-test"},
				SecretNames:        []string{"anthropic-api-key"},
				TimeoutSecs:        uint32(modal.DefaultLifetime / time.Second), IdleTimeoutSecs: 60,
				BlockNetwork: true,
				Volumes:      map[string]string{},
				Buckets:      []modaltest.BucketMount{{Bucket: "bkt", MountPath: modal.DefaultS3MountPath, KeyPrefix: "users/1/", SecretName: "s3-bucket"}},
			},
		},
		{
			name: "image_base host means the Claude image",
			spec: sandbox.Spec{ImageBase: "host", DockerfileCommands: []string{"RUN true"}, Network: sandbox.Network{Mode: "none"}},
			want: modaltest.CreateRecord{
				V2:                 true,
				ImageChain:         [][]string{{"FROM " + modal.DefaultHostImage}, append(append([]string{"FROM base"}, modal.ClaudeDockerfileCommands...), "RUN true")},
				RegistrySecretName: "registry-creds",
				Workdir:            "/workspace",
				Env:                map[string]string{"ANTHROPIC_API_KEY": "sk-ant-test"},
				SecretNames:        []string{"anthropic-api-key"},
				TimeoutSecs:        uint32(modal.DefaultLifetime / time.Second),
				BlockNetwork:       true,
			},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := sandboxtest.NewID()
			ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: id, OwnerID: "owner-1", Spec: tc.spec})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
			creates := srv.Creates()
			if len(creates) != i+1 {
				t.Fatalf("got %d create requests, want %d", len(creates), i+1)
			}
			got := creates[i]
			mid, _ := modal.SandboxID(ref)
			if got.SandboxID != mid {
				t.Errorf("sandbox id: got %q, want %q", got.SandboxID, mid)
			}
			tc.want.SandboxID, tc.want.AppID, tc.want.ImageID = got.SandboxID, got.AppID, got.ImageID
			tc.want.Tags = map[string]string{modal.TagSandboxID: id, modal.TagOwnerID: "owner-1"}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(modaltest.CreateRecord{}, "Raw"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("create request (-want +got):\n%s", diff)
			}
			// The sandbox really runs: env from the spec and the secret, in /workspace.
			out, st := run(t, d, ref, `printf '%s|%s|' "$FOO" "$ANTHROPIC_API_KEY"; pwd`)
			if want := tc.spec.Env["FOO"] + "|sk-ant-test|/workspace\n"; out != want || st.Code != 0 {
				t.Errorf("exec: got %q exit %d, want %q", out, st.Code, want)
			}
		})
	}
}

// TestNetworkNoneWithAllowlist: with AllowedDomains, network "none" asks
// Modal for an outbound allowlist instead of blocking everything.
func TestNetworkNoneWithAllowlist(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{AllowedDomains: []string{"techboss.example.com"}})
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21", Network: sandbox.Network{Mode: "none"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), ref)
	got := srv.Creates()[0]
	if got.BlockNetwork || !cmp.Equal(got.AllowedDomains, []string{"techboss.example.com"}) {
		t.Errorf("network: got block=%v allow=%v, want the allowlist", got.BlockNetwork, got.AllowedDomains)
	}
}

func TestErrorsMapToKinds(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	spec := sandbox.Spec{ImageBase: "alpine:3.21"}
	create := func(s sandbox.Spec) error {
		ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: s})
		if err == nil {
			_ = d.Destroy(context.Background(), ref)
		}
		return err
	}
	tests := []struct {
		name   string
		setup  func()
		spec   sandbox.Spec
		want   errs.Kind
		substr string
	}{
		{"quota", func() { srv.Fail("SandboxCreateV2", codes.ResourceExhausted, "workspace sandbox limit reached") }, spec, errs.TooMany, "limit reached"},
		{"quota v1", func() { srv.Fail("SandboxCreate", codes.ResourceExhausted, "no GPUs left") }, sandbox.Spec{ImageBase: "alpine:3.21", GPU: "H100"}, errs.TooMany, "no GPUs left"},
		{"invalid argument", func() { srv.Fail("SandboxCreateV2", codes.InvalidArgument, "bad timeout") }, spec, errs.Invalid, "bad timeout"},
		{"image build fails", func() { srv.FailNextBuild("manifest for alpine:9.99 not found") }, sandbox.Spec{ImageBase: "alpine:9.99"}, errs.Invalid, "manifest for alpine:9.99 not found"},
		{"not found", func() { srv.Fail("SandboxCreateV2", codes.NotFound, "app gone") }, spec, errs.NotFound, "app gone"},
		{"unavailable", func() {
			for range 4 {
				srv.Fail("SandboxCreateV2", codes.Unavailable, "down")
			}
		}, spec, errs.Unavailable, "down"},
		{"bad gpu", func() {}, sandbox.Spec{ImageBase: "alpine:3.21", GPU: "GTX1080"}, errs.Invalid, "gpu"},
		{"no image", func() {}, sandbox.Spec{}, errs.Invalid, "image_base"},
		{"bad volume name", func() {}, sandbox.Spec{ImageBase: "alpine:3.21", VolumeName: "../x"}, errs.Invalid, "volume_name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			err := create(tc.spec)
			if err == nil {
				t.Fatal("got nil error")
			}
			if k := errs.KindOf(err); k != tc.want {
				t.Errorf("kind: got %v, want %v (err %v)", k, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not mention %q", err, tc.substr)
			}
		})
	}

	t.Run("missing s3 secret", func(t *testing.T) {
		d2 := newDriver(t, modal.Options{S3Secret: "no-such-secret"})
		_, err := d2.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21", S3BucketName: "b"}})
		if k := errs.KindOf(err); k != errs.Dependency || !strings.Contains(err.Error(), "no-such-secret") {
			t.Errorf("got %v (kind %v), want a failed dependency naming the secret", err, k)
		}
	})
	t.Run("exec on a stopped sandbox", func(t *testing.T) {
		ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		mid, _ := modal.SandboxID(ref)
		srv.Forget(mid)
		d2 := newDriver(t, modal.Options{})
		_, err = d2.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("exec: got %v, want not found", err)
		}
		if err := d2.Destroy(testCtx(t), ref); err != nil {
			t.Errorf("destroy of a vanished sandbox: %v", err)
		}
	})
	t.Run("exec failure injected", func(t *testing.T) {
		ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
		srv.Fail("TaskExecStart", codes.ResourceExhausted, "too many execs")
		_, err = d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if k := errs.KindOf(err); k != errs.TooMany {
			t.Errorf("got %v (kind %v), want too many", err, k)
		}
	})
}

func TestNewCredentials(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		_, err := modal.New(context.Background(), modal.Options{Getenv: func(k string) string {
			if k == "MODAL_CONFIG_PATH" {
				return filepath.Join(t.TempDir(), "absent.toml")
			}
			return ""
		}})
		if !errors.Is(err, modal.ErrNoCredentials) || strings.Contains(err.Error(), "\n") {
			t.Errorf("got %v, want the one-line ErrNoCredentials", err)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		startServer(t, modaltest.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := modal.New(ctx, modal.Options{TokenID: "ak-wrong", TokenSecret: "as-wrong"})
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "modal driver") {
			t.Errorf("got %v, want a one-line error", err)
		}
	})
}

func TestRecoverAfterRestart(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	for _, gpu := range []string{"", "T4"} {
		t.Run("gpu="+gpu, func(t *testing.T) {
			d1, err := modal.New(testCtx(t), modal.Options{TokenID: modaltest.DefaultTokenID, TokenSecret: modaltest.DefaultTokenSecret})
			if err != nil {
				t.Fatal(err)
			}
			ref, err := d1.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21", GPU: gpu}})
			if err != nil {
				t.Fatal(err)
			}
			if out, _ := run(t, d1, ref, "echo before > /workspace/marker; echo ok"); out != "ok\n" {
				t.Fatalf("got %q", out)
			}
			d1.Close() // the "server restart"

			d2 := newDriver(t, modal.Options{})
			alive, err := d2.Recover(testCtx(t), ref)
			if err != nil || !alive {
				t.Fatalf("Recover after restart: got %v, %v; want true", alive, err)
			}
			if out, _ := run(t, d2, ref, "cat /workspace/marker"); out != "before\n" {
				t.Errorf("after recover: got %q", out)
			}
			mid, _ := modal.SandboxID(ref)
			srv.Stop(mid)
			d3 := newDriver(t, modal.Options{})
			if alive, err := d3.Recover(testCtx(t), ref); err != nil || alive {
				t.Errorf("Recover of a stopped sandbox: got %v, %v; want false", alive, err)
			}
			srv.Forget(mid)
			if alive, err := d3.Recover(testCtx(t), ref); err != nil || alive {
				t.Errorf("Recover of a vanished sandbox: got %v, %v; want false", alive, err)
			}
		})
	}
}

func TestVolumeAndBucket(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	ctx := testCtx(t)
	spec := sandbox.Spec{ImageBase: "alpine:3.21", VolumeName: "data"}
	ref, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "u1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	run(t, d, ref, "echo kept > /workspace/persist")
	if err := d.Destroy(ctx, ref); err != nil {
		t.Fatal(err)
	}
	ref2, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "u1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), ref2)
	if out, _ := run(t, d, ref2, "cat /workspace/persist"); out != "kept\n" {
		t.Errorf("volume content after re-create: got %q, want kept", out)
	}
	// Another owner's volume of the same name is a different Modal volume.
	ref3, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "u2", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), ref3)
	if _, st := run(t, d, ref3, "test ! -e /workspace/persist"); st.Code != 0 {
		t.Errorf("owner u2 sees owner u1's volume")
	}

	// DeleteVolume removes the Modal volume and its data; unknown names are not found.
	if err := d.Destroy(ctx, ref2); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVolume(ctx, "u1", "data"); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if dir := srv.VolumeDir(modal.VolumeName("u1", "data")); dir != "" {
		t.Errorf("volume still exists at %s", dir)
	}
	if err := d.DeleteVolume(ctx, "u1", "data"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("DeleteVolume again: got %v, want not found", err)
	}
	if n := modal.VolumeName("owner", strings.Repeat("v", 63)); len(n) > 63 {
		t.Errorf("VolumeName of a 63-char name is %d chars: %s", len(n), n)
	}

	bucket := srv.BucketDir("bkt")
	if err := os.MkdirAll(filepath.Join(bucket, "pre", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bucket, "pre", "sub", "f.txt"), []byte("from s3"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref4, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "u1", Spec: sandbox.Spec{
		ImageBase: "alpine:3.21", S3BucketName: "bkt", S3KeyPrefix: "pre", InitFromS3: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), ref4)
	if out, _ := run(t, d, ref4, "cat /workspace/sub/f.txt; echo; cat /mnt/s3/sub/f.txt"); out != "from s3\nfrom s3" {
		t.Errorf("init_from_s3: got %q", out)
	}
}

func TestSnapshotFilesystem(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy(context.Background(), ref)
	run(t, d, ref, "echo snap > /workspace/s.txt")
	id, err := d.SnapshotFilesystem(testCtx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	im, ok := srv.Image(id)
	mid, _ := modal.SandboxID(ref)
	if !ok || im.SnapshotOf != mid || !strings.HasPrefix(id, "im-") {
		t.Errorf("snapshot image %q: got %+v, want a snapshot of %s", id, im, mid)
	}
}

// TestNetworkPolicy: network "none" becomes Modal's BlockNetwork, which the
// loopback server enforces (a sandbox cannot reach a host listener), and
// "full" leaves the network open.
func TestNetworkPolicy(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("why: the probe uses node (a TCP client present on the host image), not installed")
	}
	startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	probe := fmt.Sprintf(`require("net").connect(%d, "127.0.0.1").on("connect", () => process.exit(0)).on("error", () => process.exit(3))`, ln.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		network string
		want    int
	}{{"none", 3}, {"full", 0}} {
		ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21", Network: sandbox.Network{Mode: tc.network}}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{node, "-e", probe}})
		if err != nil || st.Code != tc.want {
			t.Errorf("network %s: connect to a host listener exited %d (%v), want %d", tc.network, st.Code, err, tc.want)
		}
		_ = d.Destroy(testCtx(t), ref)
	}
}

// A spec's own registry login (registry_credential, resolved by the
// Manager) replaces the operator's registry secret for that image, as an
// ephemeral Modal secret in the registry-secret shape.
func TestCreateWithRegistryLogin(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{AppName: "tb-test", RegistrySecret: "registry-creds"})
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "owner-1",
		Spec:         sandbox.Spec{ImageBase: "registry.example.com/team/private:1", RegistryCredential: "team-registry"},
		RegistryAuth: &sandbox.RegistryAuth{Username: "robot", Password: "pw-123"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
	creates := srv.Creates()
	got := creates[len(creates)-1]
	if got.RegistrySecretName != "" || !maps.Equal(got.RegistryEnv, map[string]string{"REGISTRY_USERNAME": "robot", "REGISTRY_PASSWORD": "pw-123"}) {
		t.Fatalf("registry secret: name %q env %v", got.RegistrySecretName, got.RegistryEnv)
	}
	// Nothing of the login reaches the sandbox's own env.
	if _, ok := got.Env["REGISTRY_PASSWORD"]; ok {
		t.Fatalf("sandbox env has the registry password: %v", got.Env)
	}
}
