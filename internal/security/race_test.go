package security

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/blob/fs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/snapshot"
)

// raceSetup is a sandbox whose workspace holds w/d (40 files) and a symlink
// w/l to a host directory, with the racer inside swapping the two — what an
// agent does to turn the server's walk of w/d onto the host.
type raceSetup struct {
	d      *local.Driver
	ref    sandbox.Ref
	ws     string // host path of the workspace
	ids    sandbox.IDMap
	host   string // the host directory w/l points at
	secret []byte // content of host/secret (0600)
	stop   func() // stops the racer and waits for it
}

func newRace(t *testing.T, rt string) *raceSetup {
	t.Helper()
	d := newDriver(t, rt)
	ref := create(t, d, sandbox.Spec{})
	ws, ids, err := d.WorkspaceDir(ref)
	if err != nil {
		t.Fatal(err)
	}
	host := t.TempDir()
	secret := []byte("host secret " + t.Name())
	if err := os.WriteFile(filepath.Join(host, "secret"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	racer := buildStatic(t, "github.com/techbossai/techboss/internal/testbin/racer", t.TempDir())
	f, err := os.Open(racer)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := d.WriteFile(testCtx(t), ref, "/workspace/racer", 0o755, f); err != nil {
		t.Fatal(err)
	}
	mustSh(t, d, ref, fmt.Sprintf(`mkdir -p /workspace/w/d && cd /workspace/w/d && i=0; while [ $i -lt 40 ]; do echo file $i > f$i; i=$((i+1)); done; ln -s %s /workspace/w/l`, host))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var out lockedBuffer
	wg.Go(func() {
		_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"/workspace/racer", "-dir", "/workspace/w", "-a", "d", "-b", "l", "-for", "10m"}, Stdout: &out, Stderr: &out})
	})
	// The racer runs once the host sees w/d as the symlink at least once.
	deadline := time.Now().Add(time.Minute)
	for {
		if fi, err := os.Lstat(filepath.Join(ws, "w", "d")); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			wg.Wait()
			t.Fatalf("the racer never swapped w/d: %s", out.String())
		}
		runtime.Gosched()
	}
	stop := sync.OnceFunc(func() {
		cancel()
		wg.Wait()
	})
	t.Cleanup(stop)
	return &raceSetup{d: d, ref: ref, ws: ws, ids: ids, host: host, secret: secret, stop: stop}
}

// hostUntouched fails if anything but the secret appeared in the host
// directory, or the secret changed.
func (r *raceSetup) hostUntouched(t *testing.T, when string) {
	t.Helper()
	ents, err := os.ReadDir(r.host)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s: the host directory now holds %v", when, names)
	}
	b, err := os.ReadFile(filepath.Join(r.host, "secret"))
	if err != nil || !bytes.Equal(b, r.secret) {
		t.Fatalf("%s: the host secret changed: %q, %v", when, b, err)
	}
}

func newSnapshotter(t *testing.T) (*snapshot.Snapshotter, snapshot.Location) {
	t.Helper()
	st, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.New(snapshot.Config{}), snapshot.Location{Store: st, Prefix: "ws"}
}

// iterations of each race; each snapshot or restore walks w/d and w/l
// while the racer swaps them about a million times a second.
const raceIterations = 150

// A snapshot taken while the sandbox swaps w/d and a symlink to a host
// directory never captures a host file.
func TestSnapshotRaceInSandbox(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		r := newRace(t, rt)
		s, loc := newSnapshotter(t)
		sum := sha256.Sum256(r.secret)
		secretSHA := hex.EncodeToString(sum[:])
		ctx := testCtx(t)
		files := 0
		for i := 0; i < raceIterations; i++ {
			res, err := s.Snapshot(ctx, loc, r.ws, snapshot.Options{IDs: r.ids})
			if err != nil {
				t.Fatalf("snapshot %d: %v", i, err)
			}
			for _, e := range res.Manifest.Entries {
				if e.SHA256 == secretSHA {
					t.Fatalf("snapshot %d captured the host secret as %s", i, e.Path)
				}
				if strings.HasPrefix(e.Path, "w/") && e.Type == snapshot.File {
					files++
				}
			}
		}
		r.stop()
		r.hostUntouched(t, "after the snapshots")
		if files == 0 {
			t.Fatal("no snapshot saw a file under w/: the race never ran against the walk")
		}
	})
}

// A restore of a version holding w/d/* into a workspace where the sandbox
// swaps w/d and a symlink to a host directory never writes on the host.
func TestRestoreRaceInSandbox(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		r := newRace(t, rt)
		s, loc := newSnapshotter(t)
		ctx := testCtx(t)
		// The version: w/d with its files and w/l, from a tree the host made
		// (the racer in the sandbox is already running). The racer keeps
		// running after the first restore removes its binary.
		clean := t.TempDir()
		for i := 0; i < 40; i++ {
			p := filepath.Join(clean, "w", "d", fmt.Sprintf("f%d", i))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(fmt.Sprintf("restored %d\n", i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(r.host, filepath.Join(clean, "w", "l")); err != nil {
			t.Fatal(err)
		}
		res, err := s.Snapshot(ctx, loc, clean, snapshot.Options{})
		if err != nil {
			t.Fatal(err)
		}
		version := res.Manifest.Name
		for i := 0; i < raceIterations; i++ {
			// A restore may fail when the tree changes under it; it must
			// never write outside it.
			_, _ = s.Restore(ctx, loc, version, r.ws, snapshot.RestoreOptions{IDs: r.ids})
			r.hostUntouched(t, fmt.Sprintf("restore %d", i))
		}
		r.stop()
		r.hostUntouched(t, "after the restores")
	})
}

// init_from_s3 (Import of the latest version) into a workspace where the
// sandbox swaps w/d and a symlink to a host directory never writes on the
// host.
func TestImportRaceInSandbox(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		r := newRace(t, rt)
		s, loc := newSnapshotter(t)
		ctx := testCtx(t)
		clean := t.TempDir()
		for i := 0; i < 40; i++ {
			p := filepath.Join(clean, "w", "d", fmt.Sprintf("imported%d", i))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("imported\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Snapshot(ctx, loc, clean, snapshot.Options{}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < raceIterations; i++ {
			_, _ = s.Import(ctx, loc, r.ws, snapshot.ImportOptions{IDs: r.ids})
			r.hostUntouched(t, fmt.Sprintf("import %d", i))
		}
		r.stop()
		r.hostUntouched(t, "after the imports")
	})
}

// Archive download of a tree the sandbox is racing never reads a host file.
func TestArchiveOutRaceInSandbox(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		r := newRace(t, rt)
		ctx := testCtx(t)
		for i := 0; i < raceIterations; i++ {
			var buf bytes.Buffer
			err := r.d.ArchiveOut(ctx, r.ref, "/workspace/w", &buf)
			if err != nil {
				continue // a walk that lost the race may fail; it must not leak
			}
			if bytes.Contains(buf.Bytes(), r.secret) {
				t.Fatalf("archive %d holds the host secret", i)
			}
		}
		// Files API reads through the link are refused too.
		for i := 0; i < raceIterations; i++ {
			var buf bytes.Buffer
			_, err := r.d.ReadFile(ctx, r.ref, "/workspace/w/d/secret", &buf)
			if err == nil && bytes.Equal(buf.Bytes(), r.secret) {
				t.Fatalf("read %d returned the host secret", i)
			}
		}
		r.stop()
		r.hostUntouched(t, "after the archives")
	})
}

// Archive upload into the directory the sandbox is racing never writes on
// the host.
func TestArchiveInRaceInSandbox(t *testing.T) {
	runtimes(t, func(t *testing.T, rt string) {
		r := newRace(t, rt)
		ctx := testCtx(t)
		tarball := tarOf(t, map[string]string{"d/x1": "one", "d/x2": "two", "d/sub/x3": "three"})
		for i := 0; i < raceIterations; i++ {
			_ = r.d.ArchiveIn(ctx, r.ref, "/workspace/w", bytes.NewReader(tarball))
			r.hostUntouched(t, fmt.Sprintf("archive upload %d", i))
			_, _ = r.d.WriteFile(ctx, r.ref, "/workspace/w/d/written", 0o644, strings.NewReader("x"))
			r.hostUntouched(t, fmt.Sprintf("file upload %d", i))
		}
		r.stop()
		r.hostUntouched(t, "after the uploads")
	})
}

// lockedBuffer is a bytes.Buffer the racer's exec writes while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
