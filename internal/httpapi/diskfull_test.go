package httpapi

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/agent/claude"
	"github.com/techbossai/techboss/internal/auth"
	blobfs "github.com/techbossai/techboss/internal/blob/fs"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm/gateway"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// mountTmpfs mounts a tmpfs of sizeMB at a new directory and unmounts it in
// cleanup (lazily, so a file still open elsewhere cannot keep it).
func mountTmpfs(t *testing.T, sizeMB int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return mountTmpfsAt(t, dir, sizeMB)
}

// mountTmpfsAt mounts a tmpfs of sizeMB over the directory dir.
func mountTmpfsAt(t *testing.T, dir string, sizeMB int) string {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm,mode=0700", sizeMB)); err != nil {
		why := fmt.Sprintf("mount a tmpfs: %v", err)
		if storetest.RequireAll() {
			t.Fatal(why)
		}
		t.Skip("why: " + why)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount the tmpfs: %v", err)
		}
	})
	return dir
}

// fillDisk writes a file under dir until the filesystem is full and
// returns its path; removing it frees the space again.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errs.NoSpace(err) {
				t.Fatalf("fill the disk: %v", err)
			}
			break
		}
	}
	// The last few bytes too: leave not one block free.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	return p
}

// faultServer is the whole server with runs and snapshots for fault tests:
// the real Claude CLI in real local sandboxes, the gateway, the scripted
// model server, the fs blob store.
type faultServer struct {
	*harness
	m     *sandbox.Manager
	drv   *local.Driver
	snaps *snapshot.Service
	svc   *agent.Service
	model *modeltest.Server
}

type faultOpts struct {
	db       *store.DB // the database (its data dir decides where SQLite writes)
	blobDir  string    // the fs blob store
	spoolDir string    // run events waiting for the database
	admit    func(*store.DB) func(context.Context, string) error
}

func newFaultServer(t *testing.T, o faultOpts, script ...modeltest.Reply) *faultServer {
	t.Helper()
	prefix, rel := modeltest.ClaudeInstall(t)
	requireSandboxHost(t)
	db := o.db

	h := &harness{t: t, db: db, logs: newLogs(t), reg: prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Now()}}
	log := h.logger()
	h.auth = auth.New(auth.Options{Store: db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute})
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: buildInit(t), DefaultDiskMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	drivers := map[string]sandbox.Driver{"local": drv}
	blobs, err := blobfs.New(o.blobDir, blobfs.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.NewService(snapshot.ServiceDeps{
		Snapshotter: snapshot.New(snapshot.Config{Logger: log, Metrics: snapshot.NewMetrics(h.reg)}),
		Index:       db, DefaultStore: blobs, Drivers: drivers, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: db, Drivers: drivers, DefaultDriver: "local", Limits: sandbox.DefaultLimits(),
		Hooks: snaps.Hooks(), Logger: log, Metrics: prometheus.NewRegistry(),
		Mounts: []sandbox.Mount{{Source: prefix, Target: "/opt/techboss/claude", ReadOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	model := modeltest.New(t, script...)
	svc, err := agent.NewService(agent.Config{Root: true, SnapshotRetry: 200 * time.Millisecond,
		Durability: agent.Durability{SpoolDir: o.spoolDir, RetryMax: 200 * time.Millisecond}}, agent.Deps{
		Store: db, Sandboxes: m, Logger: log, Metrics: h.reg,
		CLI: claude.New(claude.Config{Bin: filepath.Join("/opt/techboss/claude", rel), Env: map[string]string{"CLAUDE_CODE_MAX_RETRIES": "2"}}),
		AfterRun: func(ctx context.Context, r agent.Run) error {
			sb, err := m.Get(ctx, r.OwnerID, r.SandboxID)
			if err != nil {
				return err
			}
			_, err = snaps.Take(ctx, sb, snapshot.TriggerRun, r.ID)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	gcfg := gateway.Config{Upstream: gateway.NewAnthropic(model.URL, upstreamSecret, nil),
		RunTokens: svc, Recorder: svc, Logger: log,
		Users: func(ctx context.Context, tok string) (string, error) {
			u, err := h.auth.Authenticate(ctx, tok)
			if err != nil {
				return "", err
			}
			return u.ID, nil
		}}
	if o.admit != nil {
		gcfg.Admit = o.admit(db)
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	// As the server wires it: one handler for every gateway protocol.
	gwMux := http.NewServeMux()
	gwMux.Handle("/llm/anthropic", gw)
	gwMux.Handle("/llm/anthropic/", gw)
	gwMux.Handle(gateway.OpenAIPrefix+"/", gateway.NewOpenAI(gw, "openai", model.URL, "sk-openai-upstream", nil))
	svc.SetGateway(gwMux)
	svcCtx, stopSvc := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(svcCtx) })
	h.srv = httptest.NewServer(NewServer(Deps{Logger: log, Store: db, Auth: h.auth, Metrics: h.reg,
		Clock: h.clock.Now, Version: "test", Sandboxes: m, Snapshots: snaps, Runs: svc, Gateway: gwMux}))
	t.Cleanup(func() {
		h.srv.Close()
		stopSvc()
		wg.Wait()
		items, _ := db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range items {
			_ = drv.Destroy(context.Background(), sb.Ref)
		}
	})
	return &faultServer{harness: h, m: m, drv: drv, snaps: snaps, svc: svc, model: model}
}

// TestDiskFull runs the server with its data dir (SQLite database, fs blob
// store, run event spool) on a real 64 MiB tmpfs, fills it while a real
// Claude CLI run is in its Bash tool, and checks, while it is full: the
// run goes on from memory, its after-run snapshot failure reaches the
// live stream as snapshot_error, and snapshot and create answer 507
// insufficient_storage naming what is full. Once the space is freed the
// run ends succeeded with every event stored once and in order, the
// after-run snapshot is retried and stored (snapshot_error cleared), and
// create, upload, snapshot and restore work again.
//
// The sandboxes' own disks stay off the tmpfs: they are sparse ext4
// images, and a host filesystem filled under one aborts its journal and
// leaves it read-only for good (see docs/errors.md).
func TestDiskFull(t *testing.T) {
	requireSandboxHost(t)
	data := mountTmpfs(t, 64)
	// The blob store on a volume of its own too, so that it can be full
	// while the database still has room.
	blobDir := mountTmpfs(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	db, err := store.Open(ctx, filepath.Join(data, "techboss.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	fs := newFaultServer(t, faultOpts{db: db, blobDir: blobDir, spoolDir: filepath.Join(data, "run-events")},
		modeltest.Bash("sleep 4; echo slept > /workspace/out.txt"), modeltest.Text("Finished on a full disk."))
	h, svc, model, log := fs.harness, fs.svc, fs.model, fs.logger()
	// A second server whose sandboxes live on the data dir.
	dataDrv, err := local.New(local.Options{DataDir: filepath.Join(data, "sandboxes"), InitBinary: buildInit(t), DiskPool: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dataDrv.Close() })
	dataMgr, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"local": dataDrv},
		DefaultDriver: "local", Limits: sandbox.DefaultLimits(), Logger: log, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	dataSrv := httptest.NewServer(NewServer(Deps{Logger: log, Store: db, Auth: h.auth, Metrics: prometheus.NewRegistry(),
		Clock: h.clock.Now, Version: "test", Sandboxes: dataMgr}))
	t.Cleanup(dataSrv.Close)
	alice := h.createUser("alice@example.com", auth.RoleMember)
	c := h.mustLogin("alice@example.com")
	newSandbox := func() resp { return h.do(c, "POST", "/sandbox", map[string]any{"image_base": "host", "disk_mb": 32}) }

	r := newSandbox()
	wantStatus(t, r, http.StatusOK)
	var created createSandboxResponse
	r.data(t, &created)
	sb := created.SandboxID
	wantStatus(t, h.do(c, "PUT", "/sandbox/"+sb+"/files/before.txt", "written before the disk filled"), http.StatusOK)
	r = h.do(c, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	var before snapshot.Taken
	r.data(t, &before)

	run, err := svc.Start(ctx, alice.ID, sb, "write a file", agent.Options{NewSession: true})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := svc.Subscribe(ctx, alice.ID, run.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var live []agent.Event
	until := func(typ string) {
		t.Helper()
		for !hasEvent(live, typ) {
			evs, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v (got %v)", typ, err, eventTypes(live))
			}
			live = append(live, evs...)
		}
	}
	follow := func() {
		t.Helper()
		for {
			evs, err := sub.Next(ctx)
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("follow the run: %v (got %v)", err, eventTypes(live))
			}
			live = append(live, evs...)
		}
	}
	checkStored := func(runID string) {
		t.Helper()
		stored, err := db.RunEvents(ctx, runID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := eventSeqTypes(stored), eventSeqTypes(live); got != want || len(live) == 0 || live[len(live)-1].Type != agent.TypeDone {
			t.Errorf("stored events %s, want the live ones %s ending in done", got, want)
		}
	}
	// waitSnapshotStored waits for the run's snapshot_error to clear (the
	// retry stored a snapshot) and checks that snapshot holds file.
	waitSnapshotStored := func(runID, file string) {
		t.Helper()
		for {
			got, err := svc.Get(ctx, alice.ID, runID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != agent.Succeeded {
				t.Fatalf("run = %s (%s), want succeeded", got.Status, got.Error)
			}
			if got.SnapshotError == "" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("snapshot_error still %q after the space was freed", got.SnapshotError)
			case <-time.After(100 * time.Millisecond):
			}
		}
		var list listSnapshotsResponse
		h.do(c, "GET", "/sandbox/"+sb+"/snapshots", nil).data(t, &list)
		for _, rec := range list.Snapshots {
			if rec.RunID != runID {
				continue
			}
			var detail snapshotDetail
			h.do(c, "GET", "/snapshots/"+rec.ID, nil).data(t, &detail)
			if !strings.Contains(fmt.Sprint(detail.Entries), file) {
				t.Errorf("run %s's snapshot lacks %s: %+v", runID, file, detail.Entries)
			}
			return
		}
		t.Errorf("no snapshot of run %s among %+v", runID, list.Snapshots)
	}

	until(agent.TypeToolUse)
	fillers := []string{fillDisk(t, blobDir), fillDisk(t, data)}

	// While the data dir is full: the API says what is full.
	// An upload writes only the sandbox's own disk, which is not full.
	wantStatus(t, h.do(c, "PUT", "/sandbox/"+sb+"/files/during.txt", "more work while the data dir is full"), http.StatusOK)
	want507(t, "POST /sandbox/{id}/snapshots", h.do(c, "POST", "/sandbox/"+sb+"/snapshots", nil), "blob store", data)
	// Creating a sandbox whose disk lives on the full data dir (in the
	// server's layout, <data>/sandboxes), through a second server on the
	// same database and users.
	want507(t, "POST /sandbox", h.do(c, "POST", dataSrv.URL+"/sandbox", map[string]any{"image_base": "host", "disk_mb": 32}), "data dir", data)

	// The run goes on from memory; its done waits for its events to be stored.
	until(agent.TypeResult)
	if hasEvent(live, agent.TypeDone) {
		t.Fatalf("done while its events could not be stored: %v", eventTypes(live))
	}

	// Free the space: everything lands, nothing is lost.
	for _, f := range fillers {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	follow()
	checkStored(run.ID)
	waitSnapshotStored(run.ID, "out.txt")

	// The blob store alone full while a run ends: its after-run snapshot
	// fails, says so (event, run record) and is retried once there is room.
	model.Reset(modeltest.Bash("sleep 2; echo two > /workspace/two.txt"), modeltest.Text("Second."))
	run, err = svc.Start(ctx, alice.ID, sb, "write another", agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sub, err = svc.Subscribe(ctx, alice.ID, run.ID, 0); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	live = nil
	until(agent.TypeToolUse)
	filler := fillDisk(t, blobDir)
	follow()
	se, ok := lastEvent(live, agent.TypeSnapshotError)
	if !ok {
		t.Fatalf("no snapshot_error event with the blob store full: %v", eventTypes(live))
	}
	if d := decodeEvent[agent.SnapshotErrorData](t, se); !strings.Contains(d.Error, "blob store is full") || !d.Retrying {
		t.Errorf("snapshot_error = %+v, want it to name the full blob store and say it is retrying", d)
	}
	var got agent.Run
	h.do(c, "GET", "/runs/"+run.ID, nil).data(t, &got)
	if got.Status != agent.Succeeded || !strings.Contains(got.SnapshotError, "blob store is full") {
		t.Errorf("run with the blob store full = %s, snapshot_error %q; want succeeded naming the full blob store", got.Status, got.SnapshotError)
	}
	want507(t, "POST /sandbox/{id}/snapshots", h.do(c, "POST", "/sandbox/"+sb+"/snapshots", nil), "blob store", blobDir)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	checkStored(run.ID)
	waitSnapshotStored(run.ID, "two.txt")

	// And the API works again.
	wantStatus(t, newSandbox(), http.StatusOK)
	wantStatus(t, h.do(c, "PUT", "/sandbox/"+sb+"/files/after.txt", "after"), http.StatusOK)
	wantStatus(t, h.do(c, "POST", "/sandbox/"+sb+"/snapshots", nil), http.StatusCreated)
	wantStatus(t, h.do(c, "POST", "/sandbox/"+sb+"/restore", map[string]any{"snapshot_id": before.ID}), http.StatusOK)
	if got := h.do(c, "GET", "/sandbox/"+sb+"/files/before.txt", nil); string(got.body) != "written before the disk filled" {
		t.Errorf("before.txt after restore = %d %q", got.status, got.body)
	}
}

// want507 checks r is 507 insufficient_storage naming what is full and no host path.
func want507(t *testing.T, what string, r resp, names, hostPath string) {
	t.Helper()
	var e struct {
		Error errorBody `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	if r.status != http.StatusInsufficientStorage || e.Error.Code != "insufficient_storage" || !strings.Contains(e.Error.Message, names) {
		t.Errorf("%s on a full disk = %d %s, want 507 insufficient_storage naming %q", what, r.status, r.body, names)
	}
	if strings.Contains(string(r.body), hostPath) {
		t.Errorf("%s: the error names a host path: %s", what, r.body)
	}
}

func lastEvent(evs []agent.Event, typ string) (agent.Event, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i], true
		}
	}
	return agent.Event{}, false
}

func removeFile(p string) error { return os.Remove(p) }

func hasEvent(evs []agent.Event, typ string) bool {
	for _, ev := range evs {
		if ev.Type == typ {
			return true
		}
	}
	return false
}

func eventTypes(evs []agent.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

func eventSeqTypes(evs []agent.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%d:%s ", ev.Seq, ev.Type)
	}
	return b.String()
}

func decodeEvent[T any](t *testing.T, ev agent.Event) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(ev.Data, &v); err != nil {
		t.Fatalf("event %s data %s: %v", ev.Type, ev.Data, err)
	}
	return v
}

// TestSandboxDiskFull fills a sandbox's own disk (disk_mb): an upload, an
// archive and a restore that do not fit answer 413 naming disk_mb (the
// user's quota, not the host's), and the sandbox works on.
func TestSandboxDiskFull(t *testing.T) {
	h := newSnapshotHarness(t)
	big := h.newSandbox(h.alice, map[string]any{"disk_mb": 128})
	h.sh(h.alice, big, `head -c 48000000 /dev/urandom > /workspace/big.bin`)
	r := h.do(h.alice, "POST", "/sandbox/"+big+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	var snap snapshot.Taken
	r.data(t, &snap)

	small := h.newSandbox(h.alice, map[string]any{"disk_mb": 32})
	for _, c := range []struct {
		what string
		r    resp
	}{
		{"upload", h.do(h.alice, "PUT", "/sandbox/"+small+"/files/big.bin", strings.Repeat("x", 40<<20))},
		{"archive", h.do(h.alice, "PUT", "/sandbox/"+small+"/archive?path=/workspace/in", tarOf(t, "big.bin", 32<<20-8192))},
		{"restore", h.do(h.alice, "POST", "/sandbox/"+small+"/restore", map[string]any{"snapshot_id": snap.ID})},
	} {
		e := c.r.errBody(t)
		if c.r.status != http.StatusRequestEntityTooLarge || !strings.Contains(e.Message, "disk_mb") {
			t.Errorf("%s past the sandbox's disk = %d %s, want 413 naming disk_mb", c.what, c.r.status, c.r.body)
		}
	}
	if got := h.sh(h.alice, small, `echo still working`); got != "still working\n" {
		t.Errorf("sandbox after a full disk: %q", got)
	}
}

// tarOf returns a tar stream holding one file of size random bytes (zeros
// could be written sparse).
func tarOf(t *testing.T, name string, size int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
