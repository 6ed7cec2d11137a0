// Package agent is the in-sandbox side of the local driver and the wire
// protocol between the two. The agent runs as the sandbox's long-lived
// process (under bubblewrap's PID 1) and starts every exec'd command on the
// driver's behalf: the driver passes the command's stdin/stdout/stderr pipe
// ends over a Unix socket (SCM_RIGHTS), so output flows straight from the
// command to the driver, never through the agent.
//
// Wire format on one stream connection per request:
//
//	driver -> agent: 4-byte big-endian length + JSON Request (with the
//	                 stdio fds attached to the first bytes)
//	agent -> driver: JSON lines: Started, then Exit (or one Error)
//	driver -> agent: JSON lines: Control (signals) until it has Exit
//
// Closing the connection before the Exit line kills the command and every
// process it started, also those in process groups or sessions of their
// own (see killTree): an exec never outlives the caller that waits for it.
package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxRequest bounds one request frame (argv + env).
const MaxRequest = 4 << 20

// Init is what the driver writes to the agent's fd 6 at start (then EOF).
type Init struct {
	// Env is the sandbox's base environment; an exec's Env overrides it.
	Env []string `json:"env"`
}

// Request is one driver request.
type Request struct {
	Op   string   `json:"op"` // "exec" | "ping" | "warm" (make the spare threads now)
	Argv []string `json:"argv,omitempty"`
	Env  []string `json:"env,omitempty"` // overrides of the base environment
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
	// Fds says which of stdin, stdout, stderr (in that order) are attached;
	// missing ones are /dev/null inside the sandbox.
	Fds [3]bool `json:"fds"`
	// Args are the parameters of an op registered with RegisterOp, in the
	// op's own JSON shape.
	Args json.RawMessage `json:"args,omitempty"`
}

// Reply is one line from the agent.
type Reply struct {
	// Pid is set on the first line: the started command (exec) or the agent (ping).
	Pid int `json:"pid,omitempty"`
	// Exited is set on the final line of an exec.
	Exited bool `json:"exited,omitempty"`
	Code   int  `json:"code,omitempty"`
	Signal int  `json:"signal,omitempty"`
	// Error reports a command that could not start (Code 126 or 127).
	Error string `json:"error,omitempty"`
	// Errno is the system error behind Error, when there is one: EAGAIN
	// means the sandbox's process limit refused the new process.
	Errno int `json:"errno,omitempty"`
}

// Control is one line from the driver to a running exec.
type Control struct {
	Signal int  `json:"signal,omitempty"` // deliver to the command's process; once it exits, what it left running is killed
	Kill   bool `json:"kill,omitempty"`   // SIGKILL the command and everything it started (see killTree)
}

// EncodeRequest frames r.
func EncodeRequest(r Request) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if len(b) > MaxRequest {
		return nil, errors.New("request too large")
	}
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	copy(out[4:], b)
	return out, nil
}

// DecodeRequest parses one frame whose first bytes are in first and the
// rest (if any) is read from r.
func DecodeRequest(first []byte, r io.Reader) (Request, error) {
	var req Request
	buf := first
	for len(buf) < 4 {
		tmp := make([]byte, 4-len(buf))
		n, err := r.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			return req, fmt.Errorf("read request header: %w", err)
		}
	}
	n := binary.BigEndian.Uint32(buf)
	if n > MaxRequest {
		return req, fmt.Errorf("request of %d bytes too large", n)
	}
	body := buf[4:]
	if uint32(len(body)) > n {
		return req, errors.New("trailing bytes after request")
	}
	if rest := int(n) - len(body); rest > 0 {
		more := make([]byte, rest)
		if _, err := io.ReadFull(r, more); err != nil {
			return req, fmt.Errorf("read request body: %w", err)
		}
		body = append(body, more...)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, fmt.Errorf("decode request: %w", err)
	}
	return req, nil
}
