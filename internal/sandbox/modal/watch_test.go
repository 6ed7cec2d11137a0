package modal_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/modal"
	"github.com/techbossai/techboss/internal/sandbox/modal/modaltest"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// watching is one Watch running in the background.
type watching struct {
	events chan sandbox.WatchEvent
	done   chan struct{} // closed when Watch returned err
	err    error
	cancel context.CancelFunc
	seen   []sandbox.WatchEvent
}

func watcher(t *testing.T, d *modal.Driver) sandbox.Watcher {
	t.Helper()
	w, ok := any(d).(sandbox.Watcher)
	if !ok {
		t.Fatal("the modal driver does not implement sandbox.Watcher")
	}
	return w
}

// startWatch starts a watch of path and returns once it is in place.
func startWatch(t *testing.T, d *modal.Driver, ref sandbox.Ref, path string, recursive bool) *watching {
	t.Helper()
	w := watcher(t, d)
	ctx, cancel := context.WithCancel(testCtx(t))
	ws := &watching{events: make(chan sandbox.WatchEvent, 1024), done: make(chan struct{}), cancel: cancel}
	ready := make(chan struct{})
	go func() {
		defer close(ws.done)
		ws.err = w.Watch(ctx, ref, path, recursive, func() { close(ready) }, func(ev sandbox.WatchEvent) error {
			ws.events <- ev
			return nil
		})
	}()
	select {
	case <-ready:
	case <-ws.done:
		cancel()
		t.Fatalf("watch %s ended before it was ready: %v", path, ws.err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-ws.done:
		case <-time.After(time.Minute):
			t.Error("the watch did not end")
		}
	})
	return ws
}

// await reads events until one of typ at path comes (the others are kept
// in seen).
func (ws *watching) await(t *testing.T, typ, path string) sandbox.WatchEvent {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev := <-ws.events:
			ws.seen = append(ws.seen, ev)
			if ev.Type == typ && ev.Path == path {
				return ev
			}
		case <-ws.done:
			t.Fatalf("the watch ended (%v) before a %s of %s; saw %+v", ws.err, typ, path, ws.seen)
		case <-timeout:
			t.Fatalf("no %s of %s within a minute; saw %+v", typ, path, ws.seen)
		}
	}
}

func newWatchSandbox(t *testing.T, spec sandbox.Spec) (*modal.Driver, sandbox.Ref) {
	t.Helper()
	startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	if spec.ImageBase == "" {
		spec.ImageBase = "alpine:3.21"
	}
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref) })
	return d, ref
}

// TestWatch follows a recursive watch of a workspace directory through
// the SDK's exec on the Modal stand-in: a created, a written, a renamed
// and a removed file, a new directory with a file, a name with a newline;
// a symbolic link to / inside the tree is reported as an entry and never
// entered, and one on the watched path itself is refused; removing the
// watched directory ends the watch.
func TestWatch(t *testing.T) {
	d, ref := newWatchSandbox(t, sandbox.Spec{})
	run(t, d, ref, "mkdir -p /workspace/w/old && echo x > /workspace/w/old/kept")
	ws := startWatch(t, d, ref, "/workspace/w", true)

	run(t, d, ref, "echo one > /workspace/w/a.txt")
	if ev := ws.await(t, "create", "/workspace/w/a.txt"); ev.Kind != "file" {
		t.Errorf("create: %+v", ev)
	}
	run(t, d, ref, "echo two >> /workspace/w/a.txt")
	ws.await(t, "write", "/workspace/w/a.txt")
	run(t, d, ref, "mv /workspace/w/a.txt /workspace/w/b.txt")
	if ev := ws.await(t, "rename", "/workspace/w/b.txt"); ev.From != "/workspace/w/a.txt" || ev.Kind != "file" {
		t.Errorf("rename: %+v", ev)
	}
	run(t, d, ref, "rm /workspace/w/b.txt")
	ws.await(t, "remove", "/workspace/w/b.txt")
	run(t, d, ref, "mkdir /workspace/w/src && echo hi > /workspace/w/src/main.go")
	if ev := ws.await(t, "create", "/workspace/w/src"); ev.Kind != "dir" {
		t.Errorf("create dir: %+v", ev)
	}
	ws.await(t, "create", "/workspace/w/src/main.go")
	run(t, d, ref, `touch "/workspace/w/odd
name"`)
	ws.await(t, "create", "/workspace/w/odd\nname")

	// A link to / is one entry; what happens through it is not reported.
	run(t, d, ref, "ln -s / /workspace/w/root")
	if ev := ws.await(t, "create", "/workspace/w/root"); ev.Kind != "file" {
		t.Errorf("create link: %+v", ev)
	}
	run(t, d, ref, "echo out > /tmp/outside && echo in > /workspace/w/sentinel")
	ws.await(t, "create", "/workspace/w/sentinel")
	for _, ev := range ws.seen {
		if strings.HasPrefix(ev.Path, "/workspace/w/root/") || strings.Contains(ev.Path, "outside") {
			t.Errorf("an event through the link to /: %+v", ev)
		}
	}
	for _, p := range []string{"/workspace/w/root", "/workspace/w/root/tmp"} {
		err := watcher(t, d).Watch(testCtx(t), ref, p, true, nil, func(sandbox.WatchEvent) error { return nil })
		if errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("watch %s: %v, want a 422 about the symbolic link", p, err)
		}
	}
	err := watcher(t, d).Watch(testCtx(t), ref, "/workspace/nope", false, nil, func(sandbox.WatchEvent) error { return nil })
	if errs.KindOf(err) != errs.NotFound {
		t.Errorf("watch a missing path: %v, want not found", err)
	}

	run(t, d, ref, "rm -rf /workspace/w")
	ws.await(t, "remove", "/workspace/w")
	select {
	case <-ws.done:
		if ws.err != nil {
			t.Errorf("the watch of a removed path ended with %v", ws.err)
		}
	case <-time.After(time.Minute):
		t.Error("the watch of a removed path did not end")
	}
}

// TestWatchEndsWithClient checks that a watch whose client went away
// (its context ended) leaves no watcher running in the sandbox.
func TestWatchEndsWithClient(t *testing.T) {
	d, ref := newWatchSandbox(t, sandbox.Spec{})
	dir := "/workspace/watched-" + sandboxtest.NewID()
	run(t, d, ref, "mkdir -p "+dir)
	watchers := func() int {
		procs, err := d.ListProcesses(testCtx(t), ref)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range procs {
			if p.State == "running" && strings.Contains(strings.Join(p.Command, " "), "techboss-watch "+dir) {
				n++
			}
		}
		return n
	}
	ws := startWatch(t, d, ref, dir, false)
	if n := watchers(); n != 1 {
		t.Fatalf("%d watchers of %s run in the sandbox, want 1", n, dir)
	}
	ws.cancel()
	select {
	case <-ws.done:
		if ws.err != nil {
			t.Fatalf("the cancelled watch ended with %v", ws.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the cancelled watch did not end")
	}
	if n := watchers(); n != 0 {
		t.Errorf("%d watchers of %s still run after the watch ended", n, dir)
	}
}

// TestWatchLimits: a tree beyond the directory limit is a 422 naming path;
// an image without python3 is a 503 saying so.
func TestWatchLimits(t *testing.T) {
	d, ref := newWatchSandbox(t, sandbox.Spec{})
	run(t, d, ref, "mkdir -p /workspace/big && cd /workspace/big && seq -f d%g 0 4096 | xargs mkdir")
	w := watcher(t, d)
	err := w.Watch(testCtx(t), ref, "/workspace/big", true, nil, func(sandbox.WatchEvent) error { return nil })
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Field != "path" || !strings.Contains(e.Fields[0].Reason, "4096 directories") {
		t.Errorf("watch a tree of 4097 directories: %v", err)
	}
	// Without recursive the same directory is 4097 entries: fine.
	ws := startWatch(t, d, ref, "/workspace/big", false)
	ws.cancel()

	ref2, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o",
		Spec: sandbox.Spec{ImageBase: "alpine:3.21", Env: map[string]string{"PATH": "/nowhere"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), ref2) })
	err = w.Watch(testCtx(t), ref2, "/workspace", true, nil, func(sandbox.WatchEvent) error { return nil })
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "python3") {
		t.Errorf("watch without python3: %v, want a 503 naming python3", err)
	}
}

// TestWatchDistrustsTheWatcher: what runs as python3 is the sandbox's to
// choose; an event name that would break the SSE framing, or a path
// outside the watched one, ends the watch with an error instead of
// reaching the client.
func TestWatchDistrustsTheWatcher(t *testing.T) {
	d, ref := newWatchSandbox(t, sandbox.Spec{Env: map[string]string{"PATH": "/workspace/bin:/usr/bin:/bin"}})
	run(t, d, ref, `mkdir -p /workspace/bin /workspace/w && printf '%s\n' '#!/bin/sh' 'echo "{\"pid\":$$}"' 'echo "{\"ready\":true}"' 'cat /workspace/lines' 'exec cat >/dev/null' > /workspace/bin/python3 && chmod +x /workspace/bin/python3`)
	w := watcher(t, d)
	for _, c := range []struct{ line, want, setup, msg string }{
		{line: `{"event":"create","path":"ok","type":"file"}`, want: "/workspace/w/ok"},
		{line: `{"event":"create\nevent: injected","path":"x","type":"file"}`},
		{line: `{"event":"create","path":"../../etc/passwd","type":"file"}`, msg: "outside"},
		{line: `{"event":"create","path":"/etc/passwd","type":"file"}`, msg: "outside"},
		{line: `{"event":"rename","path":"x","from":"../y","type":"file"}`, msg: "outside"},
		{line: `{"event":"create","path":"x","type":"file\n"}`},
		{line: "not json \x1b[2J", msg: "not JSON"},
		{line: `{"error":"boom","kind":"surprise"}`, msg: "boom"},
		// A line past the limit, and bad UTF-8 in a path.
		{setup: `{ printf '{"event":"create","type":"file","path":"'; head -c 1100000 /dev/zero | tr '\0' a; printf '"}\n'; } > /workspace/lines`, msg: "over 1048576 bytes"},
		{setup: `printf '{"event":"create","type":"file","path":"\377\376"}\n' > /workspace/lines`, want: "/workspace/w/\ufffd\ufffd"},
		{line: `{"kind":"no_python","error":"its python3 is 3.6, older than 3.7"}`},
	} {
		if c.setup != "" {
			run(t, d, ref, c.setup)
		} else {
			run(t, d, ref, "cat > /workspace/lines <<'EOF'\n"+c.line+"\nEOF")
		}
		name := c.line
		if name == "" {
			name = c.setup[:min(len(c.setup), 60)]
		}
		ctx, cancel := context.WithCancel(testCtx(t))
		var got []sandbox.WatchEvent
		err := w.Watch(ctx, ref, "/workspace/w", false, nil, func(ev sandbox.WatchEvent) error {
			got = append(got, ev)
			cancel() // one event is all the fake watcher sends
			return nil
		})
		cancel()
		if c.want != "" {
			if err != nil || len(got) != 1 || got[0].Path != c.want {
				t.Errorf("%s: %+v %v, want one event at %q", name, got, err, c.want)
			}
			continue
		}
		if err == nil || len(got) != 0 {
			t.Errorf("%s: %+v %v, want an error and no event", name, got, err)
		}
		if strings.Contains(c.line, "no_python") {
			if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "3.6, older than 3.7") {
				t.Errorf("an old python3: %v, want a 503 saying so", err)
			}
			continue
		}
		// The sandbox answered badly: a 502 saying how, not a bare 500.
		if errs.KindOf(err) != errs.BadGateway || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want a 502 saying %q", name, err, c.msg)
		}
	}

	// A fake python3 that exits before it is ready: a 502 with its stderr.
	run(t, d, ref, `printf '%s\n' '#!/bin/sh' 'echo "no luck" >&2' 'exit 1' > /workspace/bin/python3`)
	err := w.Watch(testCtx(t), ref, "/workspace/w", false, nil, func(sandbox.WatchEvent) error { return nil })
	if errs.KindOf(err) != errs.BadGateway || !strings.Contains(err.Error(), "no luck") {
		t.Errorf("a watcher that exits at once: %v, want a 502 with its stderr", err)
	}
}

// TestWatchEndsWithDriver: closing the driver (the server stops) ends its
// watches, and their watchers exit with them.
func TestWatchEndsWithDriver(t *testing.T) {
	d, ref := newWatchSandbox(t, sandbox.Spec{})
	other := newDriver(t, modal.Options{}) // lists the sandbox's processes afterwards
	dir := "/workspace/watched-" + sandboxtest.NewID()
	run(t, d, ref, "mkdir -p "+dir)
	ws := startWatch(t, d, ref, dir, true)
	d.Close()
	select {
	case <-ws.done:
		if ws.err != nil {
			t.Errorf("the watch ended with %v when the driver closed", ws.err)
		}
	default:
		t.Fatal("Close returned before the watch ended")
	}
	procs, err := other.ListProcesses(testCtx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.State == "running" && strings.Contains(strings.Join(p.Command, " "), "techboss-watch "+dir) {
			t.Errorf("a watcher still runs after the driver closed: %+v", p)
		}
	}
	if err := watcher(t, d).Watch(testCtx(t), ref, dir, false, nil, func(sandbox.WatchEvent) error { return nil }); errs.KindOf(err) != errs.Unavailable {
		t.Errorf("watch on a closed driver: %v, want unavailable", err)
	}
}

// TestWatchModalGone: Modal going away under a watch ends it with a 503
// saying so, not a bare error.
func TestWatchModalGone(t *testing.T) {
	srv := startServer(t, modaltest.Options{})
	d := newDriver(t, modal.Options{})
	ref, err := d.Create(testCtx(t), sandbox.CreateRequest{ID: sandboxtest.NewID(), OwnerID: "o", Spec: sandbox.Spec{ImageBase: "alpine:3.21"}})
	if err != nil {
		t.Fatal(err)
	}
	ws := startWatch(t, d, ref, "/workspace", true)
	srv.Close()
	select {
	case <-ws.done:
		if errs.KindOf(ws.err) != errs.Unavailable {
			t.Errorf("the watch ended with %v (%v), want a 503", ws.err, errs.KindOf(ws.err))
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the watch did not end when Modal went away")
	}
}
