package httpapi

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// BenchmarkPTYKeystrokeEcho: one keystroke through the terminal WebSocket
// to a program in the sandbox that echoes it (`stty raw -echo; cat`, so
// the echo is the program's, as with a shell's line editor), until the
// byte is back at the client; p50/p99 of 300. Floor: the same program on
// a pseudo-terminal of the host, one byte written to and read from its
// master directly.
func BenchmarkPTYKeystrokeEcho(b *testing.B) {
	requireSandboxHost(b)
	db := storetest.OpenSQLite(b)
	log := slog.New(slog.DiscardHandler)
	authSvc := auth.New(auth.Options{Store: db, Logger: log, Hash: auth.TestHashParams, SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: time.Minute})
	m := newSandboxManager(b, db, time.Now, sandbox.DefaultLimits())
	srv := httptest.NewServer(NewServer(Deps{Logger: log, Store: db, Auth: authSvc, Metrics: prometheus.NewRegistry(), Sandboxes: m}))
	b.Cleanup(srv.Close)
	ctx := context.Background()
	u, err := authSvc.CreateUser(ctx, "bench@example.com", testPassword, auth.RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	_, token, err := authSvc.CreateToken(ctx, u.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}
	sb, err := m.Create(ctx, u.ID, sandbox.Spec{})
	if err != nil {
		b.Fatal(err)
	}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/sandbox/"+sb.ID+"/pty", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + string(token)}},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	var seen []byte
	readUntil := func(want []byte) {
		for !bytes.Contains(seen, want) {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				b.Fatalf("read: %v (got %q)", err, seen)
			}
			if typ == websocket.MessageBinary {
				seen = append(seen, msg...)
			}
		}
		seen = seen[:0]
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte("stty raw -echo; printf RE''ADY; exec cat\r")); err != nil {
		b.Fatal(err)
	}
	readUntil([]byte("READY"))

	master, slave, err := agent.OpenPTY()
	if err != nil {
		b.Fatal(err)
	}
	defer master.Close()
	cmd := exec.Command("sh", "-c", "stty raw -echo; printf READY; exec cat")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	slave.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	local := func(want []byte) {
		buf := make([]byte, 256)
		var got []byte
		for !bytes.Contains(got, want) {
			n, err := master.Read(buf)
			if err != nil {
				b.Fatalf("host pty: %v", err)
			}
			got = append(got, buf[:n]...)
		}
	}
	local([]byte("READY"))

	const samples = 300
	measure := func(f func(k []byte)) []time.Duration {
		ds := make([]time.Duration, 0, samples)
		for i := range samples {
			k := []byte{'a' + byte(i%26)}
			t0 := time.Now()
			f(k)
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		return ds
	}
	b.ResetTimer()
	ours := measure(func(k []byte) {
		if err := c.Write(ctx, websocket.MessageBinary, k); err != nil {
			b.Fatal(err)
		}
		readUntil(k)
	})
	floor := measure(func(k []byte) {
		if _, err := master.Write(k); err != nil {
			b.Fatal(err)
		}
		local(k)
	})
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) float64 {
		return float64(ds[int(float64(len(ds)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(ours, .5), "p50-ms")
	b.ReportMetric(pct(ours, .99), "p99-ms")
	b.ReportMetric(pct(floor, .5), "floor-p50-ms")
	b.ReportMetric(pct(floor, .99), "floor-p99-ms")
	b.ReportMetric(0, "ns/op")
}
