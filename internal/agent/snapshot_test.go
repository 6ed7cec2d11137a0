package agent_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/blob/blobtest"
	blobfs "github.com/techbossai/techboss/internal/blob/fs"
	"github.com/techbossai/techboss/internal/blob/s3"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/snapshot"
)

// TestSnapshotErrorRecordedAndRetried: the blob store lives on a small
// tmpfs that fills up while a run is in progress, so the snapshot after
// the run fails. The failure must be on the run record (snapshot_error),
// in its event stream before done, and in the metrics; once space is
// freed, the retry stores a version and clears the error.
func TestSnapshotErrorRecordedAndRetried(t *testing.T) {
	blobs := t.TempDir()
	if err := syscall.Mount("tmpfs", blobs, "tmpfs", 0, "size=4m"); err != nil {
		need(t, "mounting a tmpfs needs root: "+err.Error())
	}
	t.Cleanup(func() { _ = syscall.Unmount(blobs, syscall.MNT_DETACH) })
	var snaps *snapshot.Service
	events := &eventLog{}
	e := newEnv(t, envOpts{events: events, snapshotRetry: 100 * time.Millisecond, afterRun: func(e *env) func(context.Context, agent.Run) error {
		fsStore, err := blobfs.New(filepath.Join(blobs, "blobs"), blobfs.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		snaps, err = snapshot.NewService(snapshot.ServiceDeps{
			Snapshotter: snapshot.New(snapshot.Config{}), Index: e.db, DefaultStore: blob.Store(fsStore),
			Drivers: map[string]sandbox.Driver{"local": e.drv},
		})
		if err != nil {
			t.Fatal(err)
		}
		// As cmd/server wires it.
		return func(ctx context.Context, r agent.Run) error {
			sb, err := e.mgr.Get(ctx, r.OwnerID, r.SandboxID)
			if errs.KindOf(err) == errs.NotFound || (err == nil && sb.State != sandbox.Running) {
				return agent.ErrSandboxGone
			}
			if err != nil {
				return err
			}
			_, err = snaps.Take(ctx, sb, snapshot.TriggerRun, r.ID)
			return err
		}
	}}, modeltest.Bash("sleep 1; echo data > /workspace/result.txt"), modeltest.Text("Wrote it."))
	sb := e.sandbox("alice")
	r := e.start("alice", sb.ID, "write a file", agent.Options{NewSession: true})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sub, err := e.svc.Subscribe(ctx, "alice", r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var evs []agent.Event
	filled := false
	filler := filepath.Join(blobs, "filler")
	for {
		more, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, more...)
		if !filled && len(find(evs, agent.TypeToolUse)) > 0 {
			fill(t, filler)
			filled = true
		}
	}
	checkSeqs(t, evs)
	se := find(evs, agent.TypeSnapshotError)
	if len(se) != 1 || evs[len(evs)-2].Type != agent.TypeSnapshotError || evs[len(evs)-1].Type != agent.TypeDone {
		t.Fatalf("events %v; want one snapshot_error right before done", types(evs))
	}
	if d := decode[agent.SnapshotErrorData](t, se[0]); d.Error == "" || !d.Retrying || strings.Contains(d.Error, blobs) {
		t.Errorf("snapshot_error event = %+v; want a message without host paths, retrying", d)
	}
	// The owner's webhooks hear of the run's end and of the failed snapshot.
	if got := events.types(); strings.Join(got, " ") != "alice:run.finished alice:snapshot.failed" {
		t.Errorf("webhook events %q, want run.finished then snapshot.failed for alice", got)
	}
	got, err := e.svc.Get(ctx, "alice", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != agent.Succeeded || got.SnapshotError == "" {
		t.Errorf("run = %s, snapshot_error %q; want succeeded with a snapshot error", got.Status, got.SnapshotError)
	}
	if n := metric(t, e, "techboss_agent_snapshot_failures_total"); n < 1 {
		t.Errorf("techboss_agent_snapshot_failures_total = %v, want >= 1", n)
	}
	if vs, _ := e.db.ListSnapshots(ctx, sb.ID, 10); len(vs) != 0 {
		t.Fatalf("%d versions stored on a full disk", len(vs))
	}

	// Space comes back: a retry stores the version and clears the error.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err = e.svc.Get(ctx, "alice", r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.SnapshotError == "" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("snapshot_error still %q after space was freed", got.SnapshotError)
		case <-tick.C:
		}
	}
	vs, err := e.db.ListSnapshots(ctx, sb.ID, 10)
	if err != nil || len(vs) != 1 || vs[0].RunID != r.ID {
		t.Fatalf("versions after the retry = %+v, %v; want one, of the run", vs, err)
	}
}

// fill writes path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

func metric(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestStopSnapshotErrorRecorded: the final snapshot of a sandbox being
// terminated goes to S3 (versitygw), which is killed first. The snapshot
// is tried three times (counted in the snapshot failure metric), then the
// sandbox stops anyway with the failure in its reason and on its last
// run's snapshot_error.
func TestStopSnapshotErrorRecorded(t *testing.T) {
	v := blobtest.StartVersity(t)
	op, err := s3.NewOpener(context.Background(), s3.Config{
		Endpoint: v.Endpoint, Region: "us-east-1", ForcePathStyle: true,
		AccessKeyID: v.Access, SecretAccessKey: v.Secret, MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.CreateBucket(context.Background(), "final"); err != nil {
		t.Fatal(err)
	}
	bucket, err := op.Open("final")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{snapshotRetry: 50 * time.Millisecond, beforeTerminate: func(e *env) func(context.Context, *sandbox.Sandbox) error {
		snaps, err := snapshot.NewService(snapshot.ServiceDeps{
			Snapshotter: snapshot.New(snapshot.Config{}), Index: e.db, DefaultStore: blob.Store(bucket),
			Drivers: map[string]sandbox.Driver{"local": e.drv}, OnTerminate: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		// As cmd/server wires it.
		return func(ctx context.Context, sb *sandbox.Sandbox) error {
			return e.svc.SnapshotBeforeStop(ctx, sb.ID, func(ctx context.Context) error { return snaps.Hooks().BeforeTerminate(ctx, sb) })
		}
	}}, modeltest.Bash("echo data > /workspace/result.txt"), modeltest.Text("Wrote it."))
	sb := e.sandbox("alice")
	r, _ := e.do("alice", sb.ID, "write a file", agent.Options{NewSession: true})
	if r.Status != agent.Succeeded {
		t.Fatalf("run %s (%s)", r.Status, r.Error)
	}
	v.Stop()
	got, err := e.mgr.Terminate(context.Background(), "alice", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sandbox.Terminated || !strings.Contains(got.Reason, "final snapshot failed") {
		t.Errorf("sandbox %s, reason %q; want terminated, naming the failed final snapshot", got.State, got.Reason)
	}
	run, err := e.svc.Get(context.Background(), "alice", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(run.SnapshotError, "the final snapshot before the sandbox stopped failed") || strings.Contains(run.SnapshotError, v.Endpoint) {
		t.Errorf("last run's snapshot_error = %q", run.SnapshotError)
	}
	if n := metric(t, e, "techboss_agent_snapshot_failures_total"); n != 3 {
		t.Errorf("snapshot failures counted = %v, want 3 (every attempt)", n)
	}
}

// eventLog records the webhook events the service emits (in the server
// the webhooks service receives them).
type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) Emit(_ context.Context, userID, typ string, _ any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, userID+":"+typ)
}

func (l *eventLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.evs...)
}
