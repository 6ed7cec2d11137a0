package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/teams"
)

// sandboxOps documents the sandbox, file, archive and volume routes.
var sandboxOps = []apiOp{
	{Method: "POST", Path: "/sandbox", Summary: "Create a sandbox (builds or reuses its image); answers once it runs. X-Team or ?team= creates it in a team you are an owner or member of", Request: sandbox.Spec{}, Response: createSandboxResponse{}, Storage: true, Errors: []int{409, 429},
		Example: map[string]any{"image_base": "host", "dockerfile_commands": []string{}, "volume_name": "", "s3_bucket_name": "", "s3_key_prefix": "", "init_from_s3": false, "name": "demo"}},
	{Method: "GET", Path: "/sandbox", Summary: "List your sandboxes, newest first (?limit, ?cursor, ?state, ?label=k=v); X-Team or ?team= lists a team's instead, ?shared=true those shared with you", Response: listSandboxesResponse{}},
	{Method: "GET", Path: "/sandbox/{id}", Summary: "A sandbox's status and its driver's capabilities", Response: sandboxView{}},
	{Method: "DELETE", Path: "/sandbox/{id}", Summary: "Terminate a sandbox (idempotent; snapshots the workspace first when configured); a failed or lost sandbox is marked terminated, which takes it off the active list", Response: sandbox.Sandbox{}},
	{Method: "GET", Path: "/sandbox/{id}/logs", Summary: "Build and start log (text; SSE `log`/`status` events with ?follow=true)"},
	{Method: "POST", Path: "/sandbox/{id}/exec", Summary: "Run a command: SSE `stdout`/`stderr`/`exit` events (`?format=text`: the output as plain data lines, `stdout_b64`/`stderr_b64` for bytes that are not text, answered with `X-Exec-Format: text`), binary frames with `Accept: application/vnd.techboss.exec-stream`, or one JSON answer with ?wait=true", Request: execRequest{}, Response: execWaitResponse{}, Stream: true, Frames: true, Errors: []int{409},
		Events: map[string]any{"stdout": outputChunk{}, "stderr": outputChunk{}, "exit": execExit{}, "error": errorBody{},
			"stdout_b64": "", "stderr_b64": ""},
		Example: execRequest{Command: []string{"sh", "-c", "echo hello"}, TimeoutS: 30}},
	{Method: "GET", Path: "/sandbox/{id}/files", Summary: "List a directory (?dir=, relative to /workspace or absolute)", Response: listDirResponse{}},
	{Method: "GET", Path: "/sandbox/{id}/files/*", Summary: "Download a file (raw bytes)"},
	{Method: "PUT", Path: "/sandbox/{id}/files/*", Summary: "Upload a file (raw bytes; ?mode=0644); 413 when it does not fit the sandbox's disk_mb", Response: writeFileResponse{}, Errors: []int{409, 413, 422, 507}},
	{Method: "DELETE", Path: "/sandbox/{id}/files/*", Summary: "Delete a file or empty directory (?recursive=true for a tree)", Response: writeFileResponse{}},
	{Method: "GET", Path: "/sandbox/{id}/archive", Summary: "Download a tar stream of ?path=", Response: nil},
	{Method: "PUT", Path: "/sandbox/{id}/archive", Summary: "Extract a tar stream into ?path=; 413 when it does not fit the sandbox's disk_mb", Response: writeFileResponse{}, Errors: []int{400, 409, 413, 422, 507}},
	{Method: "GET", Path: "/volumes", Summary: "List your named volumes; X-Team or ?team= lists a team's (members)", Response: listVolumesResponse{}},
	{Method: "DELETE", Path: "/volumes/{name}", Summary: "Delete a named volume and its data (409 while mounted); X-Team or ?team= deletes a team's (owners)", Response: deleteVolumeResponse{}, Errors: []int{409}},
}

// createSandboxResponse is the original design's answer to POST /sandbox.
type createSandboxResponse struct {
	SandboxID string        `json:"sandbox_id"`
	Status    sandbox.State `json:"status"`
	CreatedAt time.Time     `json:"created_at"`
}

// sandboxView is GET /sandbox/{id}: the record plus what its driver can do.
type sandboxView struct {
	*sandbox.Sandbox
	Capabilities []string `json:"capabilities"`
}

type listSandboxesResponse struct {
	Sandboxes  []*sandbox.Sandbox `json:"sandboxes"`
	NextCursor string             `json:"next_cursor,omitempty"`
}

type execRequest struct {
	Command  []string          `json:"command"`
	Env      map[string]string `json:"env,omitempty"`
	Workdir  string            `json:"workdir,omitempty"`
	TimeoutS float64           `json:"timeout_s,omitempty"`
	Stdin    *string           `json:"stdin,omitempty"`
	StdinB64 string            `json:"stdin_b64,omitempty"`
}

// outputChunk documents a `stdout`/`stderr` event's data: the bytes as
// text when they are UTF-8, else base64.
type outputChunk struct {
	Data    string `json:"data,omitempty"`
	DataB64 string `json:"data_b64,omitempty"`
}

// execExit is the final `exit` event, and the core of the ?wait=true answer.
type execExit struct {
	ExitCode   int    `json:"exit_code"`
	Signal     string `json:"signal,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	OOMKilled  bool   `json:"oom_killed"`
	TimedOut   bool   `json:"timed_out,omitempty"`
}

type execWaitResponse struct {
	execExit
	Stdout          string `json:"stdout"`
	StdoutB64       string `json:"stdout_b64,omitempty"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	Stderr          string `json:"stderr"`
	StderrB64       string `json:"stderr_b64,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated"`
}

type listDirResponse struct {
	Dir     string             `json:"dir"`
	Entries []sandbox.FileInfo `json:"entries"`
}

type writeFileResponse struct {
	Path string `json:"path"`
	Size int64  `json:"size,omitempty"`
}

type listVolumesResponse struct {
	Volumes []sandbox.Volume `json:"volumes"`
}

type deleteVolumeResponse struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

func (s *server) mountSandboxes(r chi.Router) {
	r.Post("/sandbox", s.api(s.handleCreateSandbox))
	r.Get("/sandbox", s.api(s.handleListSandboxes))
	r.Get("/sandbox/{id}", s.api(s.handleGetSandbox))
	r.Delete("/sandbox/{id}", s.api(s.handleTerminateSandbox))
	r.Get("/sandbox/{id}/logs", s.api(s.handleSandboxLogs))
	r.Post("/sandbox/{id}/exec", s.api(s.handleExec))
	r.Get("/sandbox/{id}/files", s.api(s.handleListDir))
	r.Get("/sandbox/{id}/files/*", s.api(s.handleReadFile))
	r.Put("/sandbox/{id}/files/*", s.api(s.handleWriteFile))
	r.Delete("/sandbox/{id}/files/*", s.api(s.handleRemoveFile))
	r.Get("/sandbox/{id}/archive", s.api(s.handleArchiveOut))
	r.Put("/sandbox/{id}/archive", s.api(s.handleArchiveIn))
	r.Get("/volumes", s.api(s.handleListVolumes))
	r.Delete("/volumes/{name}", s.api(s.handleDeleteVolume))
}

// sandboxes returns the Manager or a 503 when the server runs without one.
func (s *server) sandboxes() (*sandbox.Manager, error) {
	if s.deps.Sandboxes == nil {
		return nil, errs.E(errs.Unavailable, "sandboxes are not configured on this server")
	}
	return s.deps.Sandboxes, nil
}

func (s *server) handleCreateSandbox(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	var spec sandbox.Spec
	if err := decodeJSONLimit(r, &spec, s.deps.MaxJSONBody); err != nil {
		return err
	}
	if spec.Team, err = s.scopeTeam(r, teams.RoleMember); err != nil {
		return err
	}
	if spec.RegistryCredential, err = teamSecretRef(spec.Team, "registry_credential", spec.RegistryCredential); err != nil {
		return err
	}
	for i := range spec.Repos {
		if spec.Repos[i].Credential, err = teamSecretRef(spec.Team, fmt.Sprintf("repo[%d].credential", i), spec.Repos[i].Credential); err != nil {
			return err
		}
	}
	sb, err := m.Create(r.Context(), sandboxOwner(r), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, createSandboxResponse{SandboxID: sb.ID, Status: sb.State, CreatedAt: sb.CreatedAt})
}

func (s *server) handleListSandboxes(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var f sandbox.ListFilter
	var bad []errs.FieldError
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > sandbox.MaxPageSize {
			bad = append(bad, errs.FieldError{Field: "limit", Reason: fmt.Sprintf("must be an integer from 1 to %d", sandbox.MaxPageSize)})
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		c, err := sandbox.ParseCursor(v)
		if err != nil {
			bad = append(bad, errs.FieldError{Field: "cursor", Reason: "not a cursor returned by this API"})
		}
		f.After = &c
	}
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			if !sandbox.State(st).Valid() {
				bad = append(bad, errs.FieldError{Field: "state", Reason: fmt.Sprintf("unknown state %q", clip(st, 32))})
				continue
			}
			f.States = append(f.States, sandbox.State(st))
		}
	}
	for _, v := range q["label"] {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			bad = append(bad, errs.FieldError{Field: "label", Reason: "must be key=value"})
			continue
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = val
	}
	if err := errs.Fields(bad); err != nil {
		return err
	}
	if f.TeamID, err = s.scopeTeam(r, teams.RoleViewer); err != nil {
		return err
	}
	if v := q.Get("shared"); v != "" {
		if v != "true" || f.TeamID != "" {
			return errs.Field("shared", "true, without a team")
		}
		ts, err := s.teamService()
		if err != nil {
			return err
		}
		if f.IDs, err = ts.SharedWith(r.Context(), currentUser(r).ID); err != nil {
			return err
		}
		if len(f.IDs) == 0 {
			return writeJSON(w, http.StatusOK, listSandboxesResponse{Sandboxes: []*sandbox.Sandbox{}})
		}
	}
	items, next, err := m.List(r.Context(), sandboxOwner(r), f)
	if err != nil {
		return err
	}
	resp := listSandboxesResponse{Sandboxes: items}
	if resp.Sandboxes == nil {
		resp.Sandboxes = []*sandbox.Sandbox{}
	}
	if next != nil {
		resp.NextCursor = next.String()
	}
	return writeJSON(w, http.StatusOK, resp)
}

func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}

func (s *server) handleGetSandbox(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	sb, err := m.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, sandboxView{Sandbox: sb, Capabilities: m.Capabilities(sb)})
}

func (s *server) handleTerminateSandbox(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	sb, err := m.Terminate(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, sb)
}

// handleSandboxLogs answers the build log as text, or follows it as SSE
// (`log` events, then one `status` event) with ?follow=true or an
// Accept: text/event-stream header.
func (s *server) handleSandboxLogs(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	owner, id := sandboxOwner(r), chi.URLParam(r, "id")
	blog, _, err := m.BuildLog(r.Context(), owner, id)
	if err != nil {
		return err
	}
	follow := r.URL.Query().Get("follow") == "true" || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if !follow {
		data, _, _, _ := blog.Read(0)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, err := w.Write(data)
		return err
	}
	st, err := newSSE(w, r)
	if err != nil {
		return err
	}
	tick := time.NewTicker(sseHeartbeat)
	defer tick.Stop()
	var off int64
	for {
		data, next, done, wait := blog.Read(off)
		off = next
		if len(data) > 0 {
			if err := st.Event("", "log", chunkJSON(data)); err != nil {
				return err
			}
		}
		if done {
			break
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-tick.C:
			if err := st.Ping(); err != nil {
				return err
			}
		case <-wait:
		}
	}
	sb, err := m.Get(r.Context(), owner, id)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"status": string(sb.State), "reason": sb.Reason})
	return st.Event("", "status", b)
}

// chunkJSON encodes output bytes as an outputChunk.
func chunkJSON(p []byte) []byte {
	return appendChunkJSON(nil, p)
}

func (s *server) handleExec(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	var req execRequest
	if err := decodeJSONLimit(r, &req, s.deps.MaxJSONBody); err != nil {
		return err
	}
	lim := m.Limits()
	var bad []errs.FieldError
	if req.TimeoutS < 0 || req.TimeoutS != req.TimeoutS {
		bad = append(bad, errs.FieldError{Field: "timeout_s", Reason: "must not be negative"})
	} else if lim.MaxExecTimeout > 0 && req.TimeoutS > lim.MaxExecTimeout.Seconds() {
		bad = append(bad, errs.FieldError{Field: "timeout_s", Reason: fmt.Sprintf("above the server maximum %g", lim.MaxExecTimeout.Seconds())})
	}
	if req.Stdin != nil && req.StdinB64 != "" {
		bad = append(bad, errs.FieldError{Field: "stdin_b64", Reason: "give stdin or stdin_b64, not both"})
	}
	var stdin io.Reader
	switch {
	case req.Stdin != nil:
		stdin = strings.NewReader(*req.Stdin)
	case req.StdinB64 != "":
		b, err := base64.StdEncoding.DecodeString(req.StdinB64)
		if err != nil {
			bad = append(bad, errs.FieldError{Field: "stdin_b64", Reason: "not valid base64"})
		}
		stdin = strings.NewReader(string(b))
	}
	dir := ""
	if req.Workdir != "" {
		d, err := sandbox.CleanPath(req.Workdir)
		if err != nil {
			bad = append(bad, errs.FieldError{Field: "workdir", Reason: "must not contain '..', NUL bytes or invalid UTF-8"})
		}
		dir = d
	}
	if err := errs.Fields(bad); err != nil {
		return err
	}
	if err := sandbox.CheckExec(req.Command, req.Env, dir); err != nil {
		return err
	}
	owner, id := sandboxOwner(r), chi.URLParam(r, "id")
	// Check ownership and state before any response is started, so those
	// errors are ordinary JSON answers even for the streaming form.
	sb, err := m.Get(r.Context(), owner, id)
	if err != nil {
		return err
	}
	if sb.State != sandbox.Running {
		return errs.E(errs.Conflict, "sandbox is %s", sb.State)
	}

	ctx := r.Context()
	var cancel context.CancelFunc = func() {}
	if req.TimeoutS > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutS*float64(time.Second)))
	}
	defer cancel()
	ereq := sandbox.ExecRequest{Argv: req.Command, Env: req.Env, Dir: dir, Stdin: stdin}

	if r.URL.Query().Get("wait") == "true" {
		stdout := &capBuffer{max: lim.ExecOutputCap}
		stderr := &capBuffer{max: lim.ExecOutputCap}
		ereq.Stdout, ereq.Stderr = stdout, stderr
		start := time.Now()
		st, err := m.Exec(ctx, owner, id, ereq)
		exit, err := s.exitOf(r, ctx, st, err, start)
		if err != nil {
			return err
		}
		resp := execWaitResponse{execExit: exit, StdoutTruncated: stdout.truncated, StderrTruncated: stderr.truncated}
		resp.Stdout, resp.StdoutB64 = textOrB64(stdout.bytes())
		resp.Stderr, resp.StderrB64 = textOrB64(stderr.bytes())
		return writeJSON(w, http.StatusOK, resp)
	}

	frames := wantsExecFrames(r)
	textForm := !frames && r.URL.Query().Get("format") == "text"
	var st *sseStream
	if frames {
		st, err = newStream(w, execFramesType, frameHeartbeatBytes)
	} else {
		if textForm {
			// Says which form this is: a client that asks for the text
			// form of a server that does not know it gets the JSON form.
			w.Header().Set("X-Exec-Format", "text")
		}
		st, err = newSSE(w, r)
	}
	if err != nil {
		return err
	}
	hbCtx, stopHB := context.WithCancel(r.Context())
	var hb sync.WaitGroup
	hb.Go(func() { _ = st.Heartbeat(hbCtx, sseHeartbeat) })
	defer func() { stopHB(); hb.Wait() }()
	var (
		batch          *sseBatcher
		flush          func() error
		stdout, stderr io.Writer
	)
	if frames {
		batch = newSSEBatcher(st, execBatchMax, appendOutputFrame)
		stdout, stderr = &frameOutput{event: "stdout", batch: batch}, &frameOutput{event: "stderr", batch: batch}
		flush = batch.close
	} else {
		enc := appendChunkEvent
		if textForm {
			enc = appendTextEvent
		}
		batch = newSSEBatcher(st, execBatchMax, enc)
		o, e := &sseOutput{st: st, event: "stdout", batch: batch}, &sseOutput{st: st, event: "stderr", batch: batch}
		stdout, stderr = o, e
		// Anything held back waiting for the rest of a UTF-8 sequence goes
		// too.
		flush = func() error { return errors.Join(o.flush(), e.flush(), batch.close()) }
	}
	defer batch.close()
	ereq.Stdout, ereq.Stderr = stdout, stderr
	start := time.Now()
	est, err := m.Exec(ctx, owner, id, ereq)
	// Every queued output event goes before the exit event.
	if ferr := flush(); ferr != nil && err == nil {
		err = ferr
	}
	exit, err := s.exitOf(r, ctx, est, err, start)
	if err != nil {
		if r.Context().Err() != nil {
			return nil // the client left; the exec was cancelled with it
		}
		s.logger(r).WarnContext(r.Context(), "exec failed", "sandbox_id", id, "err", err)
		if frames {
			return st.write(appendFrame(nil, frameError, errorEventJSON(r, err)))
		}
		return st.Event("", "error", errorEventJSON(r, err))
	}
	b, _ := json.Marshal(exit)
	if frames {
		return st.write(appendFrame(nil, frameExit, b))
	}
	return st.Event("", "exit", b)
}

// exitOf turns an exec's result into the exit payload. A deadline from
// timeout_s is an answer (timed_out), not an error.
func (s *server) exitOf(r *http.Request, ctx context.Context, st sandbox.ExitStatus, err error, start time.Time) (execExit, error) {
	d := st.Duration
	if d == 0 {
		d = time.Since(start)
	}
	exit := execExit{ExitCode: st.Code, Signal: st.Signal, DurationMS: d.Milliseconds(), OOMKilled: st.OOMKilled}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
		exit.TimedOut = true
		if exit.Signal == "" && (err != nil || exit.ExitCode == 0) {
			exit.Signal, exit.ExitCode = "SIGKILL", 137
		}
		return exit, nil
	}
	return exit, err
}

// errorEventJSON is the payload of an `error` event: the public message,
// or "internal error" with the request ID.
func errorEventJSON(r *http.Request, err error) []byte {
	body := errorBody{RequestID: requestIDFrom(r.Context()), Code: errs.Internal.String(), Message: "internal error"}
	if e, ok := errs.Public(err); ok && e.Kind != errs.Internal {
		body.Code, body.Message = e.Kind.String(), e.Message
	}
	b, _ := json.Marshal(body)
	return b
}

func textOrB64(p []byte) (text, b64 string) {
	if utf8.Valid(p) {
		return string(p), ""
	}
	return "", base64.StdEncoding.EncodeToString(p)
}

// capBuffer keeps the first max bytes written and notes if there were more.
type capBuffer struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.max - len(c.buf)
	if room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf = append(c.buf, p[:room]...)
		}
		return len(p), nil
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// bytes returns the kept output; when truncated inside a UTF-8 sequence
// the partial rune is dropped so text output stays text.
func (c *capBuffer) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buf
	if c.truncated {
		b = b[:len(b)-incompleteTail(b)]
	}
	return b
}

// sseOutput turns an exec's output stream into SSE events. A UTF-8
// sequence split across writes is held back until it completes, so text
// output arrives as text.
type sseOutput struct {
	mu    sync.Mutex
	st    *sseStream
	event string
	carry []byte
	frame []byte      // the event being written, reused across writes
	batch *sseBatcher // when set, events go through it instead of straight to st
}

func (o *sseOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	buf := p
	if len(o.carry) > 0 {
		buf = append(o.carry, p...)
	}
	cut := len(buf) - incompleteTail(buf)
	chunk := buf[:cut]
	o.carry = append(o.carry[:0:0], buf[cut:]...)
	if len(chunk) == 0 {
		return len(p), nil
	}
	if err := o.send(chunk); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (o *sseOutput) flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.carry) == 0 {
		return nil
	}
	c := o.carry
	o.carry = nil
	return o.send(c)
}

// send writes one output event; o.mu is held.
func (o *sseOutput) send(chunk []byte) error {
	if o.batch != nil {
		return o.batch.event(o.event, chunk)
	}
	o.frame = appendChunkEvent(o.frame[:0], o.event, chunk)
	return o.st.write(o.frame)
}

// incompleteTail returns how many trailing bytes of b start a UTF-8
// sequence that is not complete yet (0 if none).
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return len(b) - i
			}
			return 0
		}
	}
	return 0
}

// filePath is the {path...} of a files route: relative to /workspace, or
// absolute when it starts with '/' (…/files//etc/hosts).
// chi matches on the escaped path when it has escapes of its own (%2F), so
// the parameter is unescaped here; CleanPath then sees any "..".
func filePath(r *http.Request) (string, error) {
	p := chi.URLParam(r, "*")
	if r.URL.RawPath == "" {
		return p, nil
	}
	u, err := url.PathUnescape(p)
	if err != nil {
		return "", errs.Field("path", "bad percent-encoding")
	}
	return u, nil
}

// liftDeadlines lets a long upload or download outlive the server's
// read/write timeouts; only these streaming routes do this.
func liftDeadlines(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

func (s *server) handleListDir(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	dir := r.URL.Query().Get("dir")
	clean, err := sandbox.CleanPath(dir)
	if err != nil {
		return errs.Field("dir", "must not contain '..', NUL bytes or invalid UTF-8")
	}
	entries, err := m.ListDir(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), clean)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []sandbox.FileInfo{}
	}
	return writeJSON(w, http.StatusOK, listDirResponse{Dir: clean, Entries: entries})
}

func (s *server) handleReadFile(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	owner, id := sandboxOwner(r), chi.URLParam(r, "id")
	p, err := filePath(r)
	if err != nil {
		return err
	}
	fi, err := m.Stat(r.Context(), owner, id, p)
	if err != nil {
		return err
	}
	switch fi.Type {
	case "file", "symlink": // a symlink is followed inside the sandbox by the driver
	case "dir":
		return errs.Field("path", "is a directory; list it with GET /sandbox/{id}/files?dir=")
	default:
		return errs.Field("path", "is not a regular file")
	}
	liftDeadlines(w)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	lw := &limitWriter{w: w, n: math.MaxInt64}
	if fi.Type == "file" {
		// The header promises fi.Size bytes: a file that grew is cut there,
		// one that shrank ends the response early (a short body).
		h.Set("Content-Length", strconv.FormatInt(fi.Size, 10))
		h.Set("X-File-Mode", fmt.Sprintf("%04o", fi.Mode.Perm()))
		if !fi.ModTime.IsZero() {
			h.Set("Last-Modified", fi.ModTime.UTC().Format(http.TimeFormat))
		}
		lw.n = fi.Size
	}
	_, err = m.ReadFile(r.Context(), owner, id, p, lw)
	switch {
	case errors.Is(err, errLimitReached):
		return nil
	case err != nil && !lw.wrote:
		// Nothing sent yet: the error becomes a JSON body of its own length.
		h.Del("Content-Length")
		h.Del("Last-Modified")
		h.Del("X-File-Mode")
	}
	return err
}

var errLimitReached = errors.New("limit reached")

type limitWriter struct {
	w     io.Writer
	n     int64
	wrote bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	l.wrote = l.wrote || len(p) > 0
	if int64(len(p)) > l.n {
		n, err := l.w.Write(p[:l.n])
		l.n -= int64(n)
		if err == nil {
			err = errLimitReached
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

func (s *server) handleWriteFile(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	var mode fs.FileMode
	if v := r.URL.Query().Get("mode"); v != "" {
		n, err := strconv.ParseUint(v, 8, 32)
		if err != nil || n > 0o777 {
			return errs.Field("mode", "must be octal permission bits, e.g. 0644")
		}
		mode = fs.FileMode(n)
	}
	owner, id := sandboxOwner(r), chi.URLParam(r, "id")
	p, err := filePath(r)
	if err != nil {
		return err
	}
	if p == "" || strings.HasSuffix(p, "/") {
		return errs.Field("path", "must name a file")
	}
	sb, err := m.Get(r.Context(), owner, id)
	if err != nil {
		return err
	}
	liftDeadlines(w)
	body := io.Reader(r.Body)
	if sb.Spec.DiskMB > 0 {
		body = http.MaxBytesReader(w, r.Body, int64(sb.Spec.DiskMB)<<20)
	}
	n, err := m.WriteFile(r.Context(), owner, id, p, mode, body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return errs.Wrap(errs.TooLarge, err, fmt.Sprintf("file exceeds the sandbox's disk_mb (%d MiB)", sb.Spec.DiskMB))
		}
		return err
	}
	clean, _ := sandbox.CleanPath(p)
	return writeJSON(w, http.StatusOK, writeFileResponse{Path: clean, Size: n})
}

func (s *server) handleRemoveFile(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	p, err := filePath(r)
	if err != nil {
		return err
	}
	clean, err := sandbox.CleanPath(p)
	if err != nil {
		return err
	}
	if clean == "/" || clean == "/workspace" {
		return errs.Field("path", "refusing to delete the root or the workspace itself")
	}
	owner, id := sandboxOwner(r), chi.URLParam(r, "id")
	if r.URL.Query().Get("recursive") != "true" {
		fi, err := m.Stat(r.Context(), owner, id, clean)
		if err != nil {
			return err
		}
		if fi.Type == "dir" {
			ents, err := m.ListDir(r.Context(), owner, id, clean)
			if err != nil {
				return err
			}
			if len(ents) > 0 {
				return errs.E(errs.Conflict, "directory is not empty; delete it with ?recursive=true")
			}
		}
	}
	if err := m.RemoveFile(r.Context(), owner, id, clean); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, writeFileResponse{Path: clean})
}

func (s *server) handleArchiveOut(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	owner, id, p := sandboxOwner(r), chi.URLParam(r, "id"), r.URL.Query().Get("path")
	// Check before the 200 is sent, so a bad path is a JSON error.
	if _, err := m.Stat(r.Context(), owner, id, p); err != nil {
		return err
	}
	liftDeadlines(w)
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	return m.ArchiveOut(r.Context(), owner, id, p, w)
}

func (s *server) handleArchiveIn(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	owner, id, p := sandboxOwner(r), chi.URLParam(r, "id"), r.URL.Query().Get("path")
	sb, err := m.Get(r.Context(), owner, id)
	if err != nil {
		return err
	}
	liftDeadlines(w)
	body := io.Reader(r.Body)
	if sb.Spec.DiskMB > 0 {
		body = http.MaxBytesReader(w, r.Body, int64(sb.Spec.DiskMB)<<20)
	}
	if err := m.ArchiveIn(r.Context(), owner, id, p, body); err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return errs.Wrap(errs.TooLarge, err, fmt.Sprintf("archive exceeds the sandbox's disk_mb (%d MiB)", sb.Spec.DiskMB))
		}
		return err
	}
	clean, _ := sandbox.CleanPath(p)
	return writeJSON(w, http.StatusOK, writeFileResponse{Path: clean})
}

func (s *server) handleListVolumes(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	team, err := s.scopeTeam(r, teams.RoleMember)
	if err != nil {
		return err
	}
	vs, err := m.ListVolumes(r.Context(), sandboxOwner(r), team)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []sandbox.Volume{}
	}
	return writeJSON(w, http.StatusOK, listVolumesResponse{Volumes: vs})
}

func (s *server) handleDeleteVolume(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	team, err := s.scopeTeam(r, teams.RoleOwner)
	if err != nil {
		return err
	}
	name := chi.URLParam(r, "name")
	if err := m.DeleteVolume(r.Context(), sandboxOwner(r), team, name); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, deleteVolumeResponse{Name: name, Deleted: true})
}
