package sandbox_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	pe, ok := errs.Public(err)
	if !ok || pe.Kind != errs.Invalid {
		t.Fatalf("got %v, want an errs.Invalid error", err)
	}
	var fs []string
	for _, f := range pe.Fields {
		if f.Reason == "" {
			t.Errorf("field %s has no reason", f.Field)
		}
		fs = append(fs, f.Field)
	}
	return fs
}

func TestSpecValidate(t *testing.T) {
	l := sandbox.DefaultLimits()
	for _, tc := range []struct {
		name string
		spec sandbox.Spec
		want []string
	}{
		{"empty is fine", sandbox.Spec{}, nil},
		{"full valid", sandbox.Spec{
			ImageBase: "registry.example.com:5000/team/img@sha256:abc", DockerfileCommands: []string{"RUN apk add git", "ENV A=b", "WORKDIR /src", "USER 1000", "ARG X=1", `SHELL ["/bin/sh", "-c"]`},
			VolumeName: "my-vol_1.x", S3BucketName: "my-bucket.data", S3KeyPrefix: "users/a/b/", InitFromS3: true,
			Env: map[string]string{"FOO_1": "x", "_bar": ""}, CPU: 2, MemoryMB: 512, PidsLimit: 64, DiskMB: 100,
			Network: sandbox.Network{Mode: "full"}, IdleTimeoutS: 60, MaxLifetimeS: 3600, Name: "My sandbox ✓", Labels: map[string]string{"team/app": "web", "k": ""},
			FromSnapshot: "snap_0123",
		}, nil},
		{"unknown network", sandbox.Spec{Network: sandbox.Network{Mode: "host"}}, []string{"network"}},
		{"negative numbers", sandbox.Spec{CPU: -1, MemoryMB: -1, PidsLimit: -1, DiskMB: -1, IdleTimeoutS: -1, MaxLifetimeS: -1},
			[]string{"cpu", "memory_mb", "pids_limit", "disk_mb", "idle_timeout_s", "max_lifetime_s"}},
		{"over maximum", sandbox.Spec{CPU: 9, MemoryMB: 16385, PidsLimit: 32769, DiskMB: 102401, IdleTimeoutS: 86401, MaxLifetimeS: 7*86400 + 1},
			[]string{"cpu", "memory_mb", "pids_limit", "disk_mb", "idle_timeout_s", "max_lifetime_s"}},
		{"below minimum", sandbox.Spec{MemoryMB: 4, PidsLimit: 2}, []string{"memory_mb", "pids_limit"}},
		{"bad env names", sandbox.Spec{Env: map[string]string{"1A": "x", "A-B": "y", "OK": "z\x00"}}, []string{"env.1A", "env.A-B", "env.OK"}},
		{"unsupported instruction", sandbox.Spec{DockerfileCommands: []string{"RUN true", "COPY . /x", "FROM alpine"}},
			[]string{"dockerfile_commands[1]", "dockerfile_commands[2]"}},
		{"not an instruction", sandbox.Spec{DockerfileCommands: []string{"apt-get install -y git"}}, []string{"dockerfile_commands[0]"}},
		{"two instructions in one entry", sandbox.Spec{DockerfileCommands: []string{"RUN a\nRUN b"}}, []string{"dockerfile_commands[0]"}},
		{"empty instruction", sandbox.Spec{DockerfileCommands: []string{"  "}}, []string{"dockerfile_commands[0]"}},
		{"bucket rules", sandbox.Spec{S3BucketName: "My_Bucket"}, []string{"s3_bucket_name"}},
		{"bucket ip", sandbox.Spec{S3BucketName: "192.168.1.1"}, []string{"s3_bucket_name"}},
		{"bucket short", sandbox.Spec{S3BucketName: "ab"}, []string{"s3_bucket_name"}},
		{"bucket dots", sandbox.Spec{S3BucketName: "a..b"}, []string{"s3_bucket_name"}},
		{"bucket prefix", sandbox.Spec{S3BucketName: "xn--abc"}, []string{"s3_bucket_name"}},
		{"prefix dotdot", sandbox.Spec{S3KeyPrefix: "a/../b"}, []string{"s3_key_prefix"}},
		{"prefix leading slash", sandbox.Spec{S3KeyPrefix: "/a"}, []string{"s3_key_prefix"}},
		{"prefix too long", sandbox.Spec{S3KeyPrefix: strings.Repeat("a", 1025)}, []string{"s3_key_prefix"}},
		{"prefix control", sandbox.Spec{S3KeyPrefix: "a\nb"}, []string{"s3_key_prefix"}},
		{"volume name", sandbox.Spec{VolumeName: "../etc"}, []string{"volume_name"}},
		{"name too long", sandbox.Spec{Name: strings.Repeat("n", 64)}, []string{"name"}},
		{"labels", sandbox.Spec{Labels: map[string]string{"bad key": "v", "k": strings.Repeat("v", 256)}}, []string{"labels.bad key", "labels.k"}},
		{"image ref", sandbox.Spec{ImageBase: "bad image!"}, []string{"image_base"}},
		{"gpu disabled", sandbox.Spec{GPU: "A100"}, []string{"gpu"}},
		{"snapshot id", sandbox.Spec{FromSnapshot: "../x"}, []string{"from_snapshot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldsOf(t, tc.spec.Validate(l))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("full network disabled", func(t *testing.T) {
		l := sandbox.DefaultLimits()
		l.AllowFullNetwork = false
		if got := fieldsOf(t, sandbox.Spec{Network: sandbox.Network{Mode: "full"}}.Validate(l)); !cmp.Equal(got, []string{"network"}) {
			t.Errorf("got %v, want [network]", got)
		}
	})
	t.Run("too many entries", func(t *testing.T) {
		l := sandbox.DefaultLimits()
		l.MaxEnv, l.MaxLabels, l.MaxDockerfileCommands = 1, 1, 1
		s := sandbox.Spec{Env: map[string]string{"A": "", "B": ""}, Labels: map[string]string{"a": "", "b": ""}, DockerfileCommands: []string{"RUN a", "RUN b"}}
		got := fieldsOf(t, s.Validate(l))
		if diff := cmp.Diff([]string{"dockerfile_commands", "env", "labels"}, got); diff != "" {
			t.Errorf("fields (-want +got):\n%s", diff)
		}
	})
}

func TestSpecWithDefaults(t *testing.T) {
	l := sandbox.DefaultLimits()
	got := sandbox.Spec{MemoryMB: 256}.WithDefaults(l)
	want := sandbox.Spec{ImageBase: "host", CPU: l.DefaultCPU, MemoryMB: 256, PidsLimit: l.DefaultPidsLimit, DiskMB: l.DefaultDiskMB,
		Network: sandbox.Network{Mode: "none"}, IdleTimeoutS: int(l.DefaultIdleTimeout / time.Second), MaxLifetimeS: int(l.DefaultLifetime / time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "/workspace"},
		{"a/b.txt", "/workspace/a/b.txt"},
		{"/etc/hosts", "/etc/hosts"},
		{"/workspace//x/./y/", "/workspace/x/y"},
		{"..", ""},
		{"a/../../etc", ""},
		{"/workspace/..", ""},
		{"a\x00b", ""},
		{"\xff", ""},
	} {
		got, err := sandbox.CleanPath(tc.in)
		if tc.want == "" {
			if errs.KindOf(err) != errs.Invalid {
				t.Errorf("CleanPath(%q) = %q, %v; want an invalid error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"", "a", "/a/../b", "..", "a/..", "/x/y/./z", "\x00", "//..//", "/workspace/../../etc/passwd", "a/.../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := sandbox.CleanPath(p)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("CleanPath(%q) = %q: not absolute", p, got)
		}
		for seg := range strings.SplitSeq(got, "/") {
			if seg == ".." {
				t.Fatalf("CleanPath(%q) = %q: holds ..", p, got)
			}
		}
		if strings.ContainsRune(got, 0) {
			t.Fatalf("CleanPath(%q) = %q: holds NUL", p, got)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	f.Add(sandbox.Cursor{CreatedAt: time.UnixMilli(1_800_000_000_000), ID: "sb_1"}.String())
	f.Add("")
	f.Add("!!!")
	f.Add("MTIzOg")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := sandbox.ParseCursor(s)
		if err != nil {
			if errs.KindOf(err) != errs.Invalid {
				t.Fatalf("ParseCursor(%q) error kind %v, want invalid", s, errs.KindOf(err))
			}
			return
		}
		back, err := sandbox.ParseCursor(c.String())
		if err != nil || !back.CreatedAt.Equal(c.CreatedAt) || back.ID != c.ID {
			t.Fatalf("round trip of %+v: %+v, %v", c, back, err)
		}
	})
}

func FuzzSpecValidate(f *testing.F) {
	f.Add("RUN echo hi", "bucket-1", "a/b/", "vol")
	f.Add("COPY . .", "Bad", "/x", "..")
	f.Add("RUN <<EOF\nx\nEOF", "a..b", "a/../b", "")
	f.Fuzz(func(t *testing.T, cmd, bucket, prefix, vol string) {
		s := sandbox.Spec{DockerfileCommands: []string{cmd}, S3BucketName: bucket, S3KeyPrefix: prefix, VolumeName: vol}
		if err := s.Validate(sandbox.DefaultLimits()); err != nil && errs.KindOf(err) != errs.Invalid {
			t.Fatalf("Validate: %v is not an invalid-kind error", err)
		}
	})
}
