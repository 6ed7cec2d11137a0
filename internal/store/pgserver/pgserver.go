// Package pgserver starts a PostgreSQL server of a test's own, which the
// test may stop and start again (fault tests: the shared test server of
// scripts/pg.sh must stay up for the other packages). It needs root and
// Debian's postgresql package (initdb and pg_ctl, run as postgres).
package pgserver

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// Server is a PostgreSQL server in a temp dir on a loopback port.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	// URL is the postgres:// URL of its postgres database.
	URL string
}

// Start initialises and starts a server, stopped and removed at cleanup.
// Without the binaries it skips, or fails under TECHBOSS_REQUIRE_ALL=1.
func Start(t testing.TB) *Server {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 || os.Geteuid() != 0 {
		why := "PostgreSQL server binaries (the postgresql package) and root are needed"
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	sort.Strings(bins)
	p := &Server{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "techboss-pgserver-")
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
	for range 5 {
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

func (p *Server) pgctl(args ...string) error {
	argv := append([]string{"-u", "postgres", "--", filepath.Join(p.bin, "pg_ctl"), "-D", filepath.Join(p.dir, "data"),
		"-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60"}, args...)
	out, err := exec.Command("runuser", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %v\n%s", args, err, out)
	}
	return nil
}

func (p *Server) start() error {
	return p.pgctl("-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=200", p.port, p.dir), "start")
}

// Stop stops the server the hard way (connections are cut, as when the
// database host goes away) and checks that it refuses connections.
func (p *Server) Stop() {
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
func (p *Server) Start() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatal(err)
	}
}

// CutUnderLoad cuts the server while writers goroutines write through it:
// each round the writers call write(round, writer, i) for i = 0, 1, ...
// until told to stop, the server is stopped the hard way after a random
// 100-400 ms (writes in flight meet cut connections), the writers go on
// against the stopped server for 200 ms, then they stop, the server starts
// again and after (if not nil) runs. write paces itself.
func (p *Server) CutUnderLoad(rounds, writers int, write func(round, writer, i int), after func()) {
	p.t.Helper()
	for round := range rounds {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					write(round, w, i)
				}
			})
		}
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		p.Stop()
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		p.Start()
		if after != nil {
			after()
		}
	}
}
