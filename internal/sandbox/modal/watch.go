package modal

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	modalsdk "github.com/modal-labs/modal-client/go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// File watching on Modal. The SDK's Filesystem().Watch runs Modal's own
// in-sandbox tool, which follows a watched path that is a symbolic link,
// has no "watch is in place" signal and does not say file or directory;
// so the driver runs a watcher of its own through exec instead: watch.py,
// a polling scanner for python3 (images need not have inotify tools) that
// never follows a symbolic link and prints one ASCII JSON line per change.
// It polls every watchInterval (a large tree less often: it spends at
// most a tenth of the time listing), so changes come up to that late and
// writes within one interval are one write event.

var _ sandbox.Watcher = (*Driver)(nil)

//go:embed watch.py
var watchScript string

// Limits of watches (the local driver's agent has the same numbers of
// directories and of watches per sandbox).
const (
	// MaxWatchDirs bounds the directories one recursive watch lists.
	MaxWatchDirs = 4096
	// MaxWatchEntries bounds the entries (files and directories) one watch
	// lists: each is looked at every interval.
	MaxWatchEntries = 65536
	// MaxWatches bounds the watches (and reads of processes' logs kept
	// in the sandbox) open at once in one sandbox.
	MaxWatches = 32
	// watchInterval is how often the watcher looks at the tree.
	watchInterval = 250 * time.Millisecond
	// watchHeartbeat is how often the driver tells the watcher it is still
	// there; watchIdle is how long the watcher goes on without hearing so
	// (after a server crash, whose exec streams nobody closes).
	watchHeartbeat = 20 * time.Second
	watchIdle      = 90 * time.Second
	// watchMaxLine bounds one line of the watcher (two escaped paths).
	watchMaxLine = 1 << 20
)

// watchWrapper runs the script with python3, or says there is none.
const watchWrapper = `command -v python3 >/dev/null 2>&1 || { echo '{"kind":"no_python"}'; exit 127; }
s=$1; shift; exec python3 -c "$s" techboss-watch "$@"`

// watchLine is one line of watch.py.
type watchLine struct {
	PID   int     `json:"pid"`
	Ready bool    `json:"ready"`
	Event string  `json:"event"`
	Path  *string `json:"path"`
	Type  string  `json:"type"`
	From  *string `json:"from"`
	Error string  `json:"error"`
	Kind  string  `json:"kind"`
	Field string  `json:"field"`
}

// watchAcquire counts a new watch of the sandbox (or a reader of a
// process's kept log, also an exec of ours in it), if it may have one
// more and the driver is not closing.
func (d *Driver) watchAcquire(sandboxID string) error {
	d.watchMu.Lock()
	defer d.watchMu.Unlock()
	if d.watchClosed {
		return errs.E(errs.Unavailable, "the server is shutting down")
	}
	if d.watchCount[sandboxID] >= MaxWatches {
		return errs.E(errs.TooMany, "the sandbox has as many open watches and followed process logs as allowed (%d); close one first", MaxWatches)
	}
	d.watchCount[sandboxID]++
	d.watchWG.Add(1)
	return nil
}

func (d *Driver) watchRelease(sandboxID string) {
	d.watchMu.Lock()
	defer d.watchMu.Unlock()
	if d.watchCount[sandboxID]--; d.watchCount[sandboxID] <= 0 {
		delete(d.watchCount, sandboxID)
	}
	d.watchWG.Done()
}

// closeWatches ends every watch (they end on procCtx, cancelled first)
// and waits for their watchers to exit (Close).
func (d *Driver) closeWatches() {
	d.watchMu.Lock()
	d.watchClosed = true
	d.watchMu.Unlock()
	d.watchWG.Wait()
}

// watchPath turns a path of the watcher (relative to root, "" for root)
// into the sandbox's absolute path; false for one that is not plainly
// below root.
func watchPath(root string, rel *string) (string, bool) {
	if rel == nil {
		return "", false
	}
	if *rel == "" {
		return root, true
	}
	if strings.HasPrefix(*rel, "/") || path.Clean(*rel) != *rel || *rel == ".." || strings.HasPrefix(*rel, "../") || strings.Contains(*rel, "\x00") {
		return "", false
	}
	return path.Join(root, *rel), true
}

// Watch reports the changes under p through an exec of watch.py, until
// ctx is done, fn fails, the driver closes or p goes away. The watcher
// ends when its stdin is closed; Watch waits for it to exit (and kills it
// if it does not), so no exec outlives the watch.
func (d *Driver) Watch(ctx context.Context, r sandbox.Ref, p string, recursive bool, ready func(), fn func(sandbox.WatchEvent) error) error {
	if !strings.HasPrefix(p, "/") {
		return errs.Field("path", "must be an absolute path")
	}
	root := path.Clean(p)
	h, x, err := d.handle(r)
	if err != nil {
		return err
	}
	if err := d.watchAcquire(x.SandboxID); err != nil {
		return err
	}
	defer d.watchRelease(x.SandboxID)

	rec := "0"
	if recursive {
		rec = "1"
	}
	argv := []string{"/bin/sh", "-c", watchWrapper, "sh", watchScript, root, rec,
		strconv.Itoa(MaxWatchDirs), strconv.Itoa(MaxWatchEntries),
		strconv.Itoa(int(watchInterval / time.Millisecond)), strconv.Itoa(int(watchIdle / time.Second))}
	// The exec's streams outlive ctx until the watcher has exited.
	execCtx, stopExec := context.WithCancel(context.WithoutCancel(ctx))
	defer stopExec()
	cp, err := h.Exec(execCtx, argv, &modalsdk.SandboxExecParams{Workdir: "/", Stdout: modalsdk.Pipe, Stderr: modalsdk.Pipe})
	if err != nil {
		return mapErr(err, "watch")
	}

	stopBeat := make(chan struct{})
	d.heartbeat(ctx, cp, watchHeartbeat, stopBeat)
	var wg sync.WaitGroup
	stderr := &stderrTail{n: 4 << 10}
	wg.Go(func() { _, _ = io.Copy(stderr, cp.Stderr) })
	lines := make(chan watchLine)
	readErr := make(chan error, 1)
	wg.Go(func() {
		sc := bufio.NewScanner(cp.Stdout)
		sc.Buffer(make([]byte, 64<<10), watchMaxLine)
		for sc.Scan() {
			var l watchLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				readErr <- errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher sent a line that is not JSON: %s", printable(err.Error()))
				return
			}
			select {
			case lines <- l:
			case <-execCtx.Done():
				return
			}
		}
		readErr <- sc.Err()
	})

	pid := 0
	defer func() {
		close(stopBeat)
		d.endWatcher(ctx, h, cp, pid)
		stopExec()
		_ = cp.Stdout.Close()
		_ = cp.Stderr.Close()
		wg.Wait()
	}()

	isReady := false
	for {
		var l watchLine
		select {
		case l = <-lines:
		case err := <-readErr:
			if errors.Is(err, bufio.ErrTooLong) {
				return errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher sent a line over %d bytes", watchMaxLine)
			}
			if err != nil {
				return mapErr(err, "watch")
			}
			if isReady {
				return nil // the watched path went away
			}
			return errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher ended before it was ready: %s", printable(strings.TrimSpace(stderr.String())))
		case <-ctx.Done():
			return nil
		case <-d.procCtx.Done():
			return nil
		}
		switch {
		case l.Kind == "no_python":
			why := "its image has none"
			if l.Error != "" {
				why = printable(l.Error)
			}
			return errs.E(errs.Unavailable, "file watching on Modal runs python3 (3.7 or later) inside the sandbox, and %s: add python3 to the image", why)
		case l.Error != "" || l.Kind != "":
			return watchError(l)
		case l.PID > 0:
			pid = l.PID
		case l.Ready:
			if !isReady && ready != nil {
				ready()
			}
			isReady = true
		case l.Event != "":
			// What runs as python3 is the sandbox's to choose: nothing it
			// says is taken on trust (event names become SSE event lines).
			ev := sandbox.WatchEvent{Type: l.Event, Kind: l.Type}
			var ok bool
			switch {
			case l.Event != "create" && l.Event != "write" && l.Event != "remove" && l.Event != "rename",
				l.Type != "file" && l.Type != "dir", (l.Event == "rename") != (l.From != nil):
				return errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher sent a malformed event %.200q", l.Event)
			}
			if ev.Path, ok = watchPath(root, l.Path); !ok {
				return errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher reported a path outside %s", root)
			}
			if l.From != nil {
				if ev.From, ok = watchPath(root, l.From); !ok {
					return errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher reported a path outside %s", root)
				}
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
}

// endWatcher closes the watcher's stdin (the heartbeat goroutine does, on
// stopBeat) and waits for it to exit; one that does not within killGrace
// is killed through another exec.
func (d *Driver) endWatcher(ctx context.Context, h *modalsdk.Sandbox, cp *modalsdk.ContainerProcess, pid int) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killGrace)
	defer cancel()
	if _, err := cp.Wait(wctx, nil); err == nil {
		return
	} else if pid <= 1 {
		d.log.WarnContext(ctx, "modal watch: the watcher did not exit", "error", err)
		return
	}
	kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), killGrace)
	defer kcancel()
	if _, err := d.shell(kctx, h, `kill -s KILL "$1" 2>/dev/null; exit 0`, strconv.Itoa(pid)); err != nil {
		d.log.WarnContext(ctx, "modal watch: kill the watcher", "pid", pid, "error", err)
	}
}

// printable makes a message of the watcher's fit for the client:
// printable and short, whatever the sandbox's python3 said.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > 4096+200 {
		s = strings.ToValidUTF8(s[:4096+200], "") + "..."
	}
	return s
}

func watchError(l watchLine) error {
	msg := printable(l.Error)
	if msg == "" {
		msg = "the watcher failed"
	}
	switch l.Kind {
	case "not_found":
		if l.Field != "" {
			return &errs.Error{Kind: errs.NotFound, Message: msg, Fields: []errs.FieldError{{Field: l.Field, Reason: msg}}}
		}
		return errs.E(errs.NotFound, "%s", msg)
	case "invalid":
		f := l.Field
		if f == "" {
			f = "path"
		}
		return errs.Field(f, msg)
	}
	return errs.E(errs.BadGateway, "modal: watch: the sandbox's watcher failed: %s", msg)
}

// stderrTail keeps the first n bytes written to it (safe for a
// concurrent reader) and drops the rest.
type stderrTail struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (l *stderrTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (l *stderrTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// heartbeat writes a newline to the stdin of cp (a helper script of ours:
// a watcher, a kept-log reader) every `every`, which tells it the driver
// is still there, until stop is closed; then it closes stdin, which ends
// the helper. Stdin belongs to this one goroutine. It is not waited for by
// the caller (a write stuck in the SDK must not keep it from returning;
// the helper is killed then), only by Close.
func (d *Driver) heartbeat(ctx context.Context, cp *modalsdk.ContainerProcess, every time.Duration, stop <-chan struct{}) {
	d.procWG.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if _, err := cp.Stdin.Write([]byte("\n")); err != nil {
					d.log.DebugContext(ctx, "modal helper heartbeat", "error", err)
				}
			case <-stop:
				if err := cp.Stdin.Close(); err != nil {
					d.log.DebugContext(ctx, "modal helper stdin close", "error", err)
				}
				return
			}
		}
	})
}
