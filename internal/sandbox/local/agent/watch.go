package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The watch op streams file changes under a path of the sandbox, read
// from inotify inside the sandbox, as JSON lines of WatchLine until the
// driver hangs up (or the watched path goes away: then a last remove).
//
//	watch WatchArgs -> {"ready":true} then {"event":"create","path":..,"type":"file"}...
//
// Paths are as the sandbox sees them. Symbolic links are never followed:
// the path itself must not go through one, and a recursive watch does not
// descend into linked directories.

// Limits of watches.
const (
	// MaxWatchDirs bounds the directories one recursive watch follows.
	MaxWatchDirs = 4096
	// MaxWatches bounds the watch streams open at once in a sandbox.
	MaxWatches = 32
	// watchCoalesce is how long writes to one file are gathered into one
	// write event.
	watchCoalesce = 100 * time.Millisecond
)

// WatchArgs are the watch op's arguments.
type WatchArgs struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// WatchLine is one reply line of the watch op.
type WatchLine struct {
	Ready bool `json:"ready,omitempty"`
	// Event is "create", "write", "remove", "rename" or "overflow" (the
	// kernel dropped events: rescan what matters).
	Event string `json:"event,omitempty"`
	Path  string `json:"path,omitempty"`
	Type  string `json:"type,omitempty"` // "file" | "dir"
	From  string `json:"from,omitempty"` // rename: the old path
	// Error and Kind report a failure (Kind as in ProcLine), also one that
	// ends a stream (too many directories).
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
	Field string `json:"field,omitempty"`
}

func init() { RegisterOp("watch", watchOp) }

var watchCount = struct {
	sync.Mutex
	n int
}{}

const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// watcher is one watch stream's inotify instance.
type watcher struct {
	f         *os.File // the inotify fd, in the runtime's poller
	fd        int
	recursive bool
	root      string
	rootDir   bool
	dirs      map[int]string // watch descriptor -> path
	byPath    map[string]int
	out       chan<- WatchLine
}

func watchErr(enc *json.Encoder, kind, field, msg string) error {
	return enc.Encode(WatchLine{Error: msg, Kind: kind, Field: field})
}

func watchOp(ctx context.Context, c *Call) error {
	var a WatchArgs
	if err := json.Unmarshal(c.Req.Args, &a); err != nil || !strings.HasPrefix(a.Path, "/") {
		return watchErr(c.Enc, "invalid", "path", "must be an absolute path")
	}
	root := path.Clean(a.Path)
	// No symbolic link anywhere on the way (RESOLVE_NO_SYMLINKS).
	fd, err := unix.Openat2(unix.AT_FDCWD, root, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			return watchErr(c.Enc, "not_found", "path", root+" does not exist")
		case errors.Is(err, unix.ELOOP):
			return watchErr(c.Enc, "invalid", "path", root+" is or goes through a symbolic link; watch the path it points to")
		default:
			return watchErr(c.Enc, "invalid", "path", err.Error())
		}
	}
	var st unix.Stat_t
	serr := unix.Fstat(fd, &st)
	_ = unix.Close(fd)
	if serr != nil {
		return watchErr(c.Enc, "invalid", "path", serr.Error())
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR

	watchCount.Lock()
	if watchCount.n >= MaxWatches {
		watchCount.Unlock()
		return watchErr(c.Enc, "too_many", "", "the sandbox has as many open watches as allowed; close one first")
	}
	watchCount.n++
	watchCount.Unlock()
	defer func() {
		watchCount.Lock()
		watchCount.n--
		watchCount.Unlock()
	}()

	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return watchErr(c.Enc, "", "", "inotify: "+err.Error())
	}
	w := &watcher{
		f: os.NewFile(uintptr(ifd), "inotify"), fd: ifd, recursive: a.Recursive && isDir, root: root, rootDir: isDir,
		dirs: map[int]string{}, byPath: map[string]int{},
	}
	defer w.f.Close()
	if err := w.add(root, nil); err != nil {
		return watchErr(c.Enc, watchKind(err), "path", err.Error())
	}
	if err := c.Enc.Encode(WatchLine{Ready: true}); err != nil {
		return err
	}

	gone := hangup(c)
	defer func() {
		_ = c.Conn.Close()
		<-gone
	}()
	events := make(chan WatchLine, 256)
	readDone := make(chan error, 1)
	w.out = events
	go func() {
		defer close(events)
		readDone <- w.read()
	}()
	stop := func() {
		_ = w.f.SetReadDeadline(time.Unix(1, 0))
		for range events {
		}
	}
	// Writes to a file within watchCoalesce become one write event, sent
	// when the window ends or before any other event (so a write is never
	// reported after the file's removal).
	pending := map[string]string{} // path -> type
	var order []string
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	flush := func() error {
		for _, p := range order {
			if err := c.Enc.Encode(WatchLine{Event: "write", Path: p, Type: pending[p]}); err != nil {
				return err
			}
		}
		clear(pending)
		order = order[:0]
		return nil
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				err := <-readDone
				if ferr := flush(); ferr != nil {
					return ferr
				}
				if err != nil {
					return watchErr(c.Enc, watchKind(err), "path", err.Error())
				}
				return nil
			}
			if ev.Event == "write" {
				if _, ok := pending[ev.Path]; !ok {
					if len(order) == 0 {
						timer.Reset(watchCoalesce)
					}
					pending[ev.Path] = ev.Type
					order = append(order, ev.Path)
				}
				continue
			}
			if err := flush(); err != nil {
				stop()
				return err
			}
			if err := c.Enc.Encode(ev); err != nil {
				stop()
				return err
			}
		case <-timer.C:
			if err := flush(); err != nil {
				stop()
				return err
			}
		case <-gone:
			stop()
			return nil
		case <-ctx.Done():
			stop()
			return nil
		}
	}
}

// errTooManyDirs ends a recursive watch whose tree outgrew MaxWatchDirs.
var errTooManyDirs = errors.New("the watched tree has more than 4096 directories; watch a smaller subtree, or without recursive")

func watchKind(err error) string {
	switch {
	case errors.Is(err, errTooManyDirs):
		return "invalid"
	case errors.Is(err, unix.ENOENT):
		return "not_found"
	case errors.Is(err, unix.ENOSPC):
		return "too_many"
	}
	return ""
}

// add watches dir (and, for a recursive watch, every directory below it
// that is not a symbolic link). With created non-nil, the entries found
// below dir are reported as created: a new directory's contents may have
// appeared before its watch.
func (w *watcher) add(dir string, created func(p, typ string)) error {
	if _, ok := w.byPath[dir]; ok {
		return nil
	}
	if len(w.dirs) >= MaxWatchDirs {
		return errTooManyDirs
	}
	wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return errors.New("the kernel's inotify watch limit is reached; watch a smaller subtree")
		}
		if dir != w.root && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) {
			return nil // gone meanwhile
		}
		return err
	}
	w.dirs[wd] = dir
	w.byPath[dir] = wd
	if !w.recursive {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil // gone meanwhile, or unreadable: its own events still come
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		if e.IsDir() { // DirEntry does not follow links
			if created != nil {
				created(p, "dir")
			}
			if err := w.add(p, created); err != nil {
				return err
			}
		} else if created != nil {
			created(p, "file")
		}
	}
	return nil
}

// read turns inotify events into lines on w.out until the root goes away,
// the deadline is set (stop) or a recursive watch outgrows its limit.
func (w *watcher) read() error {
	buf := make([]byte, 64<<10)
	moved := map[uint32]WatchLine{} // IN_MOVED_FROM by cookie, awaiting its IN_MOVED_TO
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = strings.TrimRight(string(raw), "\x00")
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.out <- WatchLine{Event: "overflow"}
				continue
			}
			dir, ok := w.dirs[int(ev.Wd)]
			if !ok {
				continue
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				delete(w.dirs, int(ev.Wd))
				delete(w.byPath, dir)
				if dir == w.root {
					return nil // the watched path is gone
				}
				continue
			}
			p := dir
			if name != "" {
				p = path.Join(dir, name)
			}
			typ := "file"
			if ev.Mask&unix.IN_ISDIR != 0 {
				typ = "dir"
			}
			switch {
			case ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0:
				if dir == w.root {
					w.out <- WatchLine{Event: "remove", Path: p, Type: w.rootType()}
					return nil
				}
				// A subdirectory: its parent reports it.
			case ev.Mask&unix.IN_CREATE != 0:
				// A new directory is watched before its create goes out, so
				// whoever reacts to it sees what follows inside.
				var found []WatchLine
				var err error
				if typ == "dir" && w.recursive {
					err = w.add(p, func(q, t string) { found = append(found, WatchLine{Event: "create", Path: q, Type: t}) })
				}
				w.out <- WatchLine{Event: "create", Path: p, Type: typ}
				for _, l := range found {
					w.out <- l
				}
				if err != nil {
					return err
				}
			case ev.Mask&(unix.IN_MODIFY|unix.IN_CLOSE_WRITE) != 0:
				w.out <- WatchLine{Event: "write", Path: p, Type: typ}
			case ev.Mask&unix.IN_DELETE != 0:
				w.out <- WatchLine{Event: "remove", Path: p, Type: typ}
			case ev.Mask&unix.IN_MOVED_FROM != 0:
				moved[ev.Cookie] = WatchLine{Event: "remove", Path: p, Type: typ}
				w.forget(p)
			case ev.Mask&unix.IN_MOVED_TO != 0:
				if from, ok := moved[ev.Cookie]; ok {
					delete(moved, ev.Cookie)
					w.out <- WatchLine{Event: "rename", Path: p, From: from.Path, Type: typ}
				} else {
					w.out <- WatchLine{Event: "create", Path: p, Type: typ}
				}
				if typ == "dir" && w.recursive {
					if err := w.add(p, nil); err != nil {
						return err
					}
				}
			}
		}
		// A move out of the tree has no IN_MOVED_TO here: a removal. The
		// kernel queues both halves of a move together, so one read holds both.
		for k, ev := range moved {
			w.out <- ev
			delete(moved, k)
		}
	}
}

func (w *watcher) rootType() string {
	if w.rootDir {
		return "dir"
	}
	return "file"
}

// forget drops the watches of a directory moved away and of those below
// it (their paths are stale; a move back in adds them again).
func (w *watcher) forget(dir string) {
	for p, wd := range w.byPath {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
			delete(w.byPath, p)
			delete(w.dirs, wd)
		}
	}
}
