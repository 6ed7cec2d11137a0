package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.Addr() != ":8080" || c.DataDir != "./data" || c.Database() != "data/techboss.db" ||
		c.SandboxDriver != "local" || c.BlobStore != "fs" || c.ClaudeCredentials != "gateway" ||
		c.LogLevel != slog.LevelInfo || c.SessionTTL != 168*time.Hour || c.CookiesSecure() ||
		c.LocalRuntime != "bwrap" || c.RunscPlatform != "systrap" {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestEnvAndFlags(t *testing.T) {
	c, err := Load([]string{"-port", "9000", "-log-level", "debug"}, env(map[string]string{
		"PORT": "7000", "DATABASE_URL": "postgres://x@localhost/db", "TECHBOSS_PUBLIC_URL": "https://tb.example.com",
		"TECHBOSS_TRUSTED_ORIGINS": "https://ui.example.com, http://localhost:3000", "S3_FORCE_PATH_STYLE": "true",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9000 { // flags win over the environment
		t.Fatalf("port = %d, want 9000", c.Port)
	}
	if got := strings.Join(c.Origins(), " "); got != "https://ui.example.com http://localhost:3000 https://tb.example.com" {
		t.Fatalf("Origins = %q", got)
	}
	if c.LogLevel != slog.LevelDebug || c.Database() != "postgres://x@localhost/db" || !c.CookiesSecure() ||
		len(c.TrustedOrigins) != 2 || !c.S3ForcePathStyle {
		t.Fatalf("config = %+v", c)
	}
}

func TestInvalidNamesTheSetting(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"PORT": "eighty"}, nil, `PORT="eighty"`},
		{map[string]string{"PORT": "70000"}, nil, "PORT"},
		{nil, []string{"-port", "x"}, "-port"},
		{map[string]string{"TECHBOSS_SANDBOX_DRIVER": "vm"}, nil, "TECHBOSS_SANDBOX_DRIVER"},
		{map[string]string{"TECHBOSS_BLOB_STORE": "s3"}, nil, "S3_BUCKET"},
		{map[string]string{"TECHBOSS_LOG_LEVEL": "loud"}, nil, "TECHBOSS_LOG_LEVEL"},
		{map[string]string{"TECHBOSS_PUBLIC_URL": "ftp://x"}, nil, "TECHBOSS_PUBLIC_URL"},
		{map[string]string{"TECHBOSS_ADMIN_EMAIL": "a@b.c"}, nil, "TECHBOSS_ADMIN_PASSWORD"},
		{map[string]string{"TECHBOSS_ADMIN_EMAIL": "a@b.c", "TECHBOSS_ADMIN_PASSWORD": "short"}, nil, "TECHBOSS_ADMIN_PASSWORD"},
		{map[string]string{"DATABASE_URL": "mysql://x"}, nil, "DATABASE_URL"},
		{map[string]string{"TECHBOSS_SESSION_TTL": "forever"}, nil, "TECHBOSS_SESSION_TTL"},
		{map[string]string{"TECHBOSS_REPLICA_TIMEOUT": "1s"}, nil, "TECHBOSS_REPLICA_TIMEOUT"},
		{map[string]string{"TECHBOSS_SNAPSHOT_KEEP_FOR": "-1h"}, nil, "TECHBOSS_SNAPSHOT_KEEP_FOR"},
		{map[string]string{"TECHBOSS_SNAPSHOT_KEEP_LAST": "-3"}, nil, "TECHBOSS_SNAPSHOT_KEEP_LAST"},
		{map[string]string{"TECHBOSS_S3_SWEEP_INTERVAL": "-1m"}, nil, "TECHBOSS_S3_SWEEP_INTERVAL"},
		{map[string]string{"TECHBOSS_SANDBOX_DRIVER": "docker"}, nil, "TECHBOSS_SANDBOX_DRIVER"},
		{map[string]string{"TECHBOSS_TRUSTED_ORIGINS": "evil"}, nil, "TECHBOSS_TRUSTED_ORIGINS"},
		{map[string]string{"S3_FORCE_PATH_STYLE": "maybe"}, nil, "S3_FORCE_PATH_STYLE"},
		{map[string]string{"TECHBOSS_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}, nil, `TECHBOSS_TRUSTED_PROXIES="10.0.0.0/8, proxy.internal"`},
		{map[string]string{"TECHBOSS_TRUSTED_PROXIES": "10.0.0.0/33"}, nil, "TECHBOSS_TRUSTED_PROXIES"},
		{map[string]string{"TECHBOSS_TRUSTED_PROXIES": "fe80::1%eth0"}, nil, "TECHBOSS_TRUSTED_PROXIES"},
		{nil, []string{"-trusted-proxies", "256.1.1.1"}, "-trusted-proxies"},
		{map[string]string{"TECHBOSS_LOCAL_RUNTIME": "kata"}, nil, "TECHBOSS_LOCAL_RUNTIME"},
		{map[string]string{"TECHBOSS_RUNSC_PLATFORM": "kvm"}, nil, "TECHBOSS_RUNSC_PLATFORM"},
		{map[string]string{"TECHBOSS_PREVIEW_DOMAIN": "https://example.com"}, nil, "TECHBOSS_PREVIEW_DOMAIN"},
		{map[string]string{"TECHBOSS_PREVIEW_DOMAIN": "*.example.com"}, nil, "TECHBOSS_PREVIEW_DOMAIN"},
		{nil, []string{"extra"}, "unexpected argument"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := Load(tc.args, env(tc.env), io.Discard)
			if err == nil {
				t.Fatalf("no error for %v %v", tc.env, tc.args)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line naming %s", msg, tc.want)
			}
		})
	}
}

func TestTrustedProxies(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil || len(c.TrustedProxies) != 0 {
		t.Fatalf("default TrustedProxies = %v, %v; want none", c.TrustedProxies, err)
	}
	c, err = Load(nil, env(map[string]string{
		"TECHBOSS_TRUSTED_PROXIES": " 10.1.2.3/8, 192.168.1.10 ,,::1, fd00::/8, ::ffff:172.16.0.1, ::ffff:172.16.0.0/108",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.TrustedProxies {
		got = append(got, p.String())
	}
	want := []string{"10.0.0.0/8", "192.168.1.10/32", "::1/128", "fd00::/8", "172.16.0.1/32", "172.16.0.0/12"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("TrustedProxies = %v, want %v", got, want)
	}
}

func TestSecretsNotEchoed(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"ANTHROPIC_API_KEY": "sk-ant-verysecret", "TECHBOSS_ADMIN_EMAIL": "a@b.c", "TECHBOSS_ADMIN_PASSWORD": "pw-verysecret"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	if out := b.String() + fmt.Sprintf("%v %+v", c, c); strings.Contains(out, "verysecret") {
		t.Fatalf("secret printed: %s", out)
	}
	if c.AnthropicAPIKey.Reveal() != "sk-ant-verysecret" {
		t.Fatal("secret value lost")
	}
	_, err = Load(nil, env(map[string]string{"TECHBOSS_ADMIN_EMAIL": "a@b.c", "TECHBOSS_ADMIN_PASSWORD": "verysecr"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
}

func TestHelp(t *testing.T) {
	var b strings.Builder
	_, err := Load([]string{"-h"}, env(nil), &b)
	if !errors.Is(err, ErrHelp) || !strings.Contains(b.String(), "TECHBOSS_DATA_DIR") {
		t.Fatalf("err %v, usage %q", err, b.String())
	}
}

func TestPreviewDomain(t *testing.T) {
	for _, d := range []string{"example.com", "dev.example.com:8443", "localhost"} {
		c, err := Load(nil, env(map[string]string{"TECHBOSS_PREVIEW_DOMAIN": d}), io.Discard)
		if err != nil || c.PreviewDomain != d {
			t.Errorf("TECHBOSS_PREVIEW_DOMAIN=%s: %v, %q", d, err, c.PreviewDomain)
		}
	}
}
