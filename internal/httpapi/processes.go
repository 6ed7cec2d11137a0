package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/presence"
	"github.com/techbossai/techboss/internal/sandbox"
)

// processOps documents the managed processes' and file watching's routes.
var processOps = []apiOp{
	{Method: "POST", Path: "/sandbox/{id}/processes", Summary: "Start a background command (as the image's user, in /workspace unless workdir); answers 201 at once. At most 64 run at a time per sandbox (429)", Request: sandbox.ProcessSpec{}, Response: sandbox.Process{}, Errors: []int{409, 429}},
	{Method: "GET", Path: "/sandbox/{id}/processes", Summary: "Every process of the sandbox (managed: started through this API; the last 64 exited managed ones with their exit_code)", Response: processList{}},
	{Method: "GET", Path: "/sandbox/{id}/processes/{pid}/logs", Summary: "A managed process's output as SSE `stdout`/`stderr` events ({\"data\"} or {\"data_b64\"}) from the start of its last 1 MiB (`gap` {\"bytes\"} for what was overwritten), then, when it has exited, `exit` {\"exit_code\"}; ?follow=true goes on live until it exits. Each event's id is the byte offset in the process's whole output after it: Last-Event-ID (or ?after=) resumes there (a `gap` first when the ring has overwritten some of what followed)", Stream: true, Errors: []int{422}},
	{Method: "POST", Path: "/sandbox/{id}/processes/{pid}/stdin", Summary: "Write the raw body (at most 1 MiB) to a managed process's stdin; ?eof=true closes it afterwards. 409 when it has exited or does not read", Errors: []int{409, 413, 422}},
	{Method: "POST", Path: "/sandbox/{id}/processes/{pid}/signal", Summary: "Send a signal (SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGSTOP, SIGCONT, SIGWINCH, SIGALRM) to any process of the sandbox", Request: signalRequest{}},
	{Method: "GET", Path: "/sandbox/{id}/watch", Summary: "File changes under ?path= (default /workspace; ?recursive=true for the tree below) as SSE: first `ready` once the watch is in place, then `create`/`write`/`remove`/`rename` events {\"path\",\"type\":\"file|dir\",\"from\" (rename)}, `overflow` when the kernel dropped events; symbolic links are not followed; 404 naming `path` when it does not exist. Streams of the same path share one watch, which keeps its last 1024 events with ids and goes on for a minute after its last stream ends: Last-Event-ID (or ?after=) replays the events after that id, first an `overflow` when some are no longer kept or the id is of an earlier watch", Stream: true, Errors: []int{422, 429}},
}

type processList struct {
	Processes []sandbox.Process `json:"processes"`
}

type signalRequest struct {
	Signal string `json:"signal"`
}

func (s *server) mountProcesses(r chi.Router) {
	r.Post("/sandbox/{id}/processes", s.api(s.handleStartProcess))
	r.Get("/sandbox/{id}/processes", s.api(s.handleListProcesses))
	r.Get("/sandbox/{id}/processes/{pid}/logs", s.api(s.handleProcessLogs))
	r.Post("/sandbox/{id}/processes/{pid}/stdin", s.api(s.handleProcessStdin))
	r.Post("/sandbox/{id}/processes/{pid}/signal", s.api(s.handleSignalProcess))
	r.Get("/sandbox/{id}/watch", s.api(s.handleWatch))
}

func pidParam(r *http.Request) (int, error) {
	pid, err := strconv.Atoi(chi.URLParam(r, "pid"))
	if err != nil || pid <= 0 {
		return 0, errs.Field("pid", "must be a positive process id")
	}
	return pid, nil
}

func (s *server) handleStartProcess(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	var spec sandbox.ProcessSpec
	if err := decodeJSONLimit(r, &spec, s.deps.MaxJSONBody); err != nil {
		return err
	}
	p, err := m.StartProcess(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, p)
}

func (s *server) handleListProcesses(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	ps, err := m.ListProcesses(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, processList{Processes: ps})
}

// lazySSE starts the event stream on its first use, so that an error found
// before (no such process or path) is still a JSON answer; it pings the
// stream while it is open.
type lazySSE struct {
	w      http.ResponseWriter
	r      *http.Request
	st     *sseStream
	stopHB context.CancelFunc
	hb     sync.WaitGroup
}

func (l *lazySSE) start() error {
	if l.st != nil {
		return nil
	}
	st, err := newSSE(l.w, l.r)
	if err != nil {
		return err
	}
	l.st = st
	ctx, cancel := context.WithCancel(l.r.Context())
	l.stopHB = cancel
	l.hb.Go(func() { _ = st.Heartbeat(ctx, sseHeartbeat) })
	return nil
}

func (l *lazySSE) close() {
	if l.stopHB != nil {
		l.stopHB()
		l.hb.Wait()
	}
}

// finish ends the handler: before the stream started, err is the JSON
// answer; after, it becomes an `error` event (a client that left gets nothing).
func (l *lazySSE) finish(err error) error {
	if err == nil || l.st == nil {
		return err
	}
	if l.r.Context().Err() != nil {
		return nil
	}
	return l.st.Event("", "error", errorEventJSON(l.r, err))
}

func (s *server) handleProcessLogs(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	pid, err := pidParam(r)
	if err != nil {
		return err
	}
	follow := r.URL.Query().Get("follow") == "true"
	from, err := parseAfter(r) // event ids are byte offsets in the process's output
	if err != nil {
		return err
	}
	l := &lazySSE{w: w, r: r}
	defer l.close()
	var startErr error
	leave := func() {}
	defer func() { leave() }()
	ready := func() {
		if startErr = l.start(); startErr == nil && follow {
			leave = s.watching(r, chi.URLParam(r, "id"), presence.KindLogs, "")
		}
	}
	var buf []byte
	err = m.ProcessLogs(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), pid, follow, from, ready, func(o sandbox.ProcessOutput) error {
		if startErr != nil {
			return startErr
		}
		id := strconv.FormatInt(o.Offset, 10)
		switch {
		case o.Exit != nil:
			b, _ := json.Marshal(struct {
				ExitCode int `json:"exit_code"`
			}{*o.Exit})
			return l.st.Event(id, "exit", b)
		case o.Gap > 0:
			b, _ := json.Marshal(struct {
				Bytes int64 `json:"bytes"`
			}{o.Gap})
			return l.st.Event(id, "gap", b)
		default:
			buf = appendChunkJSON(buf[:0], o.Data)
			return l.st.Event(id, o.Stream, buf)
		}
	})
	if startErr != nil {
		return startErr
	}
	if err == nil && l.st == nil {
		err = l.start()
	}
	return l.finish(err)
}

func (s *server) handleProcessStdin(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	pid, err := pidParam(r)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, sandbox.MaxStdinWrite))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errs.E(errs.TooLarge, "stdin writes are limited to %d bytes each; send several", sandbox.MaxStdinWrite)
		}
		return errs.E(errs.Malformed, "read body: %v", err)
	}
	eof := r.URL.Query().Get("eof") == "true"
	if err := m.ProcessStdin(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), pid, data, eof); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleSignalProcess(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	pid, err := pidParam(r)
	if err != nil {
		return err
	}
	var req signalRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := m.SignalProcess(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), pid, req.Signal); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleWatch(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	p := q.Get("path")
	if p == "" {
		p = "/workspace"
	}
	recursive := q.Get("recursive") == "true"
	after := r.Header.Get("Last-Event-ID") // the id of the last event the client had
	if after == "" {
		after = q.Get("after")
	}
	l := &lazySSE{w: w, r: r}
	defer l.close()
	var startErr error
	leave := func() {}
	defer func() { leave() }()
	ready := func() {
		// The first event says the watch is in place: changes from now on
		// are reported.
		if startErr = l.start(); startErr == nil {
			leave = s.watching(r, chi.URLParam(r, "id"), presence.KindWatch, "")
			startErr = l.st.Event("", "ready", []byte("{}"))
		}
	}
	err = m.Watch(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), p, recursive, after, ready, func(ev sandbox.WatchEvent) error {
		if startErr != nil {
			return startErr
		}
		b, _ := json.Marshal(ev)
		return l.st.Event(ev.ID, ev.Type, b)
	})
	if startErr != nil {
		return startErr
	}
	if err == nil && l.st == nil {
		err = l.start()
	}
	return l.finish(err)
}
