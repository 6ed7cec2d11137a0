package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ProcessSpec is a background command to start in a sandbox.
type ProcessSpec struct {
	Name    string            `json:"name,omitempty"`
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"` // default /workspace
}

// Process is one process of a sandbox.
type Process struct {
	PID       int       `json:"pid"`
	PPID      int       `json:"ppid"`
	Name      string    `json:"name"`
	Command   []string  `json:"command"`
	State     string    `json:"state"` // "running" | "exited"
	StartedAt time.Time `json:"started_at"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	// Managed is true for processes started through StartProcess.
	Managed bool `json:"managed"`
}

func processesPath(id string) string { return "/sandbox/" + url.PathEscape(id) + "/processes" }

// StartProcess starts a background command; it returns once it runs.
func (c *Client) StartProcess(ctx context.Context, id string, spec ProcessSpec) (*Process, error) {
	var p Process
	if err := c.Do(ctx, "POST", processesPath(id), spec, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Processes lists every process of a sandbox.
func (c *Client) Processes(ctx context.Context, id string) ([]Process, error) {
	var out struct {
		Processes []Process `json:"processes"`
	}
	if err := c.Do(ctx, "GET", processesPath(id), nil, &out); err != nil {
		return nil, err
	}
	return out.Processes, nil
}

// ProcessLogs copies a managed process's output (from the start of what
// the server keeps) to stdout and stderr; with follow it waits for more
// until the process exits. It returns the exit code when the process has
// exited (nil otherwise) and the bytes the server's bounded log dropped
// before they could be read.
func (c *Client) ProcessLogs(ctx context.Context, id string, pid int, follow bool, stdout, stderr io.Writer) (exitCode *int, dropped int64, err error) {
	path := processesPath(id) + "/" + strconv.Itoa(pid) + "/logs"
	if follow {
		path += "?follow=true"
	}
	res, err := c.Request(ctx, "GET", path, nil, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	err = readEvents(res.Body, func(event string, data []byte) error {
		switch event {
		case "stdout", "stderr":
			w := stdout
			if event == "stderr" {
				w = stderr
			}
			var ch struct {
				Data    *string `json:"data"`
				DataB64 string  `json:"data_b64"`
			}
			if err := json.Unmarshal(data, &ch); err != nil {
				return fmt.Errorf("decode %s event: %w", event, err)
			}
			var text string
			if ch.Data != nil {
				text = *ch.Data
			}
			p, err := textOrB64(text, ch.DataB64)
			if err != nil {
				return err
			}
			if w != nil {
				_, err = w.Write(p)
			}
			return err
		case "gap":
			var g struct {
				Bytes int64 `json:"bytes"`
			}
			_ = json.Unmarshal(data, &g)
			dropped += g.Bytes
		case "exit":
			var e struct {
				ExitCode int `json:"exit_code"`
			}
			if err := json.Unmarshal(data, &e); err != nil {
				return fmt.Errorf("decode exit event: %w", err)
			}
			exitCode = &e.ExitCode
		case "error":
			e := &Error{StatusCode: res.StatusCode}
			_ = json.Unmarshal(data, e)
			return e
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		err = nil // the caller stopped following
	}
	return exitCode, dropped, err
}

// ProcessStdin writes data (at most 1 MiB per call) to a managed process's
// stdin; eof closes its stdin afterwards.
func (c *Client) ProcessStdin(ctx context.Context, id string, pid int, data []byte, eof bool) error {
	path := processesPath(id) + "/" + strconv.Itoa(pid) + "/stdin"
	if eof {
		path += "?eof=true"
	}
	res, err := c.Request(ctx, "POST", path, bytes.NewReader(data), http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.Body.Close()
}

// Signal sends a signal ("SIGTERM", "SIGKILL", "SIGINT", ...) to any
// process of a sandbox.
func (c *Client) Signal(ctx context.Context, id string, pid int, signal string) error {
	return c.Do(ctx, "POST", processesPath(id)+"/"+strconv.Itoa(pid)+"/signal", map[string]string{"signal": signal}, nil)
}

// WatchEvent is one file change: Type "create", "write", "remove",
// "rename" (From is the old path) or "overflow" (the server lost events:
// rescan); Kind is "file" or "dir". The first event is "ready" (no path):
// from then on, changes are reported.
type WatchEvent struct {
	Type string `json:"-"`
	Path string `json:"path"`
	Kind string `json:"type"`
	From string `json:"from,omitempty"`
}

// Watch calls fn for every change under path in a sandbox (below it too
// when recursive) until ctx is done (it then returns nil), fn fails, or
// the path goes away. It returns once the stream ends.
func (c *Client) Watch(ctx context.Context, id, path string, recursive bool, fn func(WatchEvent) error) error {
	q := url.Values{"path": {path}}
	if recursive {
		q.Set("recursive", "true")
	}
	res, err := c.Request(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/watch?"+q.Encode(), nil, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		return err
	}
	defer res.Body.Close()
	err = readEvents(res.Body, func(event string, data []byte) error {
		if event == "error" {
			e := &Error{StatusCode: res.StatusCode}
			_ = json.Unmarshal(data, e)
			return e
		}
		ev := WatchEvent{Type: event}
		if err := json.Unmarshal(data, &ev); err != nil {
			return fmt.Errorf("decode %s event: %w", event, err)
		}
		return fn(ev)
	})
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}
