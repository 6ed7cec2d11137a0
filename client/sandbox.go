package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SandboxSpec is the body of POST /sandbox. The first six fields are the
// original design's.
type SandboxSpec struct {
	ImageBase          string            `json:"image_base,omitempty"`
	DockerfileCommands []string          `json:"dockerfile_commands,omitempty"`
	VolumeName         string            `json:"volume_name,omitempty"`
	S3BucketName       string            `json:"s3_bucket_name,omitempty"`
	S3KeyPrefix        string            `json:"s3_key_prefix,omitempty"`
	InitFromS3         bool              `json:"init_from_s3,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	CPU                float64           `json:"cpu,omitempty"`
	MemoryMB           int               `json:"memory_mb,omitempty"`
	PidsLimit          int               `json:"pids_limit,omitempty"`
	DiskMB             int               `json:"disk_mb,omitempty"`
	// Network is "none" (the default), "full", or NetworkAllow(...) for an
	// egress allow-list.
	Network      any               `json:"network,omitempty"`
	IdleTimeoutS int               `json:"idle_timeout_s,omitempty"`
	MaxLifetimeS int               `json:"max_lifetime_s,omitempty"`
	Name         string            `json:"name,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	FromSnapshot string            `json:"from_snapshot,omitempty"`
	GPU          string            `json:"gpu,omitempty"`
	// Repo are repositories cloned at create (client/git.go).
	Repo []GitRepo `json:"repo,omitempty"`
}

// CreatedSandbox is the answer to POST /sandbox.
type CreatedSandbox struct {
	SandboxID string    `json:"sandbox_id"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

// Sandbox is a sandbox's record (env values are redacted by the server).
type Sandbox struct {
	ID           string      `json:"sandbox_id"`
	OwnerID      string      `json:"owner_id"`
	TeamID       string      `json:"team_id,omitempty"`
	Spec         SandboxSpec `json:"spec"`
	Status       string      `json:"status"`
	Reason       string      `json:"reason,omitempty"`
	Driver       string      `json:"driver"`
	CreatedAt    time.Time   `json:"created_at"`
	UpdatedAt    time.Time   `json:"updated_at"`
	LastActiveAt time.Time   `json:"last_active_at"`
	TerminatedAt *time.Time  `json:"terminated_at,omitempty"`
}

// SandboxPage is one page of GET /sandbox.
type SandboxPage struct {
	Sandboxes  []Sandbox `json:"sandboxes"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// ListSandboxesOptions filters and pages GET /sandbox.
type ListSandboxesOptions struct {
	Limit  int
	Cursor string
	States []string
	Labels map[string]string
	// Team lists a team's sandboxes; Shared those shared with the caller.
	Team   string
	Shared bool
}

// CreateSandbox creates a sandbox and returns once it runs.
func (c *Client) CreateSandbox(ctx context.Context, spec SandboxSpec) (*CreatedSandbox, error) {
	var out CreatedSandbox
	if err := c.Do(ctx, "POST", "/sandbox", spec, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetSandbox returns one of your sandboxes.
func (c *Client) GetSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var out Sandbox
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSandboxes returns a page of your sandboxes, newest first.
func (c *Client) ListSandboxes(ctx context.Context, o ListSandboxesOptions) (*SandboxPage, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	for _, s := range o.States {
		q.Add("state", s)
	}
	for k, v := range o.Labels {
		q.Add("label", k+"="+v)
	}
	if o.Team != "" {
		q.Set("team", o.Team)
	}
	if o.Shared {
		q.Set("shared", "true")
	}
	path := "/sandbox"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out SandboxPage
	if err := c.Do(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TerminateSandbox terminates a sandbox (idempotent).
func (c *Client) TerminateSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var out Sandbox
	if err := c.Do(ctx, "DELETE", "/sandbox/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SandboxLogs returns a sandbox's build and start log.
func (c *Client) SandboxLogs(ctx context.Context, id string) (string, error) {
	res, err := c.Request(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/logs", nil, nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// ExecRequest is one command to run in a sandbox.
type ExecRequest struct {
	Command  []string          `json:"command"`
	Env      map[string]string `json:"env,omitempty"`
	Workdir  string            `json:"workdir,omitempty"`
	TimeoutS float64           `json:"timeout_s,omitempty"`
	Stdin    *string           `json:"stdin,omitempty"`
	StdinB64 string            `json:"stdin_b64,omitempty"`
}

// ExecExit is how a command ended.
type ExecExit struct {
	ExitCode   int    `json:"exit_code"`
	Signal     string `json:"signal,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	OOMKilled  bool   `json:"oom_killed"`
	TimedOut   bool   `json:"timed_out,omitempty"`
}

// ExecResult is the answer of a waited exec; output is capped by the server.
type ExecResult struct {
	ExecExit
	Stdout          []byte
	Stderr          []byte
	StdoutTruncated bool
	StderrTruncated bool
}

// Exec runs a command and waits for its whole (capped) output.
func (c *Client) Exec(ctx context.Context, id string, req ExecRequest) (*ExecResult, error) {
	var raw struct {
		ExecExit
		Stdout          string `json:"stdout"`
		StdoutB64       string `json:"stdout_b64"`
		StdoutTruncated bool   `json:"stdout_truncated"`
		Stderr          string `json:"stderr"`
		StderrB64       string `json:"stderr_b64"`
		StderrTruncated bool   `json:"stderr_truncated"`
	}
	if err := c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(id)+"/exec?wait=true", req, &raw); err != nil {
		return nil, err
	}
	out := &ExecResult{ExecExit: raw.ExecExit, StdoutTruncated: raw.StdoutTruncated, StderrTruncated: raw.StderrTruncated}
	var err error
	if out.Stdout, err = textOrB64(raw.Stdout, raw.StdoutB64); err != nil {
		return nil, err
	}
	if out.Stderr, err = textOrB64(raw.Stderr, raw.StderrB64); err != nil {
		return nil, err
	}
	return out, nil
}

func textOrB64(text, b64 string) ([]byte, error) {
	if b64 == "" {
		return []byte(text), nil
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("decode output: %w", err)
	}
	return b, nil
}

// ExecStream runs a command and copies its output to stdout and stderr
// (either may be nil) as it arrives. A command that ran returns its exit
// with a nil error whatever its exit code. The output travels as binary
// frames (see ExecFramesType); a server that answers with SSE instead is
// understood too.
func (c *Client) ExecStream(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer) (*ExecExit, error) {
	return c.execStream(ctx, id, req, stdout, stderr, ExecFramesType+", text/event-stream;q=0.5")
}

// ExecFramesType is the media type of an exec's binary stream: frames of
// an 8-byte header (kind: 0 heartbeat, 1 stdout, 2 stderr, 3 exit JSON, 4
// error JSON; 3 zero bytes; payload length as a big-endian uint32) and the
// payload.
const ExecFramesType = "application/vnd.techboss.exec-stream"

func (c *Client) execStream(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer, accept string) (*ExecExit, error) {
	return c.execStreamQuery(ctx, id, req, stdout, stderr, accept, "?format=text")
}

// execStreamQuery is execStream with the exec URL's query given (tests
// leave out format=text to read the JSON form as an older server sends
// it).
func (c *Client) execStreamQuery(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer, accept, query string) (*ExecExit, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {accept}}
	// SSE comes in the text form (?format=text: output as plain data
	// lines) from a server that has it, which says so in X-Exec-Format;
	// an older server ignores the parameter and sends the JSON form.
	res, err := c.Request(ctx, "POST", "/sandbox/"+url.PathEscape(id)+"/exec"+query, bytes.NewReader(b), hdr)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), ExecFramesType) {
		return readExecFrames(res, stdout, stderr)
	}
	text := res.Header.Get("X-Exec-Format") == "text"
	var (
		exit *ExecExit
		buf  []byte // decoded base64
	)
	err = readEvents(res.Body, func(event string, data []byte) error {
		switch event {
		case "stdout", "stderr", "stdout_b64", "stderr_b64":
			w := stdout
			if strings.HasPrefix(event, "stderr") {
				w = stderr
			}
			var p []byte
			switch {
			case strings.HasSuffix(event, "_b64"):
				buf = slices.Grow(buf[:0], base64.StdEncoding.DecodedLen(len(data)))[:base64.StdEncoding.DecodedLen(len(data))]
				n, err := base64.StdEncoding.Decode(buf, data)
				if err != nil {
					return fmt.Errorf("decode %s event: %w", event, err)
				}
				p = buf[:n]
			case text:
				p = data
			default:
				var ch struct {
					Data    *string `json:"data"`
					DataB64 string  `json:"data_b64"`
				}
				if err := json.Unmarshal(data, &ch); err != nil {
					return fmt.Errorf("decode %s event: %w", event, err)
				}
				var s string
				if ch.Data != nil {
					s = *ch.Data
				}
				if p, err = textOrB64(s, ch.DataB64); err != nil {
					return err
				}
			}
			if w != nil && len(p) > 0 {
				if _, err := w.Write(p); err != nil {
					return err
				}
			}
		case "exit":
			exit = &ExecExit{}
			if err := json.Unmarshal(data, exit); err != nil {
				return fmt.Errorf("decode exit event: %w", err)
			}
		case "error":
			e := &Error{StatusCode: res.StatusCode}
			_ = json.Unmarshal(data, e)
			return e
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if exit == nil {
		return nil, errors.New("exec stream ended without an exit event")
	}
	return exit, nil
}

// readExecFrames reads an ExecFramesType stream to its exit or error frame.
func readExecFrames(res *http.Response, stdout, stderr io.Writer) (*ExecExit, error) {
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(res.Body, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("exec stream ended without an exit frame")
			}
			return nil, fmt.Errorf("read exec stream: %w", err)
		}
		kind, n := hdr[0], int64(binary.BigEndian.Uint32(hdr[4:]))
		switch kind {
		case 1, 2:
			w := stdout
			if kind == 2 {
				w = stderr
			}
			if w == nil {
				w = io.Discard
			}
			if _, err := io.CopyN(w, res.Body, n); err != nil {
				return nil, fmt.Errorf("exec output: %w", err)
			}
		case 3, 4:
			if n > 1<<20 {
				return nil, fmt.Errorf("exec stream: a %d-byte frame of kind %d", n, kind)
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(res.Body, p); err != nil {
				return nil, fmt.Errorf("read exec stream: %w", err)
			}
			if kind == 4 {
				e := &Error{StatusCode: res.StatusCode}
				_ = json.Unmarshal(p, e)
				return nil, e
			}
			exit := &ExecExit{}
			if err := json.Unmarshal(p, exit); err != nil {
				return nil, fmt.Errorf("decode exit frame: %w", err)
			}
			return exit, nil
		default: // heartbeats, and kinds this client does not know
			if _, err := io.CopyN(io.Discard, res.Body, n); err != nil {
				return nil, fmt.Errorf("read exec stream: %w", err)
			}
		}
	}
}

// maxEventLine bounds one line of an event stream (and so what a server
// can make the client hold).
const maxEventLine = 8 << 20

// readEvents parses a text/event-stream, calling fn for each event. data
// is valid only until fn returns (its buffer is reused).
func readEvents(r io.Reader, fn func(event string, data []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		event string
		data  []byte
		has   bool
		long  []byte // a line longer than br's buffer
	)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(long) > maxEventLine {
					return fmt.Errorf("read event stream: a line of over %d bytes", maxEventLine)
				}
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			// A last line without its newline ends no event.
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read event stream: %w", err)
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			if has || event != "" {
				if err := fn(event, data); err != nil {
					return err
				}
			}
			event, data, has = "", data[:0], false
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if has {
				data = append(data, '\n')
			}
			data = append(data, value...)
			has = true
		}
	}
}

// filesPath builds /sandbox/{id}/files/{path}: a relative path is under
// /workspace, an absolute one is taken as is.
func filesPath(id, p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/sandbox/" + url.PathEscape(id) + "/files/" + strings.Join(segs, "/")
}

// FileInfo describes one directory entry.
type FileInfo struct {
	Name    string      `json:"name"`
	Type    string      `json:"type"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mtime"`
	Target  string      `json:"target,omitempty"`
}

// ReadFile copies a sandbox file to w.
func (c *Client) ReadFile(ctx context.Context, id, path string, w io.Writer) (int64, error) {
	res, err := c.Request(ctx, "GET", filesPath(id, path), nil, nil)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	return io.Copy(w, res.Body)
}

// WriteFile streams r into a sandbox file (mode 0 = the server default).
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) (int64, error) {
	p := filesPath(id, path)
	if mode != 0 {
		p += "?mode=" + strconv.FormatUint(uint64(mode.Perm()), 8)
	}
	res, err := c.Request(ctx, "PUT", p, r, http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var env struct {
		Data struct {
			Size int64 `json:"size"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&env); err != nil {
		return 0, fmt.Errorf("decode write answer: %w", err)
	}
	return env.Data.Size, nil
}

// RemoveFile deletes a sandbox file or directory.
func (c *Client) RemoveFile(ctx context.Context, id, path string) error {
	return c.Do(ctx, "DELETE", filesPath(id, path), nil, nil)
}

// ListDir lists a sandbox directory.
func (c *Client) ListDir(ctx context.Context, id, dir string) ([]FileInfo, error) {
	var out struct {
		Entries []FileInfo `json:"entries"`
	}
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/files?dir="+url.QueryEscape(dir), nil, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// ArchiveOut returns a tar stream of path in the sandbox; the caller closes it.
func (c *Client) ArchiveOut(ctx context.Context, id, path string) (io.ReadCloser, error) {
	res, err := c.Request(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/archive?path="+url.QueryEscape(path), nil, nil)
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}

// ArchiveIn extracts the tar stream r into path in the sandbox.
func (c *Client) ArchiveIn(ctx context.Context, id, path string, r io.Reader) error {
	res, err := c.Request(ctx, "PUT", "/sandbox/"+url.PathEscape(id)+"/archive?path="+url.QueryEscape(path), r, http.Header{"Content-Type": {"application/x-tar"}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.Body.Close()
}

// Volume is a named persistent workspace.
type Volume struct {
	Name      string    `json:"name"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	InUse     bool      `json:"in_use"`
}

// ListVolumes lists your named volumes.
func (c *Client) ListVolumes(ctx context.Context) ([]Volume, error) {
	var out struct {
		Volumes []Volume `json:"volumes"`
	}
	if err := c.Do(ctx, "GET", "/volumes", nil, &out); err != nil {
		return nil, err
	}
	return out.Volumes, nil
}

// DeleteVolume deletes a named volume and its data (409 while mounted).
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/volumes/"+url.PathEscape(name), nil, nil)
}

// NetworkAllow is a CreateSandbox network that reaches only the listed host
// names and CIDRs (each with an optional :port).
func NetworkAllow(entries ...string) any {
	return map[string][]string{"allow": entries}
}
