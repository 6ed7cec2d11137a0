package httpapi

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// requireSandboxHost skips or fails t without root and bubblewrap (sandboxtest.RequireLocal).
func requireSandboxHost(t testing.TB) { t.Helper(); sandboxtest.RequireLocal(t) }

// sandboxInit is the local driver's in-sandbox helper, built once per test
// process at a fixed path (rebuilt, not accumulated, across runs).
var sandboxInit struct {
	once sync.Once
	path string
	err  error
}

func buildInit(t testing.TB) string {
	t.Helper()
	sandboxInit.once.Do(func() {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("techboss-httpapi-test-init-%d", os.Getuid()))
		if err := sandboxtest.BuildInit(bin); err != nil {
			sandboxInit.err = err
		}
		sandboxInit.path = bin
	})
	if sandboxInit.err != nil {
		t.Fatal(sandboxInit.err)
	}
	return sandboxInit.path
}

// newSandboxManager returns a Manager over db on a real local driver; its
// sandboxes are destroyed at cleanup.
func newSandboxManager(t testing.TB, db *store.DB, now func() time.Time, limits sandbox.Limits, opts ...func(*local.Options)) *sandbox.Manager {
	t.Helper()
	requireSandboxHost(t)
	o := local.Options{DataDir: t.TempDir(), InitBinary: buildInit(t)}
	for _, f := range opts {
		f(&o)
	}
	drv, err := local.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	m, err := sandbox.NewManager(sandbox.Deps{
		Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local",
		Limits: limits, Now: now, Metrics: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		items, _ := db.ListSandboxes(context.Background(), sandbox.ListFilter{})
		for _, sb := range items {
			_ = drv.Destroy(context.Background(), sandbox.Ref(sb.ID))
		}
	})
	return m
}

type sbHarness struct {
	*harness
	m          *sandbox.Manager
	alice, bob *http.Client
}

func newSandboxHarness(t *testing.T, tweak func(*sandbox.Limits), opts ...func(*local.Options)) *sbHarness {
	t.Helper()
	requireSandboxHost(t)
	h := &harness{
		t: t, db: storetest.OpenSQLite(t), logs: newLogs(t), reg: prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	log := h.logger()
	h.auth = auth.New(auth.Options{
		Store: h.db, Logger: log, Clock: h.clock.Now, Hash: auth.TestHashParams,
		SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: 10 * time.Minute,
	})
	limits := sandbox.DefaultLimits()
	limits.ExecOutputCap = 64 << 10
	if tweak != nil {
		tweak(&limits)
	}
	m := newSandboxManager(t, h.db, h.clock.Now, limits, opts...)
	h.srv = httptest.NewServer(validateResponses(t, NewServer(Deps{
		Logger: log, Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Version: "test", Sandboxes: m,
	})))
	t.Cleanup(h.srv.Close)
	h.createUser("alice@example.com", auth.RoleMember)
	h.createUser("bob@example.com", auth.RoleMember)
	return &sbHarness{harness: h, m: m, alice: h.mustLogin("alice@example.com"), bob: h.mustLogin("bob@example.com")}
}

func (h *sbHarness) createSandbox(c *http.Client, spec any) string {
	h.t.Helper()
	r := h.do(c, "POST", "/sandbox", spec)
	wantStatus(h.t, r, http.StatusOK)
	var out createSandboxResponse
	r.data(h.t, &out)
	return out.SandboxID
}

func wantField(t *testing.T, r resp, status int, field string) {
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

func TestSandboxCreateOriginalShape(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	// The original design's body, every field given.
	r := h.do(h.alice, "POST", "/sandbox", map[string]any{
		"image_base": "host", "dockerfile_commands": []string{}, "volume_name": "",
		"s3_bucket_name": "", "s3_key_prefix": "", "init_from_s3": false,
	})
	wantStatus(t, r, http.StatusOK)
	var raw struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(raw.Data))
	for k := range raw.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "created_at,sandbox_id,status" {
		t.Errorf("response keys %s, want exactly created_at,sandbox_id,status", got)
	}
	if raw.Data["status"] != "running" {
		t.Errorf("status %v, want running", raw.Data["status"])
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(raw.Data["created_at"])); err != nil {
		t.Errorf("created_at %v: %v", raw.Data["created_at"], err)
	}
	id := fmt.Sprint(raw.Data["sandbox_id"])
	var sb sandbox.Sandbox
	r = h.do(h.alice, "GET", "/sandbox/"+id, nil)
	wantStatus(t, r, http.StatusOK)
	r.data(t, &sb)
	if sb.ID != id || sb.State != sandbox.Running || sb.Spec.Network.Mode != "none" {
		t.Errorf("GET = %+v", sb)
	}
	var caps struct {
		Capabilities []string `json:"capabilities"`
	}
	r.data(t, &caps)
	if !slices.Contains(caps.Capabilities, "files") || !slices.Contains(caps.Capabilities, "archive") {
		t.Errorf("capabilities %v, want files and archive", caps.Capabilities)
	}
}

func TestSandboxBadSpecs(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"unknown field", `{"image_base":"host","gpu_count":1}`, 422, "gpu_count"},
		{"wrong type", `{"memory_mb":"lots"}`, 422, "memory_mb"},
		{"bad dockerfile line", map[string]any{"dockerfile_commands": []string{"RUN true", "ADD http://x /y"}}, 422, "dockerfile_commands[1]"},
		{"not dockerfile", map[string]any{"dockerfile_commands": []string{"apt-get install git"}}, 422, "dockerfile_commands[0]"},
		{"over maximum", map[string]any{"memory_mb": 1 << 20}, 422, "memory_mb"},
		{"pids over maximum", map[string]any{"pids_limit": 1 << 20}, 422, "pids_limit"},
		{"negative cpu", map[string]any{"cpu": -1}, 422, "cpu"},
		{"network", map[string]any{"network": "host"}, 422, "network"},
		{"network object", map[string]any{"network": map[string]any{"deny": []string{"x"}}}, 422, "network"},
		{"network allow empty", map[string]any{"network": map[string]any{"allow": []string{}}}, 422, "network.allow"},
		{"network allow entry", map[string]any{"network": map[string]any{"allow": []string{"api.github.com", "not a host!"}}}, 422, "network.allow[1]"},
		{"bucket", map[string]any{"s3_bucket_name": "Bad_Bucket"}, 422, "s3_bucket_name"},
		{"prefix", map[string]any{"s3_key_prefix": "../other"}, 422, "s3_key_prefix"},
		{"env name", map[string]any{"env": map[string]string{"1BAD": "x"}}, 422, "env.1BAD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantField(t, h.do(h.alice, "POST", "/sandbox", tc.body), tc.status, tc.field)
		})
	}
	t.Run("unknown image", func(t *testing.T) {
		r := h.do(h.alice, "POST", "/sandbox", map[string]any{"image_base": "127.0.0.1:1/no/such:tag"})
		if r.status < 400 || r.status >= 500 {
			t.Fatalf("status %d, want 4xx; body %s", r.status, r.body)
		}
		if e := r.errBody(t); e.Message == "" || e.Message == "internal error" {
			t.Errorf("error %+v does not say what is wrong", e)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		wantStatus(t, h.do(h.alice, "POST", "/sandbox", `{"image_base":`), 400)
	})
}

func TestSandboxOtherUserGets404Everywhere(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{"volume_name": "alicevol"})
	wantStatus(t, h.do(h.alice, "PUT", "/sandbox/"+id+"/files/secret.txt", "alice's"), http.StatusOK)
	base := "/sandbox/" + id
	for _, rt := range []struct{ method, path string }{
		{"GET", base},
		{"DELETE", base},
		{"GET", base + "/logs"},
		{"POST", base + "/exec"},
		{"POST", base + "/exec?wait=true"},
		{"GET", base + "/files"},
		{"GET", base + "/files?dir=/workspace"},
		{"GET", base + "/files/secret.txt"},
		{"PUT", base + "/files/x.txt"},
		{"DELETE", base + "/files/secret.txt"},
		{"GET", base + "/archive?path=/workspace"},
		{"PUT", base + "/archive?path=/workspace"},
		{"DELETE", "/volumes/alicevol"},
		{"GET", "/sandbox/sb_doesnotexist"},
	} {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			var body any
			switch {
			case strings.HasSuffix(rt.path, "/exec") || strings.Contains(rt.path, "/exec?"):
				body = map[string]any{"command": []string{"cat", "/workspace/secret.txt"}}
			case rt.method == "PUT":
				body = "x"
			}
			r := h.do(h.bob, rt.method, rt.path, body)
			wantStatus(t, r, http.StatusNotFound)
			if strings.Contains(string(r.body), "alice") {
				t.Errorf("404 body leaks: %s", r.body)
			}
		})
	}
	var list listSandboxesResponse
	h.do(h.bob, "GET", "/sandbox", nil).data(t, &list)
	if len(list.Sandboxes) != 0 {
		t.Errorf("bob lists %d sandboxes, want 0", len(list.Sandboxes))
	}
	var vols listVolumesResponse
	h.do(h.bob, "GET", "/volumes", nil).data(t, &vols)
	if len(vols.Volumes) != 0 {
		t.Errorf("bob lists volumes %+v", vols.Volumes)
	}
	// Alice's sandbox is untouched.
	var sb sandbox.Sandbox
	h.do(h.alice, "GET", base, nil).data(t, &sb)
	if sb.State != sandbox.Running {
		t.Errorf("alice's sandbox is %s after bob's attempts", sb.State)
	}
	r := h.do(h.alice, "GET", base+"/files/secret.txt", nil)
	if r.status != 200 || string(r.body) != "alice's" {
		t.Errorf("alice's file after bob's attempts: %d %q", r.status, r.body)
	}
}

func TestSandboxListAndTerminate(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	var ids []string
	for i := range 3 {
		ids = append(ids, h.createSandbox(h.alice, map[string]any{"labels": map[string]string{"n": fmt.Sprint(i), "team": "core"}}))
	}
	var page listSandboxesResponse
	h.do(h.alice, "GET", "/sandbox?limit=2", nil).data(t, &page)
	if len(page.Sandboxes) != 2 || page.NextCursor == "" {
		t.Fatalf("first page: %d sandboxes, cursor %q", len(page.Sandboxes), page.NextCursor)
	}
	var page2 listSandboxesResponse
	h.do(h.alice, "GET", "/sandbox?limit=2&cursor="+page.NextCursor, nil).data(t, &page2)
	if len(page2.Sandboxes) != 1 || page2.NextCursor != "" {
		t.Fatalf("second page: %d sandboxes, cursor %q", len(page2.Sandboxes), page2.NextCursor)
	}
	seen := map[string]bool{}
	for _, sb := range append(page.Sandboxes, page2.Sandboxes...) {
		seen[sb.ID] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("pages miss %s", id)
		}
	}

	r := h.do(h.alice, "DELETE", "/sandbox/"+ids[0], nil)
	wantStatus(t, r, http.StatusOK)
	var sb sandbox.Sandbox
	r.data(t, &sb)
	if sb.State != sandbox.Terminated {
		t.Fatalf("DELETE answered %s", sb.State)
	}
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+ids[0], nil), http.StatusOK) // idempotent
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+ids[0]+"/exec?wait=true", map[string]any{"command": []string{"true"}}), http.StatusConflict)

	var running listSandboxesResponse
	h.do(h.alice, "GET", "/sandbox?state=running&label=n=1", nil).data(t, &running)
	if len(running.Sandboxes) != 1 || running.Sandboxes[0].ID != ids[1] {
		t.Errorf("state+label filter: %+v", running.Sandboxes)
	}
	var terminated listSandboxesResponse
	h.do(h.alice, "GET", "/sandbox?state=terminated", nil).data(t, &terminated)
	if len(terminated.Sandboxes) != 1 || terminated.Sandboxes[0].ID != ids[0] {
		t.Errorf("terminated filter: %+v", terminated.Sandboxes)
	}
	wantField(t, h.do(h.alice, "GET", "/sandbox?state=sleeping", nil), 422, "state")
	wantField(t, h.do(h.alice, "GET", "/sandbox?cursor=!!", nil), 422, "cursor")
	wantField(t, h.do(h.alice, "GET", "/sandbox?limit=0", nil), 422, "limit")
	wantField(t, h.do(h.alice, "GET", "/sandbox?label=novalue", nil), 422, "label")
}

func TestSandboxQuota(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, func(l *sandbox.Limits) { l.MaxRunningPerUser = 1 })
	h.createSandbox(h.alice, map[string]any{})
	r := h.do(h.alice, "POST", "/sandbox", map[string]any{})
	wantStatus(t, r, http.StatusTooManyRequests)
	if e := r.errBody(t); !strings.Contains(e.Message, "quota") || !strings.Contains(e.Message, "maximum is 1") {
		t.Errorf("429 message %q is not clear", e.Message)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	h.createSandbox(h.bob, map[string]any{})
}

// sseEvent is one parsed server-sent event.
type sseEvent struct{ event, data string }

func readSSE(t *testing.T, body io.Reader) []sseEvent {
	t.Helper()
	var (
		evs  []sseEvent
		cur  sseEvent
		data []string
	)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" || data != nil {
				cur.data = strings.Join(data, "\n")
				evs = append(evs, cur)
			}
			cur, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

func (h *sbHarness) execSSE(c *http.Client, id string, body any) []sseEvent {
	h.t.Helper()
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", h.srv.URL+"/sandbox/"+id+"/exec", bytes.NewReader(j))
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(res.Body)
		h.t.Fatalf("exec: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	return readSSE(h.t, res.Body)
}

// outputOf reassembles one stream's bytes from its events.
func outputOf(t *testing.T, evs []sseEvent, stream string) (out []byte, usedB64 bool) {
	t.Helper()
	for _, ev := range evs {
		if ev.event != stream {
			continue
		}
		var c struct {
			Data    *string `json:"data"`
			DataB64 string  `json:"data_b64"`
		}
		if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
			t.Fatalf("event data %q: %v", ev.data, err)
		}
		switch {
		case c.Data != nil:
			out = append(out, *c.Data...)
		default:
			b, err := base64.StdEncoding.DecodeString(c.DataB64)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
			usedB64 = true
		}
	}
	return out, usedB64
}

func exitOfEvents(t *testing.T, evs []sseEvent) execExit {
	t.Helper()
	if len(evs) == 0 || evs[len(evs)-1].event != "exit" {
		t.Fatalf("events %+v do not end with exit", evs)
	}
	var e execExit
	if err := json.Unmarshal([]byte(evs[len(evs)-1].data), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestExecSSE(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})

	evs := h.execSSE(h.alice, id, map[string]any{
		"command": []string{"sh", "-c", `echo "héllo $GREETING"; echo oops >&2; exit 7`},
		"env":     map[string]string{"GREETING": "world"},
	})
	if out, b64 := outputOf(t, evs, "stdout"); string(out) != "héllo world\n" || b64 {
		t.Errorf("stdout %q (base64 %v), want text", out, b64)
	}
	if errOut, _ := outputOf(t, evs, "stderr"); string(errOut) != "oops\n" {
		t.Errorf("stderr %q", errOut)
	}
	if e := exitOfEvents(t, evs); e.ExitCode != 7 || e.Signal != "" || e.TimedOut {
		t.Errorf("exit %+v, want code 7", e)
	}

	// Binary output travels as base64 and arrives byte-exact.
	evs = h.execSSE(h.alice, id, map[string]any{"command": []string{"sh", "-c", `printf 'ok\377\376\000end'`}})
	if out, b64 := outputOf(t, evs, "stdout"); string(out) != "ok\xff\xfe\x00end" || !b64 {
		t.Errorf("binary stdout %q (base64 %v)", out, b64)
	}

	// Large output, split across many events, arrives whole; multibyte runes
	// split across writes are never broken into base64.
	evs = h.execSSE(h.alice, id, map[string]any{"command": []string{"sh", "-c", `i=0; while [ $i -lt 20000 ]; do printf 'é€'; i=$((i+1)); done`}})
	out, b64 := outputOf(t, evs, "stdout")
	if want := strings.Repeat("é€", 20000); string(out) != want || b64 {
		t.Errorf("large stdout: %d bytes (base64 %v), want %d bytes of text", len(out), b64, len(want))
	}

	// stdin, workdir, timeout.
	evs = h.execSSE(h.alice, id, map[string]any{"command": []string{"sh", "-c", "pwd; cat"}, "workdir": "/tmp", "stdin": "from stdin"})
	if out, _ := outputOf(t, evs, "stdout"); string(out) != "/tmp\nfrom stdin" {
		t.Errorf("stdin/workdir output %q", out)
	}
	evs = h.execSSE(h.alice, id, map[string]any{"command": []string{"sleep", "30"}, "timeout_s": 0.3})
	if e := exitOfEvents(t, evs); !e.TimedOut || e.ExitCode == 0 {
		t.Errorf("timeout exit %+v, want timed_out and a non-zero code", e)
	}

	// Bad requests are JSON errors before any stream starts.
	wantField(t, h.do(h.alice, "POST", "/sandbox/"+id+"/exec", map[string]any{"command": []string{}}), 422, "command")
	wantField(t, h.do(h.alice, "POST", "/sandbox/"+id+"/exec", map[string]any{"command": []string{"true"}, "timeout_s": -1}), 422, "timeout_s")
	wantField(t, h.do(h.alice, "POST", "/sandbox/"+id+"/exec", map[string]any{"command": []string{"true"}, "workdir": "../../"}), 422, "workdir")
	wantField(t, h.do(h.alice, "POST", "/sandbox/"+id+"/exec", map[string]any{"command": []string{"true"}, "shell": true}), 422, "shell")
}

// frame is one frame of the binary exec stream.
type frame struct {
	kind byte
	data []byte
}

// execFrames runs an exec asking for accept and returns the response's
// content type and, for the frame form, its frames.
func (h *sbHarness) execFrames(c *http.Client, id, accept string, body any) (string, []frame) {
	h.t.Helper()
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", h.srv.URL+"/sandbox/"+id+"/exec", bytes.NewReader(j))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	res, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	ct := res.Header.Get("Content-Type")
	if res.StatusCode != 200 || ct != execFramesType {
		return ct, nil
	}
	var fs []frame
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(res.Body, hdr[:]); err == io.EOF {
			return ct, fs
		} else if err != nil {
			h.t.Fatalf("frame header: %v", err)
		}
		if hdr[1]|hdr[2]|hdr[3] != 0 {
			h.t.Fatalf("frame header %x: bytes 1-3 must be 0", hdr)
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.ReadFull(res.Body, data); err != nil {
			h.t.Fatalf("frame payload: %v", err)
		}
		fs = append(fs, frame{hdr[0], data})
	}
}

// TestExecFrames: asked for with Accept, the exec stream is binary
// frames: output bytes as they are (no escaping, no base64, a UTF-8
// sequence split between writes passed on as written), then one exit
// frame, and nothing after it.
func TestExecFrames(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	ct, fs := h.execFrames(h.alice, id, "text/event-stream;q=0.5, "+execFramesType, map[string]any{
		"command": []string{"sh", "-c", `printf 'a\000b\377\342\202'; echo err >&2; sleep 0.05; printf '\254'; head -c 300000 /dev/zero; exit 3`},
	})
	if ct != execFramesType || len(fs) < 3 {
		t.Fatalf("content type %q, %d frames", ct, len(fs))
	}
	var out, errOut []byte
	for _, f := range fs[:len(fs)-1] {
		switch f.kind {
		case frameStdout:
			out = append(out, f.data...)
		case frameStderr:
			errOut = append(errOut, f.data...)
		default:
			t.Fatalf("frame of kind %d before the end: %q", f.kind, f.data)
		}
	}
	if want := "a\x00b\xff\xe2\x82\xac" + strings.Repeat("\x00", 300000); string(out) != want || string(errOut) != "err\n" {
		t.Fatalf("stdout %d bytes (%q…), stderr %q", len(out), out[:min(len(out), 12)], errOut)
	}
	last := fs[len(fs)-1]
	var exit execExit
	if err := json.Unmarshal(last.data, &exit); last.kind != frameExit || err != nil || exit.ExitCode != 3 {
		t.Fatalf("last frame: kind %d %s", last.kind, last.data)
	}
	// q=0 refuses the frame form: SSE it is.
	if ct, _ := h.execFrames(h.alice, id, execFramesType+";q=0", map[string]any{"command": []string{"true"}}); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Accept with q=0: content type %q, want SSE", ct)
	}
}

func TestExecWait(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, func(l *sandbox.Limits) { l.ExecOutputCap = 1000 })
	id := h.createSandbox(h.alice, map[string]any{})
	exec := func(body any) execWaitResponse {
		t.Helper()
		r := h.do(h.alice, "POST", "/sandbox/"+id+"/exec?wait=true", body)
		wantStatus(t, r, http.StatusOK)
		var out execWaitResponse
		r.data(t, &out)
		return out
	}
	got := exec(map[string]any{"command": []string{"sh", "-c", "cat; echo e >&2; exit 2"}, "stdin": "in put"})
	if got.Stdout != "in put" || got.Stderr != "e\n" || got.ExitCode != 2 || got.StdoutTruncated || got.StderrTruncated {
		t.Errorf("wait answer %+v", got)
	}
	got = exec(map[string]any{"command": []string{"sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a"}})
	if len(got.Stdout) != 1000 || !got.StdoutTruncated {
		t.Errorf("capped stdout: %d bytes, truncated %v; want 1000, true", len(got.Stdout), got.StdoutTruncated)
	}
	got = exec(map[string]any{"command": []string{"cat"}, "stdin_b64": base64.StdEncoding.EncodeToString([]byte{0, 0xff, 1})})
	if b, _ := base64.StdEncoding.DecodeString(got.StdoutB64); !bytes.Equal(b, []byte{0, 0xff, 1}) || got.Stdout != "" {
		t.Errorf("binary round trip: %+v", got)
	}
	got = exec(map[string]any{"command": []string{"sleep", "30"}, "timeout_s": 0.2})
	if !got.TimedOut {
		t.Errorf("timeout: %+v", got.execExit)
	}
	// The sandbox still works after a timed-out exec.
	if got = exec(map[string]any{"command": []string{"echo", "alive"}}); got.Stdout != "alive\n" {
		t.Errorf("after timeout: %+v", got)
	}
}

func TestSandboxFilesAndArchive(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	base := "/sandbox/" + id

	blob := make([]byte, 3<<20+17)
	_, _ = rand.Read(blob)
	r := h.do(h.alice, "PUT", base+"/files/dir/sub/blob.bin?mode=0600", blob)
	wantStatus(t, r, http.StatusOK)
	var wr writeFileResponse
	r.data(t, &wr)
	if wr.Path != "/workspace/dir/sub/blob.bin" || wr.Size != int64(len(blob)) {
		t.Errorf("PUT answered %+v", wr)
	}
	r = h.do(h.alice, "GET", base+"/files/dir/sub/blob.bin", nil)
	wantStatus(t, r, http.StatusOK)
	if !bytes.Equal(r.body, blob) {
		t.Fatalf("GET returned %d bytes, not the %d uploaded", len(r.body), len(blob))
	}
	if m := r.header.Get("X-File-Mode"); m != "0600" {
		t.Errorf("X-File-Mode %q, want 0600", m)
	}
	// The sandbox sees the same bytes.
	var ex execWaitResponse
	h.do(h.alice, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", "wc -c < /workspace/dir/sub/blob.bin"}}).data(t, &ex)
	if strings.TrimSpace(ex.Stdout) != fmt.Sprint(len(blob)) {
		t.Errorf("in-sandbox size %q", ex.Stdout)
	}

	var ls listDirResponse
	h.do(h.alice, "GET", base+"/files?dir=dir/sub", nil).data(t, &ls)
	if ls.Dir != "/workspace/dir/sub" || len(ls.Entries) != 1 || ls.Entries[0].Name != "blob.bin" || ls.Entries[0].Size != int64(len(blob)) || ls.Entries[0].Type != "file" {
		t.Errorf("listing %+v", ls)
	}
	wantField(t, h.do(h.alice, "GET", base+"/files?dir=../..", nil), 422, "dir")
	wantStatus(t, h.do(h.alice, "GET", base+"/files/dir", nil), 422) // a directory
	wantStatus(t, h.do(h.alice, "GET", base+"/files/nope.txt", nil), 404)

	wantStatus(t, h.do(h.alice, "DELETE", base+"/files/dir", nil), http.StatusConflict) // not empty
	wantStatus(t, h.do(h.alice, "DELETE", base+"/files/dir/sub/blob.bin", nil), 200)
	wantStatus(t, h.do(h.alice, "GET", base+"/files/dir/sub/blob.bin", nil), 404)
	wantStatus(t, h.do(h.alice, "DELETE", base+"/files/dir?recursive=true", nil), 200)
	wantStatus(t, h.do(h.alice, "GET", base+"/files?dir=dir", nil), 404)

	// A relative symlink is followed inside the sandbox; one that climbs out
	// of the root is refused (never followed onto the host).
	h.do(h.alice, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c",
		"echo target > /workspace/t.txt && ln -s t.txt /workspace/link && ln -s ../../../../../../../../../proc/1/environ /workspace/up"}}).data(t, &ex)
	r = h.do(h.alice, "GET", base+"/files/link", nil)
	if r.status != 200 || string(r.body) != "target\n" {
		t.Errorf("GET through a symlink: %d %q", r.status, r.body)
	}
	if r = h.do(h.alice, "GET", base+"/files/up", nil); r.status == 200 {
		t.Errorf("GET through a symlink climbing out of the root: 200, %d bytes", len(r.body))
	}

	// Escaped names: a space is a name, an encoded "../" is refused.
	wantStatus(t, h.do(h.alice, "PUT", base+"/files/my%20notes.txt", "spaced"), 200)
	h.do(h.alice, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"cat", "/workspace/my notes.txt"}}).data(t, &ex)
	if ex.Stdout != "spaced" {
		t.Errorf("file with a space: %q", ex.Stdout)
	}
	wantField(t, h.do(h.alice, "GET", base+"/files/..%2F..%2Fetc%2Fpasswd", nil), 422, "path")
	wantField(t, h.do(h.alice, "PUT", base+"/files/a%2F..%2F..%2Fx", "x"), 422, "path")
	wantField(t, h.do(h.alice, "GET", base+"/archive?path=../../etc", nil), 422, "path")

	// Archive in, then out.
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	files := map[string]string{"a.txt": "alpha", "nested/b.txt": "beta"}
	for _, name := range []string{"a.txt", "nested/b.txt"} {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte(files[name]))
	}
	_ = tw.Close()
	wantStatus(t, h.do(h.alice, "PUT", base+"/archive?path=/workspace/arch", tb.Bytes()), 200)
	h.do(h.alice, "POST", base+"/exec?wait=true", map[string]any{"command": []string{"cat", "/workspace/arch/a.txt", "/workspace/arch/nested/b.txt"}}).data(t, &ex)
	if ex.Stdout != "alphabeta" {
		t.Errorf("extracted content %q", ex.Stdout)
	}
	r = h.do(h.alice, "GET", base+"/archive?path=/workspace/arch", nil)
	wantStatus(t, r, 200)
	if ct := r.header.Get("Content-Type"); ct != "application/x-tar" {
		t.Errorf("archive Content-Type %q", ct)
	}
	got := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(r.body))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("archive out: %v", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			got[strings.TrimPrefix(hdr.Name, "./")] = string(b)
		}
	}
	for name, want := range files {
		found := false
		for k, v := range got {
			if strings.HasSuffix(k, name) && v == want {
				found = true
			}
		}
		if !found {
			t.Errorf("archive out lacks %s=%q: %v", name, want, got)
		}
	}
	wantStatus(t, h.do(h.alice, "GET", base+"/archive?path=/workspace/nothing", nil), 404)
}

func TestSandboxLogsAndVolumes(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{"volume_name": "proj"})
	r := h.do(h.alice, "GET", "/sandbox/"+id+"/logs", nil)
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), "sandbox running") {
		t.Errorf("logs %q", r.body)
	}
	req, _ := http.NewRequest("GET", h.srv.URL+"/sandbox/"+id+"/logs?follow=true", nil)
	res, err := h.alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	evs := readSSE(t, res.Body)
	res.Body.Close()
	if len(evs) < 2 || evs[0].event != "log" || evs[len(evs)-1].event != "status" || !strings.Contains(evs[len(evs)-1].data, `"running"`) {
		t.Errorf("followed logs: %+v", evs)
	}

	var vols listVolumesResponse
	h.do(h.alice, "GET", "/volumes", nil).data(t, &vols)
	if len(vols.Volumes) != 1 || vols.Volumes[0].Name != "proj" || !vols.Volumes[0].InUse {
		t.Fatalf("volumes %+v", vols.Volumes)
	}
	wantStatus(t, h.do(h.alice, "DELETE", "/volumes/proj", nil), http.StatusConflict)
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id, nil), 200)
	wantStatus(t, h.do(h.alice, "DELETE", "/volumes/proj", nil), 200)
	wantStatus(t, h.do(h.alice, "DELETE", "/volumes/proj", nil), 404)
}

func TestSandboxRoutesWithoutManager(t *testing.T) {
	h := newHarness(t)
	h.createUser("carol@example.com", auth.RoleMember)
	c := h.mustLogin("carol@example.com")
	wantStatus(t, h.do(c, "GET", "/sandbox", nil), http.StatusServiceUnavailable)
}

func FuzzIncompleteTail(f *testing.F) {
	for _, s := range []string{"", "a", "é", "\xc3", "ab\xe2\x82", "\xff", "€€\xf0\x9f\x98"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := incompleteTail(b)
		if n < 0 || n > 3 || n > len(b) {
			t.Fatalf("incompleteTail(%q) = %d", b, n)
		}
		if utf8Valid := bytes.Equal([]byte(strings.ToValidUTF8(string(b), "")), b); utf8Valid && n != 0 {
			t.Fatalf("valid UTF-8 %q has an incomplete tail %d", b, n)
		}
	})
}

// BenchmarkHTTPExecTrue measures `true` through POST /sandbox/{id}/exec on
// the local driver: p50/p99 with ?wait=true, sse-p50/p99 streaming, beside
// a raw fork/exec of /bin/true on the host (floor-*) in the same run. It
// takes its own samples (at least 300) so `-benchtime 1x` still yields
// percentiles.
func BenchmarkHTTPExecTrue(b *testing.B) { benchExecTrue(b) }

// benchExecTrue is BenchmarkHTTPExecTrue on a local driver with opts (its
// runtime).
func benchExecTrue(b *testing.B, opts ...func(*local.Options)) {
	requireSandboxHost(b)
	db := storetest.OpenSQLite(b)
	log := slog.New(slog.DiscardHandler)
	authSvc := auth.New(auth.Options{Store: db, Logger: log, Hash: auth.TestHashParams, SessionTTL: time.Hour, AccountLimit: 3, IPLimit: 100, ThrottleWindow: time.Minute})
	m := newSandboxManager(b, db, time.Now, sandbox.DefaultLimits(), opts...)
	srv := httptest.NewServer(NewServer(Deps{Logger: log, Store: db, Auth: authSvc, Metrics: prometheus.NewRegistry(), Sandboxes: m}))
	b.Cleanup(srv.Close)
	ctx := context.Background()
	u, err := authSvc.CreateUser(ctx, "bench@example.com", testPassword, auth.RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	_, token, err := authSvc.CreateToken(ctx, u.ID, "bench")
	if err != nil {
		b.Fatal(err)
	}
	sb, err := m.Create(ctx, u.ID, sandbox.Spec{})
	if err != nil {
		b.Fatal(err)
	}
	client := srv.Client()
	body := []byte(`{"command":["true"]}`)
	call := func(query string) {
		req, _ := http.NewRequest("POST", srv.URL+"/sandbox/"+sb.ID+"/exec"+query, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+string(token))
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !bytes.Contains(out, []byte(`"exit_code":0`)) {
			b.Fatalf("exec: %d %s", res.StatusCode, out)
		}
	}
	raw := func() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
	samples := max(b.N, 300)
	measure := func(f func()) []time.Duration {
		ds := make([]time.Duration, 0, samples)
		for range samples {
			t0 := time.Now()
			f()
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		return ds
	}
	pct := func(ds []time.Duration, p float64) float64 {
		return float64(ds[int(float64(len(ds)-1)*p)].Microseconds()) / 1000
	}
	call("?wait=true") // warm up connections
	b.ResetTimer()
	wait := measure(func() { call("?wait=true") })
	sse := measure(func() { call("") })
	fork := measure(raw)
	b.StopTimer()
	b.ReportMetric(pct(wait, .5), "p50-ms")
	b.ReportMetric(pct(wait, .99), "p99-ms")
	b.ReportMetric(pct(fork, .5), "floor-p50-ms")
	b.ReportMetric(pct(fork, .99), "floor-p99-ms")
	b.ReportMetric(pct(sse, .5), "sse-p50-ms")
	b.ReportMetric(pct(sse, .99), "sse-p99-ms")
	b.ReportMetric(0, "ns/op")
}

func TestSandboxBuildLogWhileCreating(t *testing.T) {
	t.Parallel()
	// A build step that waits until a name resolves, which the test's DNS
	// server (the sandboxes' upstream) allows once it releases the build:
	// the sandbox is observably `creating` for exactly that long. (Build
	// sandboxes cannot reach the host's own services.)
	arrived, release := make(chan struct{}), make(chan struct{})
	upstream := gateDNS(t, arrived, release)
	h := newSandboxHarness(t, nil, func(o *local.Options) { o.DNSUpstreams = []string{upstream} })
	done := make(chan resp, 1)
	go func() {
		done <- h.do(h.alice, "POST", "/sandbox", map[string]any{
			"dockerfile_commands": []string{"RUN echo step-one-marker; getent hosts arrived.gate.test; until getent hosts release.gate.test >/dev/null; do sleep 0.05; done; echo step-two-marker"},
		})
	}()
	<-arrived
	var creating listSandboxesResponse
	h.do(h.alice, "GET", "/sandbox?state=creating", nil).data(t, &creating)
	if len(creating.Sandboxes) != 1 {
		close(release)
		<-done
		t.Fatalf("creating sandboxes %+v, want one", creating.Sandboxes)
	}
	id := creating.Sandboxes[0].ID
	wantStatus(t, h.do(h.bob, "GET", "/sandbox/"+id+"/logs?follow=true", nil), http.StatusNotFound)
	req, _ := http.NewRequest("GET", h.srv.URL+"/sandbox/"+id+"/logs?follow=true", nil)
	res, err := h.alice.Do(req)
	if err != nil {
		close(release)
		<-done
		t.Fatal(err)
	}
	defer res.Body.Close()
	// Read live events until the first step's output shows, then let the build go on.
	var seen strings.Builder
	br := bufio.NewReader(res.Body)
	for !strings.Contains(seen.String(), "step-one-marker") {
		line, err := br.ReadString('\n')
		seen.WriteString(line)
		if err != nil {
			break
		}
	}
	close(release)
	rest := readSSE(t, br)
	created := <-done
	wantStatus(t, created, http.StatusOK)
	if !strings.Contains(seen.String(), "step-one-marker") {
		t.Fatalf("live log before release: %q", seen.String())
	}
	var all strings.Builder
	for _, ev := range rest {
		all.WriteString(ev.event + " " + ev.data + "\n")
	}
	if !strings.Contains(all.String(), "step-two-marker") || len(rest) == 0 || rest[len(rest)-1].event != "status" || !strings.Contains(rest[len(rest)-1].data, `"running"`) {
		t.Errorf("log after release:\n%s", all.String())
	}
}

// gateDNS serves the build gate's names as the sandboxes' DNS upstream: a
// query for arrived.gate.test closes arrived; release.gate.test resolves
// only once release is closed. It returns the server's address.
func gateDNS(t *testing.T, arrived chan<- struct{}, release <-chan struct{}) string {
	var once sync.Once
	return sandboxtest.FakeDNS(t, func(name string) (netip.Addr, bool) {
		switch name {
		case "arrived.gate.test":
			once.Do(func() { close(arrived) })
		case "release.gate.test":
			select {
			case <-release:
				return netip.MustParseAddr("192.0.2.1"), true
			default:
			}
		}
		return netip.Addr{}, false
	})
}

// TestDeleteFailedSandbox deletes a sandbox whose build failed: DELETE
// answers it terminated (the failure's reason kept), so it leaves the
// active list, and a second DELETE is a no-op.
func TestDeleteFailedSandbox(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	wantStatus(t, h.do(h.alice, "POST", "/sandbox", map[string]any{"dockerfile_commands": []string{"RUN exit 3"}}), http.StatusUnprocessableEntity)
	var failed listSandboxesResponse
	h.do(h.alice, "GET", "/sandbox?state=failed", nil).data(t, &failed)
	if len(failed.Sandboxes) != 1 {
		t.Fatalf("failed sandboxes %+v, want one", failed.Sandboxes)
	}
	id := failed.Sandboxes[0].ID
	wantStatus(t, h.do(h.bob, "DELETE", "/sandbox/"+id, nil), http.StatusNotFound)
	r := h.do(h.alice, "DELETE", "/sandbox/"+id, nil)
	wantStatus(t, r, http.StatusOK)
	var sb sandbox.Sandbox
	r.data(t, &sb)
	if sb.State != sandbox.Terminated || !strings.Contains(sb.Reason, "exit") || sb.TerminatedAt == nil {
		t.Fatalf("DELETE of a failed sandbox answered %s (%q), want terminated keeping the reason", sb.State, sb.Reason)
	}
	h.do(h.alice, "GET", "/sandbox?state=failed", nil).data(t, &failed)
	if len(failed.Sandboxes) != 0 {
		t.Errorf("still listed as failed: %+v", failed.Sandboxes)
	}
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id, nil), http.StatusOK) // idempotent
}
