package storetest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// PGServer is a PostgreSQL server of one test's own, which the test may
// stop and start again (fault tests: the database going away and coming
// back). The shared server at TECHBOSS_TEST_POSTGRES_URL must never be
// stopped: other test packages use it at the same time.
type PGServer struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	// URL is the superuser URL of its "postgres" database.
	URL string
}

// StartPGServer initialises and starts a throwaway PostgreSQL on a loopback
// port (initdb + pg_ctl as the postgres user, as scripts/pg.sh does); it is
// stopped and removed at cleanup. Without the server binaries or root the
// test skips, or fails when TECHBOSS_REQUIRE_ALL=1.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	missing := func(why string) {
		if RequireAll() {
			t.Fatalf("stoppable PostgreSQL (TECHBOSS_REQUIRE_ALL=1): %s", why)
		}
		t.Skipf("skipping: %s", why)
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		missing("PostgreSQL server binaries not found (install the postgresql package)")
	}
	sort.Strings(bins)
	if os.Geteuid() != 0 {
		missing("a stoppable PostgreSQL needs root (to run it as the postgres user)")
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		missing("no postgres user: " + err.Error())
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	dir, err := os.MkdirTemp("", "techboss-pgfault.")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	s := &PGServer{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: dir}
	t.Cleanup(func() {
		_ = s.pgctl("-m", "immediate", "stop")
		_ = os.RemoveAll(dir)
	})
	if out, err := s.run("initdb", "-D", s.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// A free port, chosen once: the restarted server must come back on the
	// same address, as a real one does.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	s.Start()
	return s
}

func (s *PGServer) data() string { return filepath.Join(s.dir, "data") }

func (s *PGServer) run(name string, args ...string) ([]byte, error) {
	argv := append([]string{"-u", "postgres", "--", filepath.Join(s.bin, name)}, args...)
	return exec.Command("runuser", argv...).CombinedOutput()
}

func (s *PGServer) pgctl(args ...string) error {
	args = append([]string{"-D", s.data(), "-w", "-t", "60"}, args...)
	out, err := s.run("pg_ctl", args...)
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %w\n%s", args, err, out)
	}
	return nil
}

// Start starts the server (again) and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", s.port, s.dir)
	if err := s.pgctl("-l", filepath.Join(s.dir, "server.log"), "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		s.t.Fatalf("start PostgreSQL: %v\n%s", err, log)
	}
}

// Stop stops the server at once (immediate mode: connections are cut, as
// when the database host goes away) and waits until it has exited.
func (s *PGServer) Stop() {
	s.t.Helper()
	if err := s.pgctl("-m", "immediate", "stop"); err != nil {
		s.t.Fatalf("stop PostgreSQL: %v", err)
	}
}
