package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/techbossai/techboss/internal/errs"
)

// Attachment is a file given to the model with the prompt: a sandbox path
// (read by the server when the run starts) or an upload (Data, base64).
// Images (PNG, JPEG, GIF, WebP) go as image blocks, PDFs as document
// blocks, UTF-8 text as text; the CLI reads the prompt and its
// attachments as one stream-json user message on stdin.
type Attachment struct {
	Path      string `json:"path,omitempty"`
	Name      string `json:"name,omitempty"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
}

// Attachment limits.
const (
	maxAttachments     = 20
	maxAttachmentBytes = 5 << 20
	maxAttachmentTotal = 20 << 20
)

var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

func validateAttachments(as []Attachment) []errs.FieldError {
	var fs []errs.FieldError
	if len(as) > maxAttachments {
		fs = append(fs, errs.FieldError{Field: "attachments", Reason: fmt.Sprintf("more than %d", maxAttachments)})
	}
	for i, a := range as {
		f := fmt.Sprintf("attachments[%d]", i)
		switch {
		case (a.Path == "") == (a.Data == ""):
			fs = append(fs, errs.FieldError{Field: f, Reason: "give a sandbox path or base64 data, one of them"})
		case a.Path != "":
			if _, ok := workspaceDir(a.Path); !ok {
				fs = append(fs, errs.FieldError{Field: f + ".path", Reason: "must be a file in /workspace"})
			}
		case a.Data != "":
			if base64.StdEncoding.DecodedLen(len(a.Data)) > maxAttachmentBytes+3 {
				fs = append(fs, errs.FieldError{Field: f + ".data", Reason: "larger than 5 MiB"})
			} else if _, err := base64.StdEncoding.DecodeString(a.Data); err != nil {
				fs = append(fs, errs.FieldError{Field: f + ".data", Reason: "not base64"})
			}
			if a.MediaType == "" {
				fs = append(fs, errs.FieldError{Field: f + ".media_type", Reason: "required with data"})
			}
		}
		if len(a.Name) > 255 || strings.ContainsAny(a.Name, "\x00\n") {
			fs = append(fs, errs.FieldError{Field: f + ".name", Reason: "not a file name"})
		}
	}
	return fs
}

// promptMessage reads the attachments and returns the stream-json user
// message (one line) of the prompt with them.
func (s *Service) promptMessage(ctx context.Context, ownerID, sandboxID, prompt string, as []Attachment) ([]byte, error) {
	blocks := []map[string]any{{"type": "text", "text": prompt}}
	total := 0
	var fs []errs.FieldError
	for i, a := range as {
		f := fmt.Sprintf("attachments[%d]", i)
		var data []byte
		name, mt := a.Name, a.MediaType
		if a.Path != "" {
			p, _ := workspaceDir(a.Path)
			var buf bytes.Buffer
			if _, err := s.sbx.ReadFile(ctx, ownerID, sandboxID, p, &limitWriter{w: &buf, n: maxAttachmentBytes}); err != nil {
				if errs.KindOf(err) == errs.Internal {
					return nil, err
				}
				fs = append(fs, errs.FieldError{Field: f + ".path", Reason: publicMessage(err)})
				continue
			}
			data = buf.Bytes()
			if name == "" {
				name = path.Base(p)
			}
			if mt == "" {
				mt = mime.TypeByExtension(path.Ext(p))
			}
		} else {
			data, _ = base64.StdEncoding.DecodeString(a.Data)
		}
		if len(data) > maxAttachmentBytes {
			fs = append(fs, errs.FieldError{Field: f, Reason: "larger than 5 MiB"})
			continue
		}
		total += len(data)
		if mt == "" {
			mt = http.DetectContentType(data)
		}
		mt, _, _ = mime.ParseMediaType(mt)
		switch {
		case imageTypes[mt]:
			blocks = append(blocks, map[string]any{"type": "image", "source": map[string]string{
				"type": "base64", "media_type": mt, "data": base64.StdEncoding.EncodeToString(data)}})
		case mt == "application/pdf":
			blocks = append(blocks, map[string]any{"type": "document", "source": map[string]string{
				"type": "base64", "media_type": mt, "data": base64.StdEncoding.EncodeToString(data)}})
		case utf8.Valid(data) && (strings.HasPrefix(mt, "text/") || mt == "application/json" || mt == "application/octet-stream" || mt == ""):
			blocks = append(blocks, map[string]any{"type": "text", "text": fmt.Sprintf("Attached file %s:\n%s", cmp.Or(name, "(unnamed)"), data)})
		default:
			fs = append(fs, errs.FieldError{Field: f, Reason: fmt.Sprintf("%s is not an image (PNG, JPEG, GIF, WebP), a PDF or UTF-8 text", mt)})
		}
	}
	if total > maxAttachmentTotal {
		fs = append(fs, errs.FieldError{Field: "attachments", Reason: "larger than 20 MiB together"})
	}
	if err := errs.Fields(fs); err != nil {
		return nil, err
	}
	b, err := json.Marshal(map[string]any{"type": "user", "message": map[string]any{"role": "user", "content": blocks}})
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// publicMessage is the client-safe text of a classified error.
func publicMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	return "cannot be read"
}

// limitWriter takes at most n+1 bytes, so the caller can tell "more".
type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n < 0 {
		return 0, errs.E(errs.TooLarge, "attachment larger than 5 MiB")
	}
	k := min(len(p), l.n+1)
	l.n -= k
	if _, err := l.w.Write(p[:k]); err != nil {
		return 0, err
	}
	if k < len(p) {
		return k, errs.E(errs.TooLarge, "attachment larger than 5 MiB")
	}
	return len(p), nil
}
