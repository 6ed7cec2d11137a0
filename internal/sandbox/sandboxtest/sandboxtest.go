// Package sandboxtest is the conformance suite every sandbox.Driver passes.
// A driver's test calls Exercise with a constructor; the suite creates
// sandboxes through it and checks argv, exit codes, streams, stdin, env,
// working directory, signals, large and binary output, concurrent execs,
// background processes, idempotent destroy, not-found errors and, when the
// driver implements them, the optional capabilities (files, archives).
package sandboxtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Option adjusts the suite for one driver.
type Option func(*config)

type config struct {
	spec      sandbox.Spec
	largeSize int
	timeout   time.Duration
	skip      map[string]string
}

// WithSpec sets the Spec of the sandboxes the suite creates (default:
// image_base "host", network none). The image needs a POSIX sh, cat,
// head, printf, sleep, kill, pwd and sha256sum.
func WithSpec(s sandbox.Spec) Option { return func(c *config) { c.spec = s } }

// WithLargeOutput sets the size of the large-output case (default 64 MiB).
func WithLargeOutput(n int) Option { return func(c *config) { c.largeSize = n } }

// WithTimeout bounds every single operation of the suite (default 2 min);
// it turns a hang into a failure instead of a stuck test binary.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithSkip skips the named cases (e.g. "Exec/Signals") with the reason
// given; use it only for a documented limitation of the backend.
func WithSkip(reason string, names ...string) Option {
	return func(c *config) {
		if c.skip == nil {
			c.skip = map[string]string{}
		}
		for _, n := range names {
			c.skip[n] = reason
		}
	}
}

func (h *harness) maybeSkip(t *testing.T, name string) {
	t.Helper()
	if why, ok := h.cfg.skip[name]; ok {
		t.Skip(why)
	}
}

// Exercise runs the conformance table against drivers made by newDriver.
// newDriver is called once per top-level group; it should register its
// own cleanup with t.Cleanup.
func Exercise(t *testing.T, newDriver func(t *testing.T) sandbox.Driver, opts ...Option) {
	cfg := config{spec: sandbox.Spec{ImageBase: "host"}, largeSize: 64 << 20, timeout: 2 * time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	h := &harness{cfg: cfg}

	t.Run("Exec", func(t *testing.T) {
		d := newDriver(t)
		ref := h.create(t, d)
		for _, c := range execCases {
			t.Run(c.name, func(t *testing.T) { h.maybeSkip(t, "Exec/"+c.name); c.run(t, h, d, ref) })
		}
	})
	t.Run("Lifecycle", func(t *testing.T) {
		d := newDriver(t)
		for _, c := range lifecycleCases {
			t.Run(c.name, func(t *testing.T) { h.maybeSkip(t, "Lifecycle/"+c.name); c.run(t, h, d) })
		}
	})
	t.Run("Files", func(t *testing.T) {
		d := newDriver(t)
		f, ok := d.(sandbox.Files)
		if !ok {
			t.Skip("driver does not implement sandbox.Files")
		}
		ref := h.create(t, d)
		for _, c := range fileCases {
			t.Run(c.name, func(t *testing.T) { h.maybeSkip(t, "Files/"+c.name); c.run(t, h, d, f, ref) })
		}
	})
	t.Run("Archive", func(t *testing.T) {
		d := newDriver(t)
		a, ok := d.(sandbox.Archiver)
		if !ok {
			t.Skip("driver does not implement sandbox.Archiver")
		}
		ref := h.create(t, d)
		testArchive(t, h, d, a, ref)
	})
}

type harness struct {
	cfg config
}

func (h *harness) ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.timeout)
	t.Cleanup(cancel)
	return ctx
}

// NewID returns a fresh sandbox ID for tests.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "sbt-" + hex.EncodeToString(b[:])
}

func (h *harness) create(t *testing.T, d sandbox.Driver) sandbox.Ref {
	t.Helper()
	var log bytes.Buffer
	ref, err := d.Create(h.ctx(t), sandbox.CreateRequest{ID: NewID(), OwnerID: "sandboxtest", Spec: h.cfg.spec, Log: &log})
	if err != nil {
		t.Fatalf("Create: %v\nlog:\n%s", err, log.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.timeout)
		defer cancel()
		if err := d.Destroy(ctx, ref); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return ref
}

// result is one finished exec.
type result struct {
	st     sandbox.ExitStatus
	stdout string
	stderr string
}

func (h *harness) run(t *testing.T, d sandbox.Driver, ref sandbox.Ref, req sandbox.ExecRequest) result {
	t.Helper()
	var out, errb bytes.Buffer
	if req.Stdout == nil {
		req.Stdout = &out
	}
	if req.Stderr == nil {
		req.Stderr = &errb
	}
	st, err := d.Exec(h.ctx(t), ref, req)
	if err != nil {
		t.Fatalf("Exec %q: %v", req.Argv, err)
	}
	return result{st: st, stdout: out.String(), stderr: errb.String()}
}

func (h *harness) sh(t *testing.T, d sandbox.Driver, ref sandbox.Ref, script string) result {
	t.Helper()
	return h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", script}})
}

// mustOK runs a script and fails the test unless it exits 0.
func (h *harness) mustOK(t *testing.T, d sandbox.Driver, ref sandbox.Ref, script string) string {
	t.Helper()
	r := h.sh(t, d, ref, script)
	if r.st.Code != 0 || r.st.Signal != "" {
		t.Fatalf("%q: got exit %d signal %q, want 0\nstdout: %s\nstderr: %s", script, r.st.Code, r.st.Signal, r.stdout, r.stderr)
	}
	return r.stdout
}

// lineWatcher is a Writer that closes ready once a line equal to want was written.
type lineWatcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	ready chan struct{}
	done  bool
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, ready: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done {
		for _, l := range strings.Split(w.buf.String(), "\n") {
			if l == w.want {
				w.done = true
				close(w.ready)
				break
			}
		}
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type execCase struct {
	name string
	run  func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref)
}

var execCases = []execCase{
	{"Argv", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		r := h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"printf", "%s|", "a b", "", "c'd", "$HOME", "*", "ü"}})
		if want := "a b||c'd|$HOME|*|ü|"; r.stdout != want {
			t.Errorf("stdout: got %q, want %q", r.stdout, want)
		}
	}},
	{"ExitCodes", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		for _, code := range []int{0, 1, 3, 42, 255} {
			r := h.sh(t, d, ref, fmt.Sprintf("exit %d", code))
			if r.st.Code != code || r.st.Signal != "" || r.st.OOMKilled {
				t.Errorf("exit %d: got %+v", code, r.st)
			}
		}
	}},
	{"KilledBySignal", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		r := h.sh(t, d, ref, "kill -TERM $$")
		if r.st.Signal != "SIGTERM" || r.st.Code != 128+int(syscall.SIGTERM) {
			t.Errorf("got %+v, want signal SIGTERM code 143", r.st)
		}
	}},
	{"CommandNotFound", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		st, err := d.Exec(h.ctx(t), ref, sandbox.ExecRequest{Argv: []string{"/no/such/command-xyz"}, Stdout: io.Discard, Stderr: io.Discard})
		if err == nil && st.Code == 0 {
			t.Errorf("got exit 0 and no error for a missing command")
		}
		if err != nil && errs.KindOf(err) == errs.Internal {
			t.Errorf("got internal error %v, want a non-zero exit or a public error", err)
		}
	}},
	{"StdoutStderr", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		r := h.sh(t, d, ref, "echo out1; echo err1 >&2; echo out2; echo err2 >&2")
		if r.stdout != "out1\nout2\n" || r.stderr != "err1\nerr2\n" {
			t.Errorf("got stdout %q stderr %q", r.stdout, r.stderr)
		}
	}},
	{"NilWriters", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		st, err := d.Exec(h.ctx(t), ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo lost; echo lost >&2; exit 5"}})
		if err != nil || st.Code != 5 {
			t.Errorf("got %+v, %v; want exit 5", st, err)
		}
	}},
	{"Stdin", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		in := "hello\x00world\n\xff\xfe binary"
		r := h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"cat"}, Stdin: strings.NewReader(in)})
		if r.stdout != in {
			t.Errorf("got %q, want %q", r.stdout, in)
		}
	}},
	{"StdinLarge", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		in := make([]byte, 8<<20)
		_, _ = rand.Read(in)
		sum := sha256.Sum256(in)
		r := h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "sha256sum | cut -d' ' -f1"}, Stdin: bytes.NewReader(in)})
		if got, want := strings.TrimSpace(r.stdout), hex.EncodeToString(sum[:]); got != want {
			t.Errorf("sha256 of stdin inside: got %q, want %q", got, want)
		}
	}},
	{"NoStdin", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		r := h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"cat"}})
		if r.st.Code != 0 || r.stdout != "" {
			t.Errorf("cat without stdin: got %+v %q, want exit 0 and no output", r.st, r.stdout)
		}
	}},
	{"Env", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		r := h.run(t, d, ref, sandbox.ExecRequest{
			Argv: []string{"sh", "-c", `printf '%s|%s' "$FOO" "$EMPTY_ONE"; command -v sh >/dev/null && printf '|path-ok'`},
			Env:  map[string]string{"FOO": "bar baz=qux", "EMPTY_ONE": ""},
		})
		if want := "bar baz=qux||path-ok"; r.stdout != want {
			t.Errorf("got %q, want %q (stderr %q)", r.stdout, want, r.stderr)
		}
	}},
	{"Workdir", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		r := h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"pwd"}})
		if got := strings.TrimSpace(r.stdout); got != "/workspace" {
			t.Errorf("default dir: got %q, want /workspace", got)
		}
		r = h.run(t, d, ref, sandbox.ExecRequest{Argv: []string{"pwd"}, Dir: "/tmp"})
		if got := strings.TrimSpace(r.stdout); got != "/tmp" {
			t.Errorf("dir /tmp: got %q, want /tmp", got)
		}
	}},
	{"Signals", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		out := newLineWatcher("ready")
		sig := make(chan sandbox.Signal, 1)
		done := make(chan struct{})
		var st sandbox.ExitStatus
		var err error
		go func() {
			defer close(done)
			st, err = d.Exec(h.ctx(t), ref, sandbox.ExecRequest{
				Argv:    []string{"sh", "-c", `trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done`},
				Stdout:  out,
				Stderr:  io.Discard,
				Signals: sig,
			})
		}()
		select {
		case <-out.ready:
		case <-done:
			t.Fatalf("exec ended before ready: %+v %v %q", st, err, out.String())
		}
		sig <- syscall.SIGINT
		<-done
		close(sig)
		if err != nil || st.Code != 7 || !strings.Contains(out.String(), "got-int") {
			t.Errorf("got %+v, %v, stdout %q; want exit 7 after the trap ran", st, err, out.String())
		}
	}},
	{"CancelKills", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		ctx, cancel := context.WithCancel(h.ctx(t))
		defer cancel()
		out := newLineWatcher("ready")
		done := make(chan error, 1)
		go func() {
			_, err := d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo $$ > /tmp/cancel-pid; echo ready; exec sleep 100000"}, Stdout: out})
			done <- err
		}()
		select {
		case <-out.ready:
		case err := <-done:
			t.Fatalf("exec ended before ready: %v", err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Errorf("Exec after cancel: got nil error, want one")
		}
		if r := h.sh(t, d, ref, "kill -0 $(cat /tmp/cancel-pid)"); r.st.Code == 0 {
			t.Errorf("the command still runs after its context was cancelled")
		}
	}},
	{"BinaryOutput", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		var script strings.Builder
		want := make([]byte, 0, 256)
		script.WriteString("printf '")
		for i := 0; i < 256; i++ {
			if i == '%' {
				script.WriteString("%%")
			} else {
				fmt.Fprintf(&script, "\\%03o", i)
			}
			want = append(want, byte(i))
		}
		script.WriteString("'")
		r := h.sh(t, d, ref, script.String())
		if !bytes.Equal([]byte(r.stdout), want) {
			t.Errorf("got %d bytes %x (exit %+v, stderr %q), want all 256 byte values", len(r.stdout), r.stdout, r.st, r.stderr)
		}
		r = h.sh(t, d, ref, script.String()+" >&2")
		if !bytes.Equal([]byte(r.stderr), want) {
			t.Errorf("stderr: got %d bytes, want all 256 byte values", len(r.stderr))
		}
	}},
	{"LargeOutput", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		n := h.cfg.largeSize
		out := h.mustOK(t, d, ref, fmt.Sprintf("head -c %d /dev/urandom > /tmp/big && sha256sum /tmp/big | cut -d' ' -f1", n))
		want := strings.TrimSpace(out)
		hsh := sha256.New()
		cnt := &countWriter{w: hsh}
		st, err := d.Exec(h.ctx(t), ref, sandbox.ExecRequest{Argv: []string{"cat", "/tmp/big"}, Stdout: cnt, Stderr: io.Discard})
		if err != nil || st.Code != 0 {
			t.Fatalf("cat: %+v %v", st, err)
		}
		if got := hex.EncodeToString(hsh.Sum(nil)); got != want || cnt.n != int64(n) {
			t.Errorf("got %d bytes sha256 %s, want %d bytes %s", cnt.n, got, n, want)
		}
		h.mustOK(t, d, ref, "rm -f /tmp/big")
	}},
	{"ConcurrentExecs", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		const n = 8
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out bytes.Buffer
				st, err := d.Exec(h.ctx(t), ref, sandbox.ExecRequest{
					Argv: []string{"sh", "-c", `i=0; while [ $i -lt 2000 ]; do echo "$ID"; i=$((i+1)); done; exit $ID`}, Env: map[string]string{"ID": strconv.Itoa(i)},
					Stdout: &out,
				})
				if err != nil || st.Code != i {
					errc <- fmt.Errorf("exec %d: got %+v %v", i, st, err)
					return
				}
				if want := strings.Repeat(strconv.Itoa(i)+"\n", 2000); out.String() != want {
					errc <- fmt.Errorf("exec %d: output mixed up (%d bytes)", i, out.Len())
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	}},
	{"BackgroundProcess", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		// The background sleep keeps stdout open: Exec must still return
		// when sh exits.
		out := h.mustOK(t, d, ref, "sleep 100000 & echo $!")
		pid := strings.TrimSpace(out)
		if _, err := strconv.Atoi(pid); err != nil {
			t.Fatalf("got pid %q", out)
		}
		h.mustOK(t, d, ref, "kill -0 "+pid)
		h.mustOK(t, d, ref, "echo shared > /tmp/bg-file")
		if got := h.mustOK(t, d, ref, "cat /tmp/bg-file"); got != "shared\n" {
			t.Errorf("/tmp between execs: got %q", got)
		}
		h.mustOK(t, d, ref, "kill "+pid)
	}},
	{"WorkspaceWritable", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		h.mustOK(t, d, ref, "echo data > /workspace/f && test \"$(cat /workspace/f)\" = data && rm /workspace/f")
	}},
	{"RecoverAlive", func(t *testing.T, h *harness, d sandbox.Driver, ref sandbox.Ref) {
		alive, err := d.Recover(h.ctx(t), ref)
		if err != nil || !alive {
			t.Errorf("Recover of a running sandbox: got %v, %v; want true, nil", alive, err)
		}
	}},
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type lifecycleCase struct {
	name string
	run  func(t *testing.T, h *harness, d sandbox.Driver)
}

var lifecycleCases = []lifecycleCase{
	{"UnknownRef", func(t *testing.T, h *harness, d sandbox.Driver) {
		_, err := d.Exec(h.ctx(t), sandbox.Ref("sandboxtest-no-such-ref"), sandbox.ExecRequest{Argv: []string{"true"}})
		if !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Exec on unknown ref: got %v, want errs.ErrNotFound", err)
		}
		if err := d.Destroy(h.ctx(t), sandbox.Ref("sandboxtest-no-such-ref")); err != nil {
			t.Errorf("Destroy unknown ref: got %v, want nil", err)
		}
	}},
	{"DestroyIdempotent", func(t *testing.T, h *harness, d sandbox.Driver) {
		ref, err := d.Create(h.ctx(t), sandbox.CreateRequest{ID: NewID(), OwnerID: "sandboxtest", Spec: h.cfg.spec})
		if err != nil {
			t.Fatal(err)
		}
		h.mustOK(t, d, ref, "sleep 100000 >/dev/null 2>&1 &")
		for i := 0; i < 2; i++ {
			if err := d.Destroy(h.ctx(t), ref); err != nil {
				t.Fatalf("Destroy #%d: %v", i+1, err)
			}
		}
		_, err = d.Exec(h.ctx(t), ref, sandbox.ExecRequest{Argv: []string{"true"}})
		if !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Exec after Destroy: got %v, want errs.ErrNotFound", err)
		}
		alive, err := d.Recover(h.ctx(t), ref)
		if err != nil || alive {
			t.Errorf("Recover after Destroy: got %v, %v; want false, nil", alive, err)
		}
	}},
	{"ConcurrentDestroy", func(t *testing.T, h *harness, d sandbox.Driver) {
		ref, err := d.Create(h.ctx(t), sandbox.CreateRequest{ID: NewID(), OwnerID: "sandboxtest", Spec: h.cfg.spec})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.Destroy(h.ctx(t), ref); err != nil {
					t.Errorf("concurrent Destroy: %v", err)
				}
			}()
		}
		wg.Wait()
	}},
	{"SeparateSandboxes", func(t *testing.T, h *harness, d sandbox.Driver) {
		a, b := h.create(t, d), h.create(t, d)
		h.mustOK(t, d, a, "echo a > /tmp/which")
		if r := h.sh(t, d, b, "cat /tmp/which"); r.st.Code == 0 {
			t.Errorf("sandbox b sees a's /tmp file: %q", r.stdout)
		}
	}},
}

type fileCase struct {
	name string
	run  func(t *testing.T, h *harness, d sandbox.Driver, f sandbox.Files, ref sandbox.Ref)
}

var fileCases = []fileCase{
	{"RoundTrip", func(t *testing.T, h *harness, d sandbox.Driver, f sandbox.Files, ref sandbox.Ref) {
		ctx := h.ctx(t)
		data := []byte("file\x00content\xff")
		n, err := f.WriteFile(ctx, ref, "/workspace/dir1/a.bin", 0o640, bytes.NewReader(data))
		if err != nil || n != int64(len(data)) {
			t.Fatalf("WriteFile: %d, %v", n, err)
		}
		if got := h.mustOK(t, d, ref, "cat /workspace/dir1/a.bin"); got != string(data) {
			t.Errorf("inside: got %q, want %q", got, data)
		}
		var buf bytes.Buffer
		fi, err := f.ReadFile(ctx, ref, "/workspace/dir1/a.bin", &buf)
		if err != nil || !bytes.Equal(buf.Bytes(), data) || fi.Size != int64(len(data)) || fi.Type != "file" {
			t.Errorf("ReadFile: got %q %+v %v", buf.Bytes(), fi, err)
		}
		if fi.Mode.Perm() != 0o640 {
			t.Errorf("mode: got %v, want 0640", fi.Mode.Perm())
		}
		h.mustOK(t, d, ref, "mkdir -p /workspace/dir1/sub && ln -s a.bin /workspace/dir1/link")
		list, err := f.ListDir(ctx, ref, "/workspace/dir1")
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]string{}
		for _, e := range list {
			types[e.Name] = e.Type
		}
		if want := map[string]string{"a.bin": "file", "sub": "dir", "link": "symlink"}; fmt.Sprint(types) != fmt.Sprint(want) {
			t.Errorf("ListDir: got %v, want %v", types, want)
		}
		st, err := f.Stat(ctx, ref, "/workspace/dir1/sub")
		if err != nil || st.Type != "dir" {
			t.Errorf("Stat dir: got %+v, %v", st, err)
		}
		if err := f.Remove(ctx, ref, "/workspace/dir1/a.bin"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Stat(ctx, ref, "/workspace/dir1/a.bin"); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Stat after Remove: got %v, want errs.ErrNotFound", err)
		}
		if _, err := f.ReadFile(ctx, ref, "/workspace/nope", io.Discard); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("ReadFile missing: got %v, want errs.ErrNotFound", err)
		}
	}},
	{"TmpVisible", func(t *testing.T, h *harness, d sandbox.Driver, f sandbox.Files, ref sandbox.Ref) {
		h.mustOK(t, d, ref, "echo from-exec > /tmp/ft")
		var buf bytes.Buffer
		if _, err := f.ReadFile(h.ctx(t), ref, "/tmp/ft", &buf); err != nil || buf.String() != "from-exec\n" {
			t.Errorf("ReadFile /tmp/ft: got %q, %v", buf.String(), err)
		}
	}},
	{"Escapes", func(t *testing.T, h *harness, d sandbox.Driver, f sandbox.Files, ref sandbox.Ref) {
		ctx := h.ctx(t)
		h.mustOK(t, d, ref, "mkdir -p /workspace/esc && ln -sfn ../../../../../../../../etc /workspace/esc/up && ln -sfn /proc/1/root /workspace/esc/proc1")
		marker := "sandboxtest-escape-" + NewID()
		for _, p := range []string{
			"/workspace/../../../../" + marker,
			"/workspace/esc/up/../../" + marker,
			"/workspace/esc/proc1/" + marker,
		} {
			_, err := f.WriteFile(ctx, ref, p, 0o644, strings.NewReader("x"))
			for _, host := range []string{"/" + marker, "/etc/" + marker} {
				if _, serr := os.Lstat(host); serr == nil {
					_ = os.Remove(host)
					t.Errorf("WriteFile %q escaped onto the host: %s exists", p, host)
				}
			}
			if err == nil {
				// Chroot-style resolution (the path clamped inside the sandbox) is acceptable.
				continue
			}
			if k := errs.KindOf(err); k != errs.Invalid && k != errs.Forbidden && k != errs.NotFound {
				t.Errorf("WriteFile %q: got %v (kind %v), want invalid, forbidden or not found", p, err, k)
			}
		}
		for _, p := range []string{"relative/path", "", "/workspace/\x00nul"} {
			if _, err := f.Stat(ctx, ref, p); err == nil {
				t.Errorf("Stat %q: got nil error", p)
			}
		}
	}},
}

func testArchive(t *testing.T, h *harness, d sandbox.Driver, a sandbox.Archiver, ref sandbox.Ref) {
	ctx := h.ctx(t)
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	add := func(hdr *tar.Header, body string) {
		hdr.Size = int64(len(body))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(tw, body)
	}
	add(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "d/f.txt", Typeflag: tar.TypeReg, Mode: 0o600}, "hello tar")
	add(&tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "f.txt"}, "")
	_ = tw.Close()
	if err := a.ArchiveIn(ctx, ref, "/workspace/arch", &in); err != nil {
		t.Fatalf("ArchiveIn: %v", err)
	}
	if got := h.mustOK(t, d, ref, "cat /workspace/arch/d/l"); got != "hello tar" {
		t.Errorf("after ArchiveIn: got %q", got)
	}
	var out bytes.Buffer
	if err := a.ArchiveOut(ctx, ref, "/workspace/arch", &out); err != nil {
		t.Fatalf("ArchiveOut: %v", err)
	}
	got := map[string]string{}
	tr := tar.NewReader(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[strings.TrimPrefix(strings.TrimSuffix(hdr.Name, "/"), "./")] = string(b) + hdr.Linkname
	}
	if got["d/f.txt"] != "hello tar" || got["d/l"] != "f.txt" {
		t.Errorf("ArchiveOut: got %v", got)
	}

	// Tar-slip: entries escaping the target are refused and nothing lands outside.
	marker := "slip-" + NewID()
	for _, name := range []string{"../" + marker, "/../../" + marker, "x/../../" + marker} {
		var evil bytes.Buffer
		tw := tar.NewWriter(&evil)
		_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
		_, _ = tw.Write([]byte("x"))
		_ = tw.Close()
		err := a.ArchiveIn(ctx, ref, "/workspace/arch", &evil)
		if err == nil {
			t.Errorf("ArchiveIn with entry %q: got nil error", name)
		}
	}
	// A symlink entry followed by a file through it.
	var evil bytes.Buffer
	tw = tar.NewWriter(&evil)
	_ = tw.WriteHeader(&tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../tmp"})
	_ = tw.WriteHeader(&tar.Header{Name: "esc/" + marker, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	_ = a.ArchiveIn(ctx, ref, "/workspace/arch2", &evil)
	if r := h.sh(t, d, ref, "ls /workspace /workspace/arch /tmp / 2>/dev/null | grep -c "+marker+" || true"); strings.TrimSpace(r.stdout) != "0" {
		// Landing at /tmp inside the sandbox is tolerable only for chroot-style resolution; report it.
		t.Logf("symlink tar entry resolved inside the sandbox: %q", r.stdout)
	}
}
