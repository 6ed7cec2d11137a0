package httpapi

import (
	"encoding/binary"
	"mime"
	"net/http"
	"strings"
)

// execFramesType is the binary form of an exec's stream, for programs
// (the Go client, CLIs) rather than browsers: asked for with this Accept,
// POST /sandbox/{id}/exec answers a sequence of frames, each an 8-byte
// header — kind (1 byte), 3 zero bytes, payload length (uint32, big
// endian) — and the payload. Output bytes travel as they are: no JSON
// escaping, no base64 (SSE, being text, needs one or the other).
//
// Kinds: 1 stdout bytes, 2 stderr bytes, 3 exit (the exit JSON of the SSE
// form's exit event), 4 error (the JSON of an error event), 0 heartbeat
// (empty, every 15 s). The stream ends after the exit or error frame.
const execFramesType = "application/vnd.techboss.exec-stream"

// Frame kinds of execFramesType.
const (
	frameHeartbeat byte = iota
	frameStdout
	frameStderr
	frameExit
	frameError
)

// frameHeartbeatBytes is a whole heartbeat frame.
var frameHeartbeatBytes = appendFrame(nil, frameHeartbeat, nil)

// appendFrame appends one frame of kind with payload p.
func appendFrame(dst []byte, kind byte, p []byte) []byte {
	dst = append(dst, kind, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...)
}

// appendOutputFrame is the batcher's encoder for the frame form: name is
// the SSE event name ("stdout" or "stderr").
func appendOutputFrame(dst []byte, name string, p []byte) []byte {
	kind := frameStdout
	if name == "stderr" {
		kind = frameStderr
	}
	return appendFrame(dst, kind, p)
}

// wantsExecFrames reports whether the client asked for execFramesType
// (listed in Accept with a non-zero q).
func wantsExecFrames(r *http.Request) bool {
	for _, h := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == execFramesType && params["q"] != "0" && params["q"] != "0.0" {
				return true
			}
		}
	}
	return false
}

// frameOutput turns an exec's output stream into frames of one kind.
type frameOutput struct {
	event string // "stdout" or "stderr", as the batcher names them
	batch *sseBatcher
}

func (o *frameOutput) Write(p []byte) (int, error) {
	if err := o.batch.event(o.event, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
