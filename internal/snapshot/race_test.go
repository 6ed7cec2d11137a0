package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/snapshot"
)

// The race tests play the attack of issue 14 against the host-side code:
// a workspace holds w/d/ (a directory of files) and w/l, a symlink to a
// host directory outside the workspace, while the racer program swaps the
// two with renameat2(RENAME_EXCHANGE) as fast as it can. Whatever the
// interleaving, Snapshot, the mirror, Restore and Import must never read
// from or write to the host directory. Each test runs raceIterations
// operations or for raceBudget, whichever ends first.
const (
	raceIterations = 300
	raceBudget     = time.Second
	raceFiles      = 40
)

var raceSecret = []byte("host secret: must never reach a snapshot\n")

var racerBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// racerBin builds internal/testbin/racer (static) once per test binary.
func racerBin(t *testing.T) string {
	t.Helper()
	racerBuild.once.Do(func() {
		racerBuild.dir, racerBuild.err = os.MkdirTemp("", "racer-")
		if racerBuild.err != nil {
			return
		}
		racerBuild.path = filepath.Join(racerBuild.dir, "racer")
		cmd := exec.Command("go", "build", "-o", racerBuild.path, "github.com/techbossai/techboss/internal/testbin/racer")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			racerBuild.err = fmt.Errorf("build racer: %v\n%s", err, out)
		}
	})
	if racerBuild.err != nil {
		t.Fatal(racerBuild.err)
	}
	return racerBuild.path
}

// racer is a running racer process.
type racer struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done bool
}

// startRacer swaps dir/a and dir/b until stopped (at most a minute).
func startRacer(t *testing.T, dir, a, b string) *racer {
	t.Helper()
	r := &racer{cmd: exec.Command(racerBin(t), "-dir", dir, "-a", a, "-b", b, "-for", "1m")}
	r.cmd.Stdout = &r.out
	r.cmd.Stderr = &r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start racer: %v", err)
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the racer (SIGTERM, then SIGKILL after a grace period) and
// waits for it; it fails the test if the racer never swapped anything.
func (r *racer) stop(t *testing.T) {
	t.Helper()
	if r.done {
		return
	}
	r.done = true
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
	grace := time.AfterFunc(5*time.Second, func() { _ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL) })
	err := r.cmd.Wait()
	grace.Stop()
	if err != nil {
		t.Errorf("racer: %v: %s", err, r.out.String())
	}
	t.Logf("%s", strings.TrimSpace(r.out.String()))
}

// raceWorkspace makes ws/w/d/ with raceFiles files and ws/w/l pointing at
// a host directory outside ws (absolutely, or by a relative path climbing
// out). The host directory holds 0600 files named like the workspace's
// own plus "secret", all with raceSecret as content.
func raceWorkspace(t *testing.T, relative bool) (ws, host string) {
	t.Helper()
	ws = filepath.Join(t.TempDir(), "ws")
	host = t.TempDir()
	for i := range raceFiles {
		write(t, ws, fmt.Sprintf("w/d/f%02d", i), fmt.Appendf(nil, "workspace file %d\n", i), 0o644)
	}
	for _, name := range []string{"secret", "f00", "f07", "f21", "f39"} {
		write(t, host, name, raceSecret, 0o600)
	}
	target := host
	if relative {
		var err error
		if target, err = filepath.Rel(filepath.Join(ws, "w"), host); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Symlink(target, filepath.Join(ws, "w", "l")))
	return ws, host
}

// hostState describes a host directory: every name with its mode and content.
func hostState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range ents {
		info, err := e.Info()
		must(t, err)
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		out[e.Name()] = fmt.Sprintf("%v %q", info.Mode(), b)
	}
	return out
}

// raceLoop runs op up to raceIterations times within raceBudget, calling
// check after each; it stops at the first failure.
func raceLoop(t *testing.T, op func(i int) error, check func(i int) bool) {
	t.Helper()
	deadline := time.Now().Add(raceBudget)
	var n, failed int
	for n = 0; n < raceIterations && time.Now().Before(deadline); n++ {
		if err := op(n); err != nil {
			failed++ // refusing a tree that changes under us is fine
			if failed == 1 {
				t.Logf("iteration %d: %v", n, err)
			}
		}
		if !check(n) {
			break
		}
	}
	t.Logf("%d iterations, %d of them refused", n, failed)
}

// drift changes the workspace away from the version: a file removed, one
// rewritten, one added, in whichever of w/d and w/l is a directory now.
// It goes through os.Root so the test itself never touches the host.
func drift(t *testing.T, ws string) {
	t.Helper()
	root, err := os.OpenRoot(ws)
	must(t, err)
	defer root.Close()
	for _, dir := range []string{"w/d/", "w/l/"} {
		_ = root.Remove(dir + "f00")
		_ = root.WriteFile(dir+"f13", []byte("drifted"), 0o644)
		_ = root.WriteFile(dir+"extra", []byte("extra"), 0o644)
	}
}

func forEachLink(t *testing.T, fn func(t *testing.T, relative bool)) {
	t.Run("absolute", func(t *testing.T) { fn(t, false) })
	t.Run("relative", func(t *testing.T) { fn(t, true) })
}

var secretSHA = func() string { s := sha256.Sum256(raceSecret); return hex.EncodeToString(s[:]) }()

// holdsSecret reports the first stored object (under prefix) whose
// content is the host secret.
func holdsSecret(t *testing.T, st blob.Store, prefix string, skip func(key string) bool) string {
	t.Helper()
	for in, err := range st.List(context.Background(), prefix) {
		must(t, err)
		if skip != nil && skip(in.Key) {
			continue
		}
		rc, err := st.Get(context.Background(), in.Key)
		must(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		must(t, err)
		if bytes.Equal(b, raceSecret) {
			return in.Key
		}
	}
	return ""
}

func TestRaceSnapshotNeverReadsHost(t *testing.T) {
	forEachLink(t, func(t *testing.T, relative bool) {
		ctx := context.Background()
		ws, _ := raceWorkspace(t, relative)
		st := fsBackend().open(t)
		r := startRacer(t, filepath.Join(ws, "w"), "d", "l")
		var bad string
		raceLoop(t, func(i int) error {
			loc := snapshot.Location{Store: st, Prefix: fmt.Sprintf("v%d", i)}
			res, err := snapshot.New(snapshot.Config{Concurrency: 4}).Snapshot(ctx, loc, ws, snapshot.Options{})
			if err != nil {
				return err
			}
			for _, e := range res.Manifest.Entries {
				if e.SHA256 == secretSHA {
					bad = fmt.Sprintf("version %d records the host secret at %s", i, e.Path)
				}
			}
			return nil
		}, func(int) bool { return bad == "" })
		r.stop(t)
		if bad != "" {
			t.Fatal(bad)
		}
		if key := holdsSecret(t, st, "", nil); key != "" {
			t.Fatalf("the store holds the host secret at %s", key)
		}
	})
}

// TestRaceSnapshotNeverFollowsInTreeSymlink: w/l -> "in", a directory of
// the workspace itself. Whatever w/d is at each instant, a version may
// record at w/d/fNN only what a regular file w/d/fNN held, never the file
// of the same name in w/in reached through the symlink.
func TestRaceSnapshotNeverFollowsInTreeSymlink(t *testing.T) {
	ctx := context.Background()
	ws := filepath.Join(t.TempDir(), "ws")
	inside := map[string]bool{}
	for i := range raceFiles {
		write(t, ws, fmt.Sprintf("w/d/f%02d", i), fmt.Appendf(nil, "workspace file %d\n", i), 0o644)
		body := fmt.Appendf(nil, "reached through the symlink %d\n", i)
		write(t, ws, fmt.Sprintf("w/in/f%02d", i), body, 0o600)
		sum := sha256.Sum256(body)
		inside[hex.EncodeToString(sum[:])] = true
	}
	must(t, os.Symlink("in", filepath.Join(ws, "w", "l")))
	st := fsBackend().open(t)
	r := startRacer(t, filepath.Join(ws, "w"), "d", "l")
	var bad string
	raceLoop(t, func(i int) error {
		loc := snapshot.Location{Store: st, Prefix: fmt.Sprintf("v%d", i)}
		res, err := snapshot.New(snapshot.Config{Concurrency: 4}).Snapshot(ctx, loc, ws, snapshot.Options{})
		if err != nil {
			return err
		}
		for _, e := range res.Manifest.Entries {
			if inside[e.SHA256] && !strings.HasPrefix(e.Path, "w/in/") {
				bad = fmt.Sprintf("version %d records at %s the content of a file reached through w/l", i, e.Path)
			}
		}
		return nil
	}, func(int) bool { return bad == "" })
	r.stop(t)
	if bad != "" {
		t.Fatal(bad)
	}
}

func TestRaceMirrorNeverReadsHost(t *testing.T) {
	forEachLink(t, func(t *testing.T, relative bool) {
		ctx := context.Background()
		ws, _ := raceWorkspace(t, relative)
		st := fsBackend().open(t)
		r := startRacer(t, filepath.Join(ws, "w"), "d", "l")
		area := func(key string) bool { return strings.Contains(key, "/"+snapshot.Area+"/") }
		var bad string
		raceLoop(t, func(i int) error {
			loc := snapshot.Location{Store: st, Prefix: fmt.Sprintf("m%d", i)}
			res, err := snapshot.New(snapshot.Config{Concurrency: 4}).Snapshot(ctx, loc, ws, snapshot.Options{Mirror: true})
			if err != nil {
				return err
			}
			if key := holdsSecret(t, st, loc.Prefix+"/", area); key != "" {
				bad = "the mirror copied the host secret to " + key
			}
			return res.MirrorErr
		}, func(int) bool { return bad == "" })
		r.stop(t)
		if bad != "" {
			t.Fatal(bad)
		}
	})
}

func TestRaceRestoreNeverWritesHost(t *testing.T) {
	forEachLink(t, func(t *testing.T, relative bool) {
		ctx := context.Background()
		ws, host := raceWorkspace(t, relative)
		loc := snapshot.Location{Store: fsBackend().open(t), Prefix: "r"}
		s := snapshot.New(snapshot.Config{Concurrency: 4})
		v, err := s.Snapshot(ctx, loc, ws, snapshot.Options{})
		must(t, err)
		if v.Stats.Files != raceFiles {
			t.Fatalf("version holds %d files, want %d", v.Stats.Files, raceFiles)
		}
		before := hostState(t, host)
		// The workspace drifts from the version, so each restore has
		// files to write and paths to remove.
		r := startRacer(t, filepath.Join(ws, "w"), "d", "l")
		var diff string
		raceLoop(t, func(i int) error {
			_, err := s.Restore(ctx, loc, v.Manifest.Name, ws, snapshot.RestoreOptions{})
			drift(t, ws)
			return err
		}, func(i int) bool {
			if d := cmp.Diff(before, hostState(t, host)); d != "" {
				diff = fmt.Sprintf("restore %d changed the host directory (-before +after):\n%s", i, d)
			}
			return diff == ""
		})
		r.stop(t)
		if diff != "" {
			t.Fatal(diff)
		}
	})
}

func TestRaceImportNeverWritesHost(t *testing.T) {
	forEachLink(t, func(t *testing.T, relative bool) {
		ctx := context.Background()
		ws, host := raceWorkspace(t, relative)
		st := fsBackend().open(t)
		for i := range raceFiles {
			body := fmt.Sprintf("imported %d\n", i)
			must(t, st.Put(ctx, fmt.Sprintf("in/w/d/f%02d", i), strings.NewReader(body), int64(len(body))))
		}
		loc := snapshot.Location{Store: st, Prefix: "in"}
		before := hostState(t, host)
		r := startRacer(t, filepath.Join(ws, "w"), "d", "l")
		var diff string
		raceLoop(t, func(i int) error {
			_, err := snapshot.New(snapshot.Config{Concurrency: 4}).Import(ctx, loc, ws, snapshot.ImportOptions{})
			return err
		}, func(i int) bool {
			if d := cmp.Diff(before, hostState(t, host)); d != "" {
				diff = fmt.Sprintf("import %d changed the host directory (-before +after):\n%s", i, d)
			}
			return diff == ""
		})
		r.stop(t)
		if diff != "" {
			t.Fatal(diff)
		}
	})
}
