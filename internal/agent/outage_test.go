package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store"
)

// pgServer is a PostgreSQL server of the test's own, which it may stop and
// start again (the shared test server must stay up for other packages).
type pgServer struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	URL  string
}

func startPG(t testing.TB) *pgServer {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		need(t, "PostgreSQL server binaries (the postgresql package) are not installed")
	}
	sort.Strings(bins)
	p := &pgServer{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "techboss-agent-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() {
		_ = p.pgctl("-m", "immediate", "stop")
		os.RemoveAll(dir)
	})
	if out, err := exec.Command("chown", "postgres:", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	if out, err := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(p.bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	for try := 0; try < 5; try++ {
		p.port = 20000 + rand.IntN(20000)
		if err := p.start(); err == nil {
			p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
			return p
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
	t.Fatalf("start PostgreSQL:\n%s", log)
	return nil
}

func (p *pgServer) pgctl(args ...string) error {
	argv := append([]string{"-u", "postgres", "--", filepath.Join(p.bin, "pg_ctl"), "-D", filepath.Join(p.dir, "data"),
		"-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60"}, args...)
	out, err := exec.Command("runuser", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %v\n%s", args, err, out)
	}
	return nil
}

func (p *pgServer) start() error {
	return p.pgctl("-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=100", p.port, p.dir), "start")
}

// Stop stops the server the hard way (connections are cut, as when the
// database host goes away) and checks that it refuses connections.
func (p *pgServer) Stop() {
	p.t.Helper()
	if err := p.pgctl("-m", "immediate", "stop"); err != nil {
		p.t.Fatal(err)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port)); err == nil {
		c.Close()
		p.t.Fatal("PostgreSQL still accepts connections after stop")
	}
}

// Start starts the stopped server again on the same port.
func (p *pgServer) Start() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatal(err)
	}
}

func openPG(t testing.TB, url string) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestRunOutlivesDatabaseOutage stops PostgreSQL while a real Claude CLI
// run is in progress (right after its Bash tool starts) and starts it
// again only after the run's later events — the tool's result, the
// model's answer, the CLI's result — reached a live follower from memory.
// The run must succeed with every event in the store, in order, once, and
// the sandbox must take a new run right after. "spool" holds the waiting
// events in the spool file rather than in memory (a memory bound of one
// byte).
func TestRunOutlivesDatabaseOutage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		memory int64
	}{{"memory", 0}, {"spool", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			pg := startPG(t)
			spool := t.TempDir()
			e := newEnv(t, envOpts{pgURL: pg.URL, durability: agent.Durability{SpoolDir: spool, MemoryBytes: tc.memory, RetryMax: 200 * time.Millisecond}},
				modeltest.Bash("sleep 2; echo slept"), modeltest.Text("Finished after the outage."))
			sb := e.sandbox("alice")
			r := e.start("alice", sb.ID, "sleep a little", agent.Options{NewSession: true})

			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var live []agent.Event
			until := func(typ string) {
				t.Helper()
				for len(find(live, typ)) == 0 {
					evs, err := sub.Next(ctx)
					if errors.Is(err, io.EOF) {
						t.Fatalf("the stream ended before a %s event: %v", typ, types(live))
					}
					if err != nil {
						t.Fatalf("waiting for %s: %v (got %v)", typ, err, types(live))
					}
					live = append(live, evs...)
				}
			}
			until(agent.TypeToolUse)
			pg.Stop()
			down := time.Now()
			until(agent.TypeResult) // served from memory while the database is down
			if len(find(live, agent.TypeDone)) > 0 {
				t.Fatalf("done before the database returned: %v", types(live))
			}
			if tc.memory == 1 {
				if ms, _ := filepath.Glob(filepath.Join(spool, "*")); len(ms) == 0 {
					t.Errorf("no spool file while the database is down")
				}
			}
			pg.Start()
			t.Logf("database down for %v", time.Since(down).Round(time.Millisecond))
			for {
				evs, err := sub.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("follow after the outage: %v (got %v)", err, types(live))
				}
				live = append(live, evs...)
			}
			checkSeqs(t, live)
			if live[len(live)-1].Type != agent.TypeDone {
				t.Fatalf("last event %s, want done", live[len(live)-1].Type)
			}
			got, err := e.svc.Get(ctx, "alice", r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != agent.Succeeded || got.LastSeq != int64(len(live)) {
				t.Errorf("run = %s (%s), last_seq %d; want succeeded with last_seq %d", got.Status, got.Error, got.LastSeq, len(live))
			}
			stored, err := e.db.RunEvents(ctx, r.ID, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(seqTypes(live), seqTypes(stored)); d != "" {
				t.Errorf("stored events differ from the live ones (-live +stored):\n%s", d)
			}
			if ms, _ := filepath.Glob(filepath.Join(spool, "*")); len(ms) != 0 {
				t.Errorf("spool files left after the database returned: %v", ms)
			}
			// The sandbox takes a new run right away.
			e.model.Reset(modeltest.Text("Again."))
			r2, _ := e.do("alice", sb.ID, "again", agent.Options{NewSession: true})
			if r2.Status != agent.Succeeded {
				t.Errorf("next run = %s (%s)", r2.Status, r2.Error)
			}
		})
	}
}

func seqTypes(evs []agent.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%d %s %s", ev.Seq, ev.Type, ev.Data)
	}
	return out
}
