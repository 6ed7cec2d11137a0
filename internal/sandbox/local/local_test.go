package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func create(t testing.TB, d *Driver, sp sandbox.Spec) sandbox.Ref {
	t.Helper()
	return createOwned(t, d, "owner1", sp)
}

func createOwned(t testing.TB, d *Driver, owner string, sp sandbox.Spec) sandbox.Ref {
	t.Helper()
	var log bytes.Buffer
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: owner, Spec: sp, Log: &log})
	if err != nil {
		t.Fatalf("Create: %v\n%s", err, log.String())
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background(), ref); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return ref
}

type execResult struct {
	st             sandbox.ExitStatus
	stdout, stderr string
}

func sh(t testing.TB, d sandbox.Driver, ref sandbox.Ref, script string) execResult {
	if dd, ok := d.(*Driver); ok {
		defer func() {
			if t.Failed() {
				if s, err := dd.get(ref); err == nil {
					b, _ := os.ReadFile(filepath.Join(s.st.Dir, "sandbox.log"))
					t.Logf("sandbox log:\n%s", b)
				}
			}
		}()
	}
	t.Helper()
	var out, errb bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("Exec %q: %v", script, err)
	}
	return execResult{st, out.String(), errb.String()}
}

func mustSh(t testing.TB, d sandbox.Driver, ref sandbox.Ref, script string) string {
	t.Helper()
	r := sh(t, d, ref, script)
	if r.st.Code != 0 {
		t.Fatalf("%q: exit %+v\nstdout: %s\nstderr: %s", script, r.st, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestIsolation(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})

	t.Run("OnlyOwnProcesses", func(t *testing.T) {
		out := mustSh(t, d, ref, `for p in /proc/[0-9]*; do echo "${p#/proc/} $(cat $p/comm)"; done`)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) > 6 {
			t.Errorf("got %d processes visible, want only the sandbox's own:\n%s", len(lines), out)
		}
		self := filepath.Base(os.Args[0])
		if len(self) > 15 {
			self = self[:15]
		}
		for _, l := range lines {
			if strings.HasSuffix(l, " "+self) {
				t.Errorf("host process visible in the sandbox: %s", l)
			}
		}
		if !strings.HasPrefix(lines[0], "1 ") {
			t.Errorf("got first pid line %q, want the sandbox's own PID 1", lines[0])
		}
	})
	t.Run("OnlyLoopback", func(t *testing.T) {
		out := mustSh(t, d, ref, `tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '`)
		if strings.TrimSpace(out) != "lo" {
			t.Errorf("got interfaces %q, want only lo", out)
		}
	})
	t.Run("NoCapabilities", func(t *testing.T) {
		out := mustSh(t, d, ref, `grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status`)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(l, ":")
			v = strings.TrimSpace(v)
			want := "0000000000000000"
			if k == "NoNewPrivs" {
				want = "1"
			}
			if v != want {
				t.Errorf("%s: got %s, want %s", k, v, want)
			}
		}
		if r := sh(t, d, ref, "mount -t tmpfs none /mnt"); r.st.Code == 0 {
			t.Errorf("mount inside the sandbox succeeded")
		}
		if r := sh(t, d, ref, "chown 1:1 /workspace"); r.st.Code == 0 {
			t.Errorf("chown (CAP_CHOWN) succeeded")
		}
		// The agent (PID 2) keeps CAP_SETUID/SETGID on other threads:
		// commands must not be able to read or trace it.
		if r := sh(t, d, ref, "cat /proc/2/environ /proc/2/mem"); r.st.Code == 0 {
			t.Errorf("agent memory/environ readable from a command")
		}
	})
	t.Run("WritesStayInside", func(t *testing.T) {
		marker := "tb-isolation-" + sandboxtest.NewID()
		for _, p := range []string{"/usr/" + marker, "/etc/" + marker} {
			if r := sh(t, d, ref, "echo x > "+p); r.st.Code == 0 {
				t.Errorf("write to read-only host dir %s succeeded", p)
			}
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s appeared on the host", p)
				_ = os.Remove(p)
			}
		}
		mustSh(t, d, ref, "echo x > /"+marker+" && mkdir -p /var/lib/"+marker)
		for _, p := range []string{"/" + marker, "/var/lib/" + marker} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s appeared on the host", p)
				_ = os.RemoveAll(p)
			}
		}
		s, _ := d.get(ref)
		if _, err := os.Stat(filepath.Join(s.st.DiskDir, "upper", marker)); err != nil {
			t.Errorf("write to / did not land in the overlay upper dir: %v", err)
		}
	})
	t.Run("HostSecretsMasked", func(t *testing.T) {
		for _, f := range []string{"/etc/shadow", "/etc/gshadow"} {
			if _, err := os.Stat(f); err != nil {
				continue
			}
			if r := sh(t, d, ref, "cat "+f); r.stdout != "" {
				t.Errorf("%s readable in the sandbox: %d bytes", f, len(r.stdout))
			}
		}
		if _, err := os.Stat("/etc/ssl/private"); err == nil {
			if got := mustSh(t, d, ref, "ls -A /etc/ssl/private | wc -l"); strings.TrimSpace(got) != "0" {
				t.Errorf("/etc/ssl/private visible: %q entries", got)
			}
		}
		// The rest of /etc is there.
		mustSh(t, d, ref, "test -s /etc/passwd")
	})
	t.Run("HostLoopbackUnreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var wg sync.WaitGroup
		var accepted int
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted++
				c.Close()
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		probe := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && echo connected", port)
		r := execBash(t, d, ref, probe)
		if r.st.Code == 0 || strings.Contains(r.stdout, "connected") {
			t.Errorf("network none: connected to the host's 127.0.0.1:%d", port)
		}
		// Nor with network full: that is a namespace of its own too.
		full := create(t, d, sandbox.Spec{Network: sandbox.Network{Mode: "full"}})
		if r := execBash(t, d, full, probe); r.st.Code == 0 || strings.Contains(r.stdout, "connected") {
			t.Errorf("network full: connected to the host's 127.0.0.1:%d", port)
		}
		// The probe itself works: against a listener the server opens in
		// the sandbox's own namespace, it connects.
		in, err := d.Listen(testCtx(t), full, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := in.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		inProbe := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && echo connected", in.Addr().(*net.TCPAddr).Port)
		if r := execBash(t, d, full, inProbe); !strings.Contains(r.stdout, "connected") {
			t.Errorf("control: the probe cannot reach a listener on the sandbox's own loopback: %+v %q", r.st, r.stderr)
		}
		in.Close()
		ln.Close()
		wg.Wait()
		if accepted != 0 {
			t.Errorf("host listener accepted %d connections from sandboxes, want none", accepted)
		}
	})
}

func execBash(t testing.TB, d sandbox.Driver, ref sandbox.Ref, script string) execResult {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"bash", "-c", script}, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	return execResult{st, out.String(), errb.String()}
}

func TestLimits(t *testing.T) {
	d := newTestDriver(t, "")
	if d.cgMode == cgroupNone {
		t.Skip("no cgroups on this host")
	}
	t.Run("PidsLimit", func(t *testing.T) {
		ref := create(t, d, sandbox.Spec{PidsLimit: 32})
		// dash gives up at the first failed fork; the subshell keeps the counting shell alive.
		r := sh(t, d, ref, `(i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo $#`)
		n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
		if err != nil {
			t.Fatalf("got %+v %q %q", r.st, r.stdout, r.stderr)
		}
		if n >= 300 || n > 32+pidsOverhead {
			t.Errorf("fork bomb: %d processes running, want at most pids_limit", n)
		}
		if n < 16 {
			t.Errorf("only %d processes started: the bomb did not run", n)
		}
		// The sandbox survives the bomb: execs under pressure fail cleanly
		// (or run), and once the bomb's processes are gone all is normal.
		for i := 0; i < 5; i++ {
			_, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}})
			if err != nil {
				t.Fatalf("exec under fork pressure: %v", err)
			}
		}
		if !d.sbs[string(ref)].st.alive() {
			t.Fatal("sandbox died under fork pressure")
		}
	})
	t.Run("PidsLimitRecovers", func(t *testing.T) {
		ref := create(t, d, sandbox.Spec{PidsLimit: 32})
		// Short-lived bomb: its processes exit on their own.
		sh(t, d, ref, `(i=0; while [ $i -lt 300 ]; do sleep 1 & i=$((i+1)); done) 2>/dev/null; exit 0`)
		for i := 0; i < 10; i++ {
			_, _ = d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}})
		}
		// Wait (with builtins only) until the bomb's processes are gone.
		// Starting the waiter may itself fail (126) while every pid is taken.
		for {
			r := sh(t, d, ref, `while :; do set -- /proc/[0-9]*; [ $# -le 6 ] && break; done`)
			if r.st.Code == 0 {
				break
			}
			if r.st.Code != 126 {
				t.Fatalf("waiting for the bomb to end: %+v %q", r.st, r.stderr)
			}
		}
		if got := mustSh(t, d, ref, "echo alive"); got != "alive\n" {
			t.Errorf("after the bomb: got %q", got)
		}
	})
	t.Run("MemoryLimit", func(t *testing.T) {
		ref := create(t, d, sandbox.Spec{MemoryMB: 64})
		r := sh(t, d, ref, `x=$(head -c 400000000 /dev/zero | tr '\0' a); echo survived ${#x}`)
		if !r.st.OOMKilled || r.st.Signal != "SIGKILL" || r.st.Code != 137 {
			t.Errorf("memory hog: got %+v (stdout %q), want OOMKilled SIGKILL 137", r.st, r.stdout)
		}
		// The sandbox itself survives its command's OOM kill.
		if got := mustSh(t, d, ref, "echo alive"); got != "alive\n" {
			t.Errorf("after OOM: got %q", got)
		}
	})
	t.Run("CPU", func(t *testing.T) {
		ref := create(t, d, sandbox.Spec{CPU: 0.5})
		s, _ := d.get(ref)
		b, err := os.ReadFile(filepath.Join(s.st.Cgroups.dir("cpu"), "cpu.cfs_quota_us"))
		if d.cgMode == cgroupV2 {
			b, err = os.ReadFile(filepath.Join(s.st.Cgroups.dir(""), "cpu.max"))
		}
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), "50000") {
			t.Errorf("cpu quota: got %q, %v; want 50000", b, err)
		}
	})
}

// sandboxPids lists host PIDs in the sandbox's cgroups.
func sandboxPids(t testing.TB, d *Driver, ref sandbox.Ref) []int {
	s, err := d.get(ref)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := s.st.Cgroups.pids()
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

type procID struct {
	pid   int
	start uint64
}

func TestDestroyLeavesNothing(t *testing.T) {
	d := newTestDriver(t, "")
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{}})
	if err != nil {
		t.Fatal(err)
	}
	mustSh(t, d, ref, "sleep 100000 >/dev/null 2>&1 & (sleep 100000 & sleep 100000) >/dev/null 2>&1 &")
	s, _ := d.get(ref)
	st := s.st
	var procs []procID
	for _, p := range sandboxPids(t, d, ref) {
		if start, err := procStart(p); err == nil {
			procs = append(procs, procID{p, start})
		}
	}
	if len(procs) < 5 {
		t.Fatalf("got %d sandbox processes before Destroy, want bwrap, init, agent and 3 sleeps", len(procs))
	}
	if err := d.Destroy(testCtx(t), ref); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if start, err := procStart(p.pid); err == nil && start == p.start {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
			t.Errorf("process %d survived Destroy:\n%s", p.pid, b)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if bytes.Contains(b, []byte("/techboss/"+st.ID)) {
			t.Errorf("process %s still in the sandbox's cgroup", e.Name())
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mi, []byte(st.Dir)) {
		t.Errorf("a mount under %s remains", st.Dir)
	}
	for _, p := range append([]string{st.Dir}, st.Cgroups.Dirs...) {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s remains after Destroy", p)
		}
	}
}

// fileHas reports whether the file at p contains needle. It reads only the
// file's data extents (SEEK_DATA/SEEK_HOLE), a window at a time: a
// sandbox's disk image is a sparse file of disk_mb (10 GiB by default),
// which os.ReadFile would read into memory whole.
func fileHas(t *testing.T, p string, needle []byte) bool {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	fd := int(f.Fd())
	buf := make([]byte, 1<<20+len(needle))
	for off := int64(0); ; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil { // ENXIO: no data past off
			return false
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("%s: seek hole: %v", p, err)
		}
		// Scan [start, end) in windows overlapping by len(needle)-1.
		for pos := start; pos < end; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-pos)], pos)
			if bytes.Contains(buf[:n], needle) {
				return true
			}
			if err != nil || n < len(needle) {
				break
			}
			pos += int64(n - len(needle) + 1)
		}
		off = end
	}
}

func TestRecoverAfterRestart(t *testing.T) {
	dir := t.TempDir()
	d1 := newTestDriver(t, dir)
	const secret = "s3cr3t-token-value"
	ref, err := d1.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{VolumeName: "keep", Env: map[string]string{"API_TOKEN": secret}}})
	if err != nil {
		t.Fatal(err)
	}
	// The spec env (secrets) is never written to disk or to a command line.
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() && !strings.Contains(p, "/volumes/") && !strings.Contains(p, "/images/") {
			if fileHas(t, p, []byte(secret)) {
				t.Errorf("%s contains the spec env secret", p)
			}
		}
		return nil
	})
	for _, p := range sandboxPids(t, d1, ref) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); bytes.Contains(b, []byte(secret)) {
			t.Errorf("process %d has the secret on its command line", p)
		}
	}
	pid := strings.TrimSpace(mustSh(t, d1, ref, "sleep 100000 >/dev/null 2>&1 & echo $!"))

	// A new Driver over the same data dir, as after a server restart.
	d2 := newTestDriver(t, dir)
	if _, err := d2.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}}); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("Exec before Recover: got %v, want not found", err)
	}
	alive, err := d2.Recover(testCtx(t), ref)
	if err != nil || !alive {
		t.Fatalf("Recover: %v, %v", alive, err)
	}
	mustSh(t, d2, ref, "kill -0 "+pid)
	if got := mustSh(t, d2, ref, "echo $API_TOKEN"); got != secret+"\n" {
		t.Errorf("spec env after Recover: got %q", got)
	}
	if vols, _ := d2.ListVolumes(testCtx(t), "o"); len(vols) != 1 || !vols[0].InUse {
		t.Errorf("volume after Recover: got %+v, want keep in use", vols)
	}
	if alive, err := d2.Recover(testCtx(t), "no-such-sandbox"); alive || err != nil {
		t.Errorf("Recover unknown: got %v, %v", alive, err)
	}
	if err := d2.Destroy(testCtx(t), ref); err != nil {
		t.Fatal(err)
	}
	d3 := newTestDriver(t, dir)
	if alive, err := d3.Recover(testCtx(t), ref); alive || err != nil {
		t.Errorf("Recover after Destroy: got %v, %v; want false", alive, err)
	}
}

func TestRecoverDeadSandbox(t *testing.T) {
	dir := t.TempDir()
	d1 := newTestDriver(t, dir)
	ref, err := d1.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{}})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d1.get(ref)
	// Kill the sandbox behind the driver's back (as a host reboot would).
	if err := s.st.Cgroups.killAll(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	d2 := newTestDriver(t, dir)
	if alive, err := d2.Recover(testCtx(t), ref); alive || err != nil {
		t.Errorf("Recover of a dead sandbox: got %v, %v; want false", alive, err)
	}
	if err := d2.Destroy(testCtx(t), ref); err != nil {
		t.Errorf("Destroy of a dead sandbox: %v", err)
	}
	if _, err := os.Stat(s.st.Dir); err == nil {
		t.Errorf("sandbox dir remains")
	}
}

func TestNetListener(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ln, err := d.Listen(testCtx(t), ref, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "gateway-ok") })}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-done }()
	port := ln.Addr().(*net.TCPAddr).Port
	r := execBash(t, d, ref, fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d; printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' >&3; cat <&3`, port))
	if !strings.Contains(r.stdout, "gateway-ok") {
		t.Errorf("from inside: got %+v %q %q, want the gateway's answer", r.st, r.stdout, r.stderr)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err == nil {
		c.Close()
		t.Errorf("the in-sandbox listener is reachable on the host's 127.0.0.1:%d", port)
	}
	// Destroy closes it: Serve returns.
	if err := d.Destroy(testCtx(t), ref); err != nil {
		t.Fatal(err)
	}
	<-done
}

func TestVolumes(t *testing.T) {
	d := newTestDriver(t, "")
	ctx := testCtx(t)
	ref1, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "alice", Spec: sandbox.Spec{VolumeName: "proj"}})
	if err != nil {
		t.Fatal(err)
	}
	mustSh(t, d, ref1, "echo persisted > /workspace/state.txt")
	vols, err := d.ListVolumes(ctx, "alice")
	if err != nil || len(vols) != 1 || vols[0].Name != "proj" || !vols[0].InUse || vols[0].SizeBytes <= 0 {
		t.Errorf("ListVolumes: got %+v, %v", vols, err)
	}
	if err := d.DeleteVolume(ctx, "alice", "proj"); errs.KindOf(err) != errs.Conflict {
		t.Errorf("DeleteVolume while mounted: got %v, want conflict", err)
	}
	if err := d.Destroy(ctx, ref1); err != nil {
		t.Fatal(err)
	}
	ref2 := createOwned(t, d, "alice", sandbox.Spec{VolumeName: "proj"})
	if got := mustSh(t, d, ref2, "cat /workspace/state.txt"); got != "persisted\n" {
		t.Errorf("second sandbox on the volume: got %q", got)
	}
	// Another owner's volume of the same name is a different directory.
	ref3 := createOwned(t, d, "bob", sandbox.Spec{VolumeName: "proj"})
	if r := sh(t, d, ref3, "cat /workspace/state.txt"); r.st.Code == 0 {
		t.Errorf("bob sees alice's volume")
	}
	if vols, _ := d.ListVolumes(ctx, "nobody"); len(vols) != 0 {
		t.Errorf("ListVolumes for an owner without volumes: %+v", vols)
	}
	if err := d.Destroy(ctx, ref2); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVolume(ctx, "alice", "proj"); err != nil {
		t.Errorf("DeleteVolume: %v", err)
	}
	if err := d.DeleteVolume(ctx, "alice", "proj"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("DeleteVolume twice: got %v, want not found", err)
	}

	// An ephemeral workspace disappears at Destroy.
	eph, err := d.Create(ctx, sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "alice", Spec: sandbox.Spec{}})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := d.WorkspaceDir(eph)
	if err != nil {
		t.Fatal(err)
	}
	mustSh(t, d, eph, "echo x > /workspace/f")
	if b, err := os.ReadFile(filepath.Join(ws, "f")); err != nil || string(b) != "x\n" {
		t.Errorf("WorkspaceDir content: %q %v", b, err)
	}
	if err := d.Destroy(ctx, eph); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ws); err == nil {
		t.Errorf("ephemeral workspace %s remains", ws)
	}
}

func TestOverlayVanishes(t *testing.T) {
	d := newTestDriver(t, "")
	a := create(t, d, sandbox.Spec{})
	b := create(t, d, sandbox.Spec{})
	mustSh(t, d, a, "mkdir -p /opt/pkg && echo installed > /opt/pkg/file && rm -rf /home")
	if r := sh(t, d, b, "cat /opt/pkg/file"); r.st.Code == 0 {
		t.Errorf("sandbox b sees a's root write")
	}
	if r := sh(t, d, b, "test -d /home"); r.st.Code != 0 {
		t.Errorf("sandbox a's deletion leaked to b")
	}
}

func TestCreateValidation(t *testing.T) {
	d := newTestDriver(t, "")
	ctx := testCtx(t)
	for _, c := range []struct {
		name  string
		req   sandbox.CreateRequest
		field string
	}{
		{"BadID", sandbox.CreateRequest{ID: "../x", OwnerID: "o"}, "id"},
		{"BadNetwork", sandbox.CreateRequest{ID: "ok1", OwnerID: "o", Spec: sandbox.Spec{Network: sandbox.Network{Mode: "bridge"}}}, "network"},
		{"BadVolume", sandbox.CreateRequest{ID: "ok2", OwnerID: "o", Spec: sandbox.Spec{VolumeName: "../../etc"}}, "volume_name"},
		{"UnsupportedDockerfile", sandbox.CreateRequest{ID: "ok3", OwnerID: "o", Spec: sandbox.Spec{DockerfileCommands: []string{"RUN true", "COPY a b"}}}, "dockerfile_commands[1]"},
		{"BadImageRef", sandbox.CreateRequest{ID: "ok4", OwnerID: "o", Spec: sandbox.Spec{ImageBase: "UPPER CASE!"}}, "image_base"},
		{"TinyMemory", sandbox.CreateRequest{ID: "ok5", OwnerID: "o", Spec: sandbox.Spec{MemoryMB: 4}}, "memory_mb"},
		{"NegativePids", sandbox.CreateRequest{ID: "ok6", OwnerID: "o", Spec: sandbox.Spec{PidsLimit: -1}}, "pids_limit"},
		{"BadEnv", sandbox.CreateRequest{ID: "ok7", OwnerID: "o", Spec: sandbox.Spec{Env: map[string]string{"A=B": "x"}}}, "env"},
		{"GPU", sandbox.CreateRequest{ID: "ok8", OwnerID: "o", Spec: sandbox.Spec{GPU: "T4"}}, "gpu"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.Create(ctx, c.req)
			e, ok := errs.Public(err)
			if !ok || e.Kind != errs.Invalid || len(e.Fields) == 0 || e.Fields[0].Field != c.field {
				t.Errorf("got %v, want an invalid error naming %s", err, c.field)
			}
		})
	}
	if _, err := d.Exec(ctx, sandbox.Ref("x"), sandbox.ExecRequest{}); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("Exec unknown: %v", err)
	}
	ref := create(t, d, sandbox.Spec{})
	for name, req := range map[string]sandbox.ExecRequest{
		"command":  {},
		"command ": {Argv: []string{"echo", "a\x00b"}},
		"env":      {Argv: []string{"true"}, Env: map[string]string{"": "x"}},
		"workdir":  {Argv: []string{"true"}, Dir: "relative"},
	} {
		_, err := d.Exec(ctx, ref, req)
		if e, ok := errs.Public(err); !ok || e.Kind != errs.Invalid || e.Fields[0].Field != strings.TrimSpace(name) {
			t.Errorf("Exec with bad %s: got %v", name, err)
		}
	}
}

func TestNewWithoutBwrap(t *testing.T) {
	_, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin, Bwrap: "/nonexistent/bwrap"})
	if !errors.Is(err, ErrNoBwrap) || !strings.Contains(err.Error(), "install the bubblewrap package") {
		t.Errorf("got %v, want ErrNoBwrap", err)
	}
}

func TestUserSwitch(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	var out bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "id -u; grep CapEff /proc/self/status"}, User: "nobody", Stdout: &out, Stderr: io.Discard})
	if err != nil || st.Code != 0 {
		t.Fatalf("%+v %v", st, err)
	}
	if want := "65534\nCapEff:\t0000000000000000\n"; out.String() != want {
		t.Errorf("as nobody: got %q, want %q", out.String(), want)
	}
}

// rawTrue runs the host's true binary: the baseline beside driver numbers.
func rawTrue(tb testing.TB) time.Duration {
	start := time.Now()
	if err := exec.Command("/bin/true").Run(); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// TestCgroupV2Lifecycle runs a sandbox on a cgroup2 hierarchy. On this
// hybrid host the unified mount has no controllers, so it covers group
// placement, cgroup.kill at Destroy and removal, not limits.
func TestCgroupV2Lifecycle(t *testing.T) {
	requireHost(t)
	root := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		root = "/sys/fs/cgroup"
		if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
			t.Skip("no cgroup2 hierarchy mounted")
		}
	}
	d, err := New(Options{DataDir: t.TempDir(), InitBinary: initBin, CgroupRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if d.cgMode != cgroupV2 {
		t.Fatalf("got mode %v, want v2", d.cgMode)
	}
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	mustSh(t, d, ref, "sleep 100000 >/dev/null 2>&1 &")
	s, _ := d.get(ref)
	st := s.st
	pids := sandboxPids(t, d, ref)
	if len(pids) < 4 {
		t.Errorf("got %d processes in the v2 group, want bwrap, init, agent, sleep", len(pids))
	}
	if err := d.Destroy(testCtx(t), ref); err != nil {
		t.Fatal(err)
	}
	for _, dir := range st.Cgroups.Dirs {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("cgroup %s remains", dir)
		}
	}
	for _, p := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p)); bytes.Contains(b, []byte(st.ID)) {
				t.Errorf("process %d survived", p)
			}
		}
	}
}

// TestExecCancelRaces cancels execs at every point of their start and
// checks each returns and no command survives.
func TestExecCancelRaces(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	sig := make(chan sandbox.Signal, 1)
	for i := 0; i < 30; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%10)*300*time.Microsecond)
		sig <- 15 // SIGTERM, possibly before the command has started
		_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sleep", "1000"}, Signals: sig, Stdout: io.Discard})
		cancel()
		select {
		case <-sig:
		default:
		}
	}
	out := mustSh(t, d, ref, `n=0; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && n=$((n+1)); done; echo $n`)
	if out != "0\n" {
		t.Errorf("got %q sleep processes left after cancelled execs, want 0", out)
	}
}

// TestExecLargeRequest sends an argv and env far above one socket buffer.
func TestExecLargeRequest(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	big := strings.Repeat("x", 100<<10)
	env := map[string]string{}
	for i := 0; i < 10; i++ {
		env[fmt.Sprintf("BIG_%d", i)] = big
	}
	var out bytes.Buffer
	st, err := d.Exec(testCtx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", `printf '%s' "$BIG_9" | wc -c; printf '%s' "$1" | wc -c`, "sh", big}, Env: env, Stdout: &out})
	if err != nil || st.Code != 0 {
		t.Fatalf("%+v %v", st, err)
	}
	if want := fmt.Sprintf("%d\n%d\n", len(big), len(big)); strings.ReplaceAll(out.String(), " ", "") != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

// TestExecCancelKillsWhatItStarted: cancelling an exec (its connection to
// the agent closes, as when the server is killed) kills every process the
// command started, also those in sessions of their own (how Claude Code
// starts its Bash tool), the jobs those left behind, and a daemon whose
// parents are all gone (it keeps the exec's tag in its environment).
func TestExecCancelKillsWhatItStarted(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx, cancel := context.WithCancel(testCtx(t))
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", `
setsid sleep 3118 &
setsid sh -c '(sleep 3119 &); exec sleep 3120' &
sh -c 'setsid sleep 3121 & exec sleep 3122' &
(setsid sleep 3123 > /dev/null 2>&1 &)
sleep 0.2; echo ready; exec sleep 100000`}, Stdout: pw})
		pw.Close()
		done <- err
	}()
	if _, err := bufio.NewReader(pr).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	count := `n=0; for p in /proc/[0-9]*; do case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in "sleep 31"*) n=$((n+1));; esac; done; echo $n`
	if out := mustSh(t, d, ref, count); out != "6\n" {
		t.Fatalf("%q sleeps before the cancel, want 6", out)
	}
	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	<-done
	// Every one was sent SIGKILL before the exec returned; dying takes the
	// kernel a moment (a zombie's cmdline is empty).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out := mustSh(t, d, ref, count)
		if out == "0\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q processes the cancelled exec started are left, want 0", out)
		}
	}
}

// TestFileHas: the leak check finds a needle anywhere in a large sparse
// file, across a window boundary too, without reading the holes.
func TestFileHas(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8 << 30); err != nil {
		t.Fatal(err)
	}
	// Straddling the first 1 MiB window of an extent that starts at 5 GiB.
	if _, err := f.WriteAt([]byte("...s3cr3t..."), 5<<30+1<<20-6); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !fileHas(t, p, []byte("s3cr3t")) {
		t.Error("the needle at 5 GiB was not found")
	}
	if fileHas(t, p, []byte("absent")) {
		t.Error("found a needle that is not there")
	}
}

// TestVolumeOwnerDir: a team's volumes live under team-volumes/<sha256 of
// the team id>, so a team id never reaches a path as it is; a user's stay
// under volumes/<owner>; anything else is refused.
func TestVolumeOwnerDir(t *testing.T) {
	d := &Driver{opts: Options{DataDir: "/data"}}
	for _, team := range []string{"tm_abc", "../../etc", "a/b", "."} {
		dir, ok := d.volumeOwnerDir("team:" + team)
		rest, under := strings.CutPrefix(dir, "/data/team-volumes/")
		if !ok || !under || len(rest) != 64 || strings.ContainsAny(rest, "/.") {
			t.Errorf("team %q: dir %q ok %v, want /data/team-volumes/<64 hex>", team, dir, ok)
		}
	}
	if dir, ok := d.volumeOwnerDir("alice"); !ok || dir != "/data/volumes/alice" {
		t.Errorf("alice: %q %v", dir, ok)
	}
	for _, bad := range []string{"team:", "..", "a/b", ""} {
		if dir, ok := d.volumeOwnerDir(bad); ok {
			t.Errorf("owner %q accepted: %q", bad, dir)
		}
	}
}
