package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/blob/blobtest"
	blobfs "github.com/techbossai/techboss/internal/blob/fs"
	"github.com/techbossai/techboss/internal/blob/s3"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/snapshot"
	"github.com/techbossai/techboss/internal/store/storetest"
)

type snapHarness struct {
	*harness
	m          *sandbox.Manager
	v          *blobtest.Versity
	s3         *s3.Opener
	alice, bob *http.Client
}

// newSnapshotHarness runs the API over a real local driver, the fs store
// as the default, and a versitygw S3 server for named buckets.
func newSnapshotHarness(t *testing.T) *snapHarness { return newSnapshotHarnessWith(t, nil, nil) }

// archiveOnly hides the local driver's host workspace, so the snapshot
// service goes through tar streams as it does on drivers without one.
type archiveOnly struct {
	sandbox.Driver
	sandbox.Archiver
	sandbox.Files
}

func newSnapshotHarnessWith(t *testing.T, wrap func(*local.Driver) sandbox.Driver, tweak func(*snapshot.ServiceDeps)) *snapHarness {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for the local sandbox driver"
	} else if _, err := exec.LookPath("bwrap"); err != nil {
		why = "bubblewrap (bwrap) not installed"
	}
	if why != "" {
		if storetest.RequireAll() {
			t.Fatal(why)
		}
		t.Skip("why: " + why)
	}
	v := blobtest.StartVersity(t)
	opener, err := s3.NewOpener(context.Background(), s3.Config{
		Endpoint: v.Endpoint, Region: "us-east-1", ForcePathStyle: true,
		AccessKeyID: v.Access, SecretAccessKey: v.Secret, MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, db: storetest.OpenSQLite(t), logs: newLogs(t), reg: prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Now()},
	}
	log := h.logger()
	h.auth = auth.New(auth.Options{
		Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute,
	})
	initBin := filepath.Join(t.TempDir(), "techboss-sandbox-init")
	if err := sandboxtest.BuildInit(initBin); err != nil {
		t.Fatal(err)
	}
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: initBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	drivers := map[string]sandbox.Driver{"local": drv}
	if wrap != nil {
		drivers["local"] = wrap(drv)
	}
	def, err := blobfs.New(t.TempDir(), blobfs.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	sd := snapshot.ServiceDeps{
		Snapshotter: snapshot.New(snapshot.Config{Logger: log, Metrics: snapshot.NewMetrics(h.reg)}),
		Index:       h.db, DefaultStore: def, Buckets: opener, Drivers: drivers,
		OnTerminate: true, Logger: log,
	}
	if tweak != nil {
		tweak(&sd)
	}
	svc, err := snapshot.NewService(sd)
	if err != nil {
		t.Fatal(err)
	}
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: h.db, Drivers: drivers, DefaultDriver: "local", Limits: sandbox.DefaultLimits(),
		Hooks: svc.Hooks(), Logger: log, Metrics: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		items, _ := h.db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range items {
			_ = drv.Destroy(context.Background(), sb.Ref)
		}
	})
	h.srv = httptest.NewServer(validateResponses(t, NewServer(Deps{
		Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test",
		Sandboxes: m, Snapshots: svc,
	})))
	t.Cleanup(h.srv.Close)
	h.createUser("alice@example.com", auth.RoleMember)
	h.createUser("bob@example.com", auth.RoleMember)
	return &snapHarness{harness: h, m: m, v: v, s3: opener,
		alice: h.mustLogin("alice@example.com"), bob: h.mustLogin("bob@example.com")}
}

func (h *snapHarness) newSandbox(c *http.Client, spec map[string]any) string {
	h.t.Helper()
	if spec == nil {
		spec = map[string]any{}
	}
	spec["image_base"] = "host"
	r := h.do(c, "POST", "/sandbox", spec)
	wantStatus(h.t, r, http.StatusOK)
	var out createSandboxResponse
	r.data(h.t, &out)
	return out.SandboxID
}

// sh runs a shell command in /workspace and returns its stdout.
func (h *snapHarness) sh(c *http.Client, id, script string) string {
	h.t.Helper()
	r := h.do(c, "POST", "/sandbox/"+id+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", script}})
	wantStatus(h.t, r, http.StatusOK)
	var out execWaitResponse
	r.data(h.t, &out)
	if out.ExitCode != 0 {
		h.t.Fatalf("%q exited %d: %s", script, out.ExitCode, out.Stderr)
	}
	return out.Stdout
}

func wantErrField(t *testing.T, r resp, status int, field string) {
	t.Helper()
	wantStatus(t, r, status)
	e := r.errBody(t)
	for _, f := range e.Fields {
		if f.Field == field {
			return
		}
	}
	t.Fatalf("error %+v does not name field %q", e, field)
}

func TestSnapshotAPI(t *testing.T) {
	h := newSnapshotHarness(t)
	sb := h.newSandbox(h.alice, nil)
	h.sh(h.alice, sb, `cd /workspace && mkdir -p src empty/dir .claude && echo one > src/a.txt && echo keep > b.txt &&
		printf '#!/bin/sh\necho hi\n' > run.sh && chmod 755 run.sh && ln -s src/a.txt link && echo '{"s":1}' > .claude/session.jsonl`)

	r := h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	var first snapshot.Taken
	r.data(t, &first)
	if first.Trigger != snapshot.TriggerManual || first.Files != 4 || first.SandboxID != sb || first.Stats.UploadedBlobs != 4 {
		t.Fatalf("first snapshot = %+v", first)
	}

	h.sh(h.alice, sb, `cd /workspace && echo two > src/a.txt && rm b.txt && echo new > new.txt && rmdir empty/dir`)
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	var second snapshot.Taken
	r.data(t, &second)
	if second.Stats.UploadedBlobs != 2 {
		t.Errorf("second snapshot uploaded %d blobs, want 2 (a.txt, new.txt)", second.Stats.UploadedBlobs)
	}

	var list listSnapshotsResponse
	h.do(h.alice, "GET", "/sandbox/"+sb+"/snapshots", nil).data(t, &list)
	if len(list.Snapshots) != 2 || list.Snapshots[0].ID != second.ID || list.Snapshots[1].ID != first.ID {
		t.Fatalf("list = %+v, want second then first", list.Snapshots)
	}

	// Paginated detail.
	var page snapshotDetail
	h.do(h.alice, "GET", "/snapshots/"+first.ID+"?limit=3", nil).data(t, &page)
	if page.Files != 4 || page.Dirs != 4 || page.Symlinks != 1 || len(page.Entries) != 3 || page.NextAfter == "" {
		t.Fatalf("page 1 = %+v", page)
	}
	var all []snapshotEntry
	all = append(all, page.Entries...)
	for page.NextAfter != "" {
		next := page.NextAfter
		page = snapshotDetail{}
		h.do(h.alice, "GET", "/snapshots/"+first.ID+"?limit=3&after="+next, nil).data(t, &page)
		all = append(all, page.Entries...)
	}
	if len(all) != 9 {
		t.Errorf("paged through %d entries, want 9: %+v", len(all), all)
	}
	for _, e := range all {
		if e.Path == "run.sh" && e.Mode != "0755" {
			t.Errorf("run.sh mode %s, want 0755", e.Mode)
		}
	}
	wantErrField(t, h.do(h.alice, "GET", "/snapshots/"+first.ID+"?limit=0", nil), 422, "limit")

	var d snapshotDiff
	h.do(h.alice, "GET", "/snapshots/"+first.ID+"/diff/"+second.ID, nil).data(t, &d)
	if strings.Join(d.Added, ",") != "new.txt" || strings.Join(d.Removed, ",") != "b.txt,empty/dir" || strings.Join(d.Changed, ",") != "src/a.txt" {
		t.Errorf("diff = %+v", d)
	}

	// Another user's snapshots and sandbox are not found.
	for _, p := range []string{"/snapshots/" + first.ID, "/snapshots/" + first.ID + "/diff/" + second.ID, "/sandbox/" + sb + "/snapshots"} {
		wantStatus(t, h.do(h.bob, "GET", p, nil), http.StatusNotFound)
	}
	wantStatus(t, h.do(h.bob, "POST", "/sandbox/"+sb+"/snapshots", nil), http.StatusNotFound)
	bobSB := h.newSandbox(h.bob, nil)
	wantStatus(t, h.do(h.bob, "POST", "/sandbox/"+bobSB+"/restore", map[string]string{"snapshot_id": first.ID}), http.StatusNotFound)
	wantErrField(t, h.do(h.bob, "POST", "/sandbox", map[string]any{"image_base": "host", "from_snapshot": first.ID}), 422, "from_snapshot")

	// Restore: exact tree, deletions included.
	wantErrField(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/restore", map[string]string{}), 422, "snapshot_id")
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/restore", map[string]string{"snapshot_id": first.ID})
	wantStatus(t, r, http.StatusOK)
	got := h.sh(h.alice, sb, `cd /workspace && cat src/a.txt b.txt && test ! -e new.txt && test -d empty/dir && test -x run.sh && readlink link && cat .claude/session.jsonl`)
	if want := "one\nkeep\nsrc/a.txt\n{\"s\":1}\n"; got != want {
		t.Errorf("after restore: %q, want %q", got, want)
	}

	// 409 while a run is active.
	run := agent.Run{ID: "run_active", SandboxID: sb, OwnerID: first.OwnerID, Prompt: "x", Status: agent.Status("running"), CreatedAt: time.Now()}
	if err := h.db.CreateRun(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/restore", map[string]string{"snapshot_id": second.ID}), http.StatusConflict)

	// A new sandbox from a snapshot.
	sb2 := h.newSandbox(h.alice, map[string]any{"from_snapshot": second.ID})
	if got := h.sh(h.alice, sb2, `cd /workspace && cat src/a.txt new.txt && test ! -e b.txt && echo ok`); got != "two\nnew\nok\n" {
		t.Errorf("from_snapshot sandbox: %q", got)
	}

	// Terminating snapshots first.
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+sb2, nil), http.StatusOK)
	list = listSnapshotsResponse{}
	h.do(h.alice, "GET", "/sandbox/"+sb2+"/snapshots", nil).data(t, &list)
	if len(list.Snapshots) != 1 || list.Snapshots[0].Trigger != snapshot.TriggerTerminate {
		t.Errorf("after terminate: %+v, want one terminate snapshot", list.Snapshots)
	}
}

func TestSnapshotS3(t *testing.T) {
	h := newSnapshotHarness(t)
	ctx := context.Background()
	if err := h.s3.CreateBucket(ctx, "team-docs"); err != nil {
		t.Fatal(err)
	}
	st, err := h.s3.Open("team-docs")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"docs/my-project/README.md": "hello", "docs/my-project/notes/a b.txt": "spaced", "docs/other.txt": "no"} {
		if err := st.Put(ctx, k, bytes.NewReader([]byte(v)), int64(len(v))); err != nil {
			t.Fatal(err)
		}
	}

	// Bad names are 422 naming the field; an unreachable bucket is 424.
	wantErrField(t, h.do(h.alice, "POST", "/sandbox", map[string]any{"image_base": "host", "s3_bucket_name": "Bad_Bucket"}), 422, "s3_bucket_name")
	wantErrField(t, h.do(h.alice, "POST", "/sandbox", map[string]any{"image_base": "host", "s3_bucket_name": "team-docs", "s3_key_prefix": "a/../b"}), 422, "s3_key_prefix")
	r := h.do(h.alice, "POST", "/sandbox", map[string]any{"image_base": "host", "s3_bucket_name": "no-such-bucket", "init_from_s3": true})
	wantStatus(t, r, http.StatusFailedDependency)
	if e := r.errBody(t); !strings.Contains(e.Message, "no-such-bucket") {
		t.Errorf("424 message %q does not name the bucket", e.Message)
	}

	// init_from_s3 copies the plain objects in; snapshots go to the bucket.
	sb := h.newSandbox(h.alice, map[string]any{"s3_bucket_name": "team-docs", "s3_key_prefix": "docs/my-project/", "init_from_s3": true})
	if got := h.sh(h.alice, sb, `cd /workspace && cat README.md "notes/a b.txt" && test ! -e other.txt && echo ok`); got != "hellospacedok\n" {
		t.Errorf("imported workspace: %q", got)
	}
	// The import's progress is in the sandbox's build log.
	if logs := h.do(h.alice, "GET", "/sandbox/"+sb+"/logs", nil); !strings.Contains(string(logs.body), "init_from_s3: 2/2 files") {
		t.Errorf("build log lacks the init_from_s3 progress:\n%s", logs.body)
	}
	h.sh(h.alice, sb, `echo more > /workspace/more.txt`)
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	var taken snapshot.Taken
	r.data(t, &taken)
	if taken.Bucket != "team-docs" || taken.Prefix != "docs/my-project" || taken.Files != 3 {
		t.Errorf("snapshot = %+v", taken)
	}
	if _, err := st.Head(ctx, "docs/my-project/.techboss/versions/"+taken.Name+".json.gz"); err != nil {
		t.Errorf("manifest not in the bucket: %v", err)
	}

	// The server going away: a clear 424, the sandbox keeps working, and the
	// next snapshot after it returns succeeds.
	h.v.Stop()
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusFailedDependency)
	if e := r.errBody(t); !strings.Contains(e.Message, "unreachable") {
		t.Errorf("message %q, want it to say the endpoint is unreachable", e.Message)
	}
	if got := h.sh(h.alice, sb, `echo still working`); got != "still working\n" {
		t.Errorf("sandbox after failed snapshot: %q", got)
	}
	h.v.Start(t)
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil), http.StatusCreated)

	// A second sandbox on the same prefix with init_from_s3 gets the latest version.
	sb2 := h.newSandbox(h.alice, map[string]any{"s3_bucket_name": "team-docs", "s3_key_prefix": "docs/my-project", "init_from_s3": true})
	if got := h.sh(h.alice, sb2, `cat /workspace/more.txt`); got != "more\n" {
		t.Errorf("second sandbox: %q, want the latest version restored", got)
	}
	var _ blob.Store = st
}

func TestSnapshotArchiveDriver(t *testing.T) {
	h := newSnapshotHarnessWith(t, func(d *local.Driver) sandbox.Driver { return archiveOnly{d, d, d} }, nil)
	ctx := context.Background()
	if err := h.s3.CreateBucket(ctx, "arch"); err != nil {
		t.Fatal(err)
	}
	st, err := h.s3.Open("arch")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "p/seed.txt", bytes.NewReader([]byte("seed")), 4); err != nil {
		t.Fatal(err)
	}
	sb := h.newSandbox(h.alice, map[string]any{"s3_bucket_name": "arch", "s3_key_prefix": "p", "init_from_s3": true})
	h.sh(h.alice, sb, `cd /workspace && cat seed.txt > /dev/null && mkdir -p d/e && echo one > d/a && ln -s d/a l && chmod 700 d`)
	r := h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	var first snapshot.Taken
	r.data(t, &first)
	if first.Files != 2 || first.Stats.Dirs != 2 || first.Stats.Symlinks != 1 {
		t.Fatalf("tar snapshot = %+v", first)
	}
	h.sh(h.alice, sb, `cd /workspace && echo two > d/a && rm seed.txt && echo x > extra`)
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/restore", map[string]string{"snapshot_id": first.ID})
	wantStatus(t, r, http.StatusOK)
	got := h.sh(h.alice, sb, `cd /workspace && cat seed.txt d/a && readlink l && test ! -e extra && test -d d/e && stat -c %a d`)
	if want := "seedone\nd/a\n700\n"; got != want {
		t.Errorf("after tar restore: %q, want %q", got, want)
	}
}

func TestSnapshotRetention(t *testing.T) {
	h := newSnapshotHarnessWith(t, nil, func(d *snapshot.ServiceDeps) {
		d.Retention = snapshot.Retention{KeepLast: 2, Grace: time.Nanosecond}
	})
	sb := h.newSandbox(h.alice, nil)
	var ids []string
	for i := range 3 {
		h.sh(h.alice, sb, "echo "+string(rune('a'+i))+" > /workspace/v")
		r := h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
		wantStatus(t, r, http.StatusCreated)
		var taken snapshot.Taken
		r.data(t, &taken)
		ids = append(ids, taken.ID)
	}
	var list listSnapshotsResponse
	h.do(h.alice, "GET", "/sandbox/"+sb+"/snapshots", nil).data(t, &list)
	if len(list.Snapshots) != 2 || list.Snapshots[0].ID != ids[2] || list.Snapshots[1].ID != ids[1] {
		t.Fatalf("after retention: %+v, want the last two", list.Snapshots)
	}
	wantStatus(t, h.do(h.alice, "GET", "/snapshots/"+ids[0], nil), http.StatusNotFound)
	// The kept versions still restore.
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/restore", map[string]string{"snapshot_id": ids[1]}), http.StatusOK)
	if got := h.sh(h.alice, sb, "cat /workspace/v"); got != "b\n" {
		t.Errorf("restored %q, want b", got)
	}
}

// TestSnapshotLabelAndFile: a snapshot taken with a label keeps it (in its
// answer and in the list), a bad label is a 422 naming it, and a file's
// content in two versions reads back for comparing them.
func TestSnapshotLabelAndFile(t *testing.T) {
	h := newSnapshotHarness(t)
	sb := h.newSandbox(h.alice, nil)
	h.sh(h.alice, sb, `cd /workspace && mkdir src && printf 'one\ntwo\n' > src/a.txt && : > empty.txt`)
	r := h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", map[string]string{"label": "  before the refactor "})
	wantStatus(t, r, http.StatusCreated)
	var first snapshot.Taken
	r.data(t, &first)
	if first.Label != "before the refactor" {
		t.Fatalf("label = %q", first.Label)
	}
	h.sh(h.alice, sb, `cd /workspace && printf 'one\n2\n' > src/a.txt`)
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil) // no body: no label
	wantStatus(t, r, http.StatusCreated)
	var second snapshot.Taken
	r.data(t, &second)
	wantErrField(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", map[string]string{"label": strings.Repeat("x", 101)}), 422, "label")
	wantErrField(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", map[string]string{"label": "a\nb"}), 422, "label")
	var list listSnapshotsResponse
	h.do(h.alice, "GET", "/sandbox/"+sb+"/snapshots", nil).data(t, &list)
	if len(list.Snapshots) != 2 || list.Snapshots[0].Label != "" || list.Snapshots[1].Label != "before the refactor" {
		t.Fatalf("list = %+v", list.Snapshots)
	}

	read := func(id, p string) string {
		t.Helper()
		r := h.do(h.alice, "GET", "/snapshots/"+id+"/file?path="+url.QueryEscape(p), nil)
		wantStatus(t, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type %q", ct)
		}
		return string(r.body)
	}
	if a, b := read(first.ID, "src/a.txt"), read(second.ID, "/workspace/src/a.txt"); a != "one\ntwo\n" || b != "one\n2\n" {
		t.Errorf("src/a.txt: %q then %q", a, b)
	}
	if got := read(first.ID, "empty.txt"); got != "" {
		t.Errorf("empty.txt: %q", got)
	}
	wantErrField(t, h.do(h.alice, "GET", "/snapshots/"+first.ID+"/file", nil), 422, "path")
	wantErrField(t, h.do(h.alice, "GET", "/snapshots/"+first.ID+"/file?path=src", nil), 422, "path")
	wantStatus(t, h.do(h.alice, "GET", "/snapshots/"+first.ID+"/file?path=nope.txt", nil), http.StatusNotFound)
	wantStatus(t, h.do(h.alice, "GET", "/snapshots/"+first.ID+"/file?path=../../etc/passwd", nil), http.StatusNotFound)
	wantStatus(t, h.do(h.bob, "GET", "/snapshots/"+first.ID+"/file?path=src/a.txt", nil), http.StatusNotFound)
}
