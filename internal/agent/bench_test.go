package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// BenchmarkRunWallVsBareCLI runs the same text prompt through the whole
// run stack (service, real local sandbox, gateway, event log) and as the
// bare CLI on the host straight at the model server (the floor),
// alternating, 5 times each per b.N iteration; the medians. Dirty pages
// left by earlier benchmarks are written back first (a run's SQLite
// commits would wait for them).
func BenchmarkRunWallVsBareCLI(b *testing.B) {
	e := newEnv(b, envOpts{}, modeltest.Text("Benchmark answer."))
	bin := modeltest.ClaudeBin(b)
	sb := e.sandbox("alice")
	home := b.TempDir()
	var full, bare []time.Duration
	syscall.Sync()
	b.ResetTimer()
	for range 5 * b.N {
		t0 := time.Now()
		r, _ := e.do("alice", sb.ID, "answer briefly", agent.Options{NewSession: true})
		full = append(full, time.Since(t0))
		if r.Status != agent.Succeeded {
			b.Fatalf("run %+v", r)
		}
		t0 = time.Now()
		cmd := exec.Command(bin, "-p", "--output-format", "stream-json", "--verbose", "--", "answer briefly")
		cmd.Dir = home
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "CLAUDE_CONFIG_DIR=" + home + "/.claude",
			"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "ANTHROPIC_BASE_URL=" + e.model.URL, "ANTHROPIC_API_KEY=k"}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("bare CLI: %v\n%s", err, out)
		}
		bare = append(bare, time.Since(t0))
	}
	b.StopTimer()
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	b.ReportMetric(median(full), "run-ms")
	b.ReportMetric(median(bare), "floor-run-ms")
}

// BenchmarkHubAppend: persisting (SQLite, WAL) and publishing one event to
// 100 live subscribers — the server's share of the CLI line → SSE path.
func BenchmarkHubAppend(b *testing.B) {
	db := openStore(b)
	ctx := b.Context()
	if err := db.CreateRun(ctx, agent.Run{ID: "run_b", SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	hub := agent.NewHub(db, nil, nil)
	hub.Open("run_b", 0)
	subs := make([]*agent.Subscription, 100)
	for i := range subs {
		subs[i], _ = hub.Subscribe(ctx, "run_b", 0)
	}
	ev := agent.NewEvent(agent.TypeText, agent.TextData{Text: "a line of assistant text of typical length, about eighty bytes."}, `{"type":"assistant"}`)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := hub.Append(ctx, "run_b", ev); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	hub.Close("run_b")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkCrossReplicaEvent: an event appended on one replica (hub A:
// persisted in PostgreSQL, then a notice) until a subscriber on another
// replica (hub B, its own database handle and LISTEN connection) has it,
// read from the store; 300 events one after another. Floor: a bare
// pg_notify on one connection until another, listening, receives it, on
// the same server.
func BenchmarkCrossReplicaEvent(b *testing.B) {
	ctx := b.Context()
	dbA, hubA, hubB := twoReplicas(b)
	if err := dbA.CreateRun(ctx, agent.Run{ID: "run_x", SandboxID: "sb", OwnerID: "u", Prompt: "p", Status: agent.Running, CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	hubA.Open("run_x", 0)
	defer hubA.Close("run_x")
	sub, err := hubB.Subscribe(ctx, "run_x", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()

	// The floor's listener and notifier: two bare connections to one
	// database (a notice stays within its database).
	floorURL := storetest.PostgresURL(b)
	var conns [2]*pgx.Conn
	for i := range conns {
		c, err := pgx.Connect(ctx, floorURL)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}
	lc, nc := conns[0], conns[1]
	if _, err := lc.Exec(ctx, "LISTEN bench_floor"); err != nil {
		b.Fatal(err)
	}
	const samples = 300
	var ours, floor []time.Duration
	seq := int64(0)
	b.ResetTimer()
	for range max(b.N, 1) * samples {
		t0 := time.Now()
		if _, err := hubA.Append(ctx, "run_x", textEvent(int(seq)+1)); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			evs, err := sub.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			got = evs[len(evs)-1].Seq == seq+1
		}
		ours = append(ours, time.Since(t0))
		seq++
		t0 = time.Now()
		if _, err := nc.Exec(ctx, `SELECT pg_notify('bench_floor', 'x')`); err != nil {
			b.Fatal(err)
		}
		if _, err := lc.WaitForNotification(ctx); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(t0))
	}
	b.StopTimer()
	q := func(ds []time.Duration, p float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(ours, .5), "p50-ms")
	b.ReportMetric(q(ours, .99), "p99-ms")
	b.ReportMetric(q(floor, .5), "floor-p50-ms")
	b.ReportMetric(q(floor, .99), "floor-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkApprovalRoundTrip: what asking before each tool call adds. The
// same run (10 Bash calls that write, then text) with permission_mode "ask" and an
// approver that answers each permission_request as soon as it arrives,
// and without asking (the floor), alternating, 3 times each. Reported:
// the wall time added per tool call, and the server's own part of it (the
// request event reaching a follower after the CLI asked, plus the
// decision leaving after the answer), p50.
func BenchmarkApprovalRoundTrip(b *testing.B) {
	const calls = 10
	script := func() []modeltest.Reply {
		var rs []modeltest.Reply
		for range calls {
			rs = append(rs, modeltest.Bash("echo x >> /workspace/approval-bench.txt"))
		}
		return append(rs, modeltest.Text("done"))
	}
	e := newEnv(b, envOpts{})
	sb := e.sandbox("alice")
	var asked, floor, server []time.Duration
	ctx := context.Background()
	b.ResetTimer()
	for range 3 * b.N {
		e.model.Reset(script()...)
		t0 := time.Now()
		r := e.start("alice", sb.ID, "append ten times", agent.Options{NewSession: true, PermissionMode: "ask"})
		sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
		if err != nil {
			b.Fatal(err)
		}
		var decidedAt time.Time
	follow:
		for {
			evs, err := sub.Next(ctx)
			if err != nil {
				break
			}
			for _, ev := range evs {
				switch ev.Type {
				case agent.TypePermissionRequest:
					server = append(server, time.Since(ev.Time))
					var d agent.PermissionRequestData
					_ = json.Unmarshal(ev.Data, &d)
					decidedAt = time.Now()
					if _, _, err := e.svc.Decide(ctx, "alice", r.ID, d.RequestID, agent.Decision{Behavior: "allow"}); err != nil {
						b.Fatal(err)
					}
				case agent.TypePermissionDecision:
					server[len(server)-1] += ev.Time.Sub(decidedAt)
				case agent.TypeDone:
					break follow
				}
			}
		}
		sub.Close()
		asked = append(asked, time.Since(t0))
		e.model.Reset(script()...)
		t0 = time.Now()
		if r, _ := e.do("alice", sb.ID, "append ten times", agent.Options{NewSession: true}); r.Status != agent.Succeeded {
			b.Fatalf("floor run %+v", r)
		}
		floor = append(floor, time.Since(t0))
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration { slices.Sort(ds); return ds[len(ds)/2] }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64((med(asked)-med(floor)).Microseconds())/1000/calls, "added-per-call-ms")
	b.ReportMetric(float64(med(floor).Microseconds())/1000/calls, "floor-per-call-ms")
	b.ReportMetric(float64(med(server).Microseconds())/1000, "server-p50-ms")
}
