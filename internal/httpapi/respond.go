package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/techbossai/techboss/internal/errs"
)

// apiFunc is a handler that returns its error instead of writing it.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// api adapts an apiFunc: a returned error becomes the JSON error body with
// the status of its kind (see statusOf), written in this one place. If the
// handler had already written headers (e.g. mid-stream), the error is only logged.
func (s *server) api(h apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw, ok := w.(*statusWriter)
		if !ok {
			sw = &statusWriter{ResponseWriter: w}
			w = sw
		}
		err := h(w, r)
		if err == nil {
			return
		}
		if sw.wroteHeader {
			if !isClientGone(r, err) {
				s.logger(r).WarnContext(r.Context(), "handler error after response started", "err", err)
			}
			return
		}
		s.writeError(w, r, err)
	}
}

// isClientGone reports errors that only mean the client went away.
func isClientGone(r *http.Request, err error) bool {
	return r.Context().Err() != nil && (errors.Is(err, r.Context().Err()) || errors.Is(err, io.ErrClosedPipe))
}

type errorBody struct {
	Code      string            `json:"code"`
	Message   string            `json:"message"`
	RequestID string            `json:"request_id"`
	Fields    []errs.FieldError `json:"fields,omitempty"`
}

// statusOf maps an error kind to its HTTP status: the one place this happens.
func statusOf(k errs.Kind) int {
	switch k {
	case errs.NotFound:
		return http.StatusNotFound
	case errs.Conflict:
		return http.StatusConflict
	case errs.Invalid:
		return http.StatusUnprocessableEntity
	case errs.Malformed:
		return http.StatusBadRequest
	case errs.Unauthenticated:
		return http.StatusUnauthorized
	case errs.Forbidden:
		return http.StatusForbidden
	case errs.TooLarge:
		return http.StatusRequestEntityTooLarge
	case errs.TooMany:
		return http.StatusTooManyRequests
	case errs.PaymentRequired:
		return http.StatusPaymentRequired
	case errs.Dependency:
		return http.StatusFailedDependency
	case errs.BadGateway:
		return http.StatusBadGateway
	case errs.InsufficientStorage:
		return http.StatusInsufficientStorage
	case errs.Unavailable:
		return http.StatusServiceUnavailable
	case errs.NotImplemented:
		return http.StatusNotImplemented
	default:
		return http.StatusInternalServerError
	}
}

// writeError writes err as the JSON error body. Errors that are not public
// (*errs.Error of a non-internal kind) become 500 "internal error" and are
// logged once with the request ID; their text never reaches the client.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	body := errorBody{RequestID: requestIDFrom(r.Context())}
	status := http.StatusInternalServerError
	// A full disk that no store or driver named yet is still a 507, not a
	// 500: every host write of the server lands under its data dir.
	err = errs.Full(err, "the server's data dir")
	e, public := errs.Public(err)
	if public && e.Kind != errs.Internal {
		status = statusOf(e.Kind)
		body.Code, body.Message, body.Fields = e.Kind.String(), e.Message, e.Fields
		if e.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="techboss"`)
		}
		if status >= 500 {
			s.logger(r).WarnContext(r.Context(), "upstream or availability error", "status", status, "err", err)
		}
	} else {
		body.Code, body.Message = errs.Internal.String(), "internal error"
		s.logger(r).ErrorContext(r.Context(), "internal error", "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error errorBody `json:"error"`
	}{body})
}

// writeJSON writes {"data": v} with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(struct {
		Data any `json:"data"`
	}{v})
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

const defaultMaxJSONBody = 1 << 20

// decodeJSON decodes one JSON object from the body (at most 1 MiB) into v,
// rejecting unknown fields. Errors: unparseable → Malformed (400); unknown
// field or wrong type → Invalid (422) naming the field; too big → TooLarge (413).
func decodeJSON(r *http.Request, v any) error {
	return decodeJSONLimit(r, v, defaultMaxJSONBody)
}

// decodeJSONLimit is decodeJSON with a body limit of max bytes.
func decodeJSONLimit(r *http.Request, v any, max int64) error {
	if err := checkJSONType(r); err != nil {
		return err
	}
	body := http.MaxBytesReader(nil, r.Body, max)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	// Exactly one value: anything but whitespace after it is malformed.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return errs.E(errs.Malformed, "request body must hold a single JSON value")
	}
	return nil
}

// bodyOrigin tells browser requests from other sites from the rest (curl,
// SDKs, same-origin pages): it needs no trusted origins of its own.
var bodyOrigin = http.NewCrossOriginProtection()

// checkJSONType accepts the request's Content-Type for a JSON body. JSON is
// the only body format, so a missing type, and the types curl -d and plain
// HTML forms send (x-www-form-urlencoded, text/plain), are read as JSON,
// but the latter two only when the request is not a cross-site browser
// request: those types need no CORS preflight, so a page elsewhere could
// otherwise post a JSON-shaped form to a public route such as login.
func checkJSONType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(strings.ToLower(mt))
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return nil
	case mt == "application/x-www-form-urlencoded" || mt == "text/plain":
		if bodyOrigin.Check(r) == nil {
			return nil
		}
		return errs.E(errs.Forbidden, "a cross-origin %s body is refused; send Content-Type: application/json", mt)
	}
	return errs.E(errs.Malformed, "Content-Type must be application/json, got %q", mt)
}

// jsonError classifies a decoding error.
func jsonError(err error) error {
	var (
		syn    *json.SyntaxError
		typ    *json.UnmarshalTypeError
		maxErr *http.MaxBytesError
	)
	switch {
	case errors.As(err, &maxErr):
		return errs.Wrap(errs.TooLarge, err, fmt.Sprintf("request body exceeds %d bytes", maxErr.Limit))
	case errors.Is(err, io.EOF):
		return errs.E(errs.Malformed, "request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errs.E(errs.Malformed, "request body is truncated JSON")
	case errors.As(err, &syn):
		return errs.E(errs.Malformed, "malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return errs.E(errs.Invalid, "request body must be a JSON %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)
		}
		return errs.Field(field, fmt.Sprintf("must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, _ = strconv.Unquote(name)
		return errs.Field(name, "unknown field")
	}
	var inv *json.InvalidUnmarshalError
	if errors.As(err, &inv) {
		return fmt.Errorf("decode: %w", err) // a programming error: 500
	}
	// A field's own decoder (e.g. sandbox.Network) names what is wrong.
	if pub, ok := errs.Public(err); ok {
		return pub
	}
	return errs.Wrap(errs.Malformed, err, "malformed JSON")
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "a " + k
}

// logger returns the request-scoped logger (with request_id).
func (s *server) logger(r *http.Request) *slog.Logger {
	return s.log.With("request_id", requestIDFrom(r.Context()))
}
