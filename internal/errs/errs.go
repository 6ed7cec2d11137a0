// Package errs defines the few error kinds the whole server shares. Domain
// packages wrap them; the HTTP layer maps them to status codes in one place.
package errs

import (
	"errors"
	"fmt"
	"syscall"
)

// Kind classifies an error for callers and for the HTTP status mapping.
type Kind int

// The kinds. Internal is the zero value: anything not marked otherwise.
const (
	Internal            Kind = iota
	NotFound                 // 404
	Conflict                 // 409
	Invalid                  // 422 (400 for malformed syntax, see Malformed)
	Malformed                // 400: the request could not be parsed at all
	Unauthenticated          // 401
	Forbidden                // 403
	Unavailable              // 503
	TooLarge                 // 413
	TooMany                  // 429
	PaymentRequired          // 402: a budget is exhausted
	Dependency               // 424: an external dependency (bucket, registry) refused
	BadGateway               // 502: an upstream answered badly
	InsufficientStorage      // 507: the host lacks the disk space a request needs
	NotImplemented           // 501: the sandbox's driver lacks the feature
)

var kindNames = map[Kind]string{
	Internal:            "internal",
	NotFound:            "not_found",
	Conflict:            "conflict",
	Invalid:             "invalid",
	Malformed:           "malformed",
	Unauthenticated:     "unauthenticated",
	Forbidden:           "forbidden",
	Unavailable:         "unavailable",
	TooLarge:            "too_large",
	TooMany:             "too_many_requests",
	PaymentRequired:     "payment_required",
	Dependency:          "failed_dependency",
	BadGateway:          "bad_gateway",
	InsufficientStorage: "insufficient_storage",
	NotImplemented:      "not_implemented",
}

// String returns the stable code used in API error bodies.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "internal"
}

// FieldError names one invalid input field and why.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Error is a classified error whose message is safe to show to API clients.
// Only *Error values carry public text; anything else becomes "internal error".
type Error struct {
	Kind    Kind
	Message string
	Fields  []FieldError
	// RetryAfter, when positive, is passed on as a Retry-After header (seconds).
	RetryAfter int
	Err        error // the cause; never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, errs.NotFound-kind sentinel) work through KindOf.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Message == "" && t.Err == nil && t.Kind == e.Kind
}

// E returns a public error of kind k with a formatted message.
func E(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns a public error of kind k with message msg and cause err.
func Wrap(k Kind, err error, msg string) *Error {
	return &Error{Kind: k, Message: msg, Err: err}
}

// Field returns an Invalid error for one field.
func Field(field, reason string) *Error {
	return &Error{Kind: Invalid, Message: field + ": " + reason, Fields: []FieldError{{Field: field, Reason: reason}}}
}

// Fields returns an Invalid error listing several field problems, or nil if fs is empty.
func Fields(fs []FieldError) error {
	if len(fs) == 0 {
		return nil
	}
	msg := fs[0].Field + ": " + fs[0].Reason
	if len(fs) > 1 {
		msg = fmt.Sprintf("%s (and %d more)", msg, len(fs)-1)
	}
	return &Error{Kind: Invalid, Message: msg, Fields: fs}
}

// Sentinels for errors.Is: errors.Is(err, errs.ErrNotFound).
var (
	ErrNotFound        = &Error{Kind: NotFound}
	ErrConflict        = &Error{Kind: Conflict}
	ErrInvalid         = &Error{Kind: Invalid}
	ErrUnauthenticated = &Error{Kind: Unauthenticated}
	ErrForbidden       = &Error{Kind: Forbidden}
	ErrUnavailable     = &Error{Kind: Unavailable}
)

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Public returns the first *Error in err's chain, if any.
func Public(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// NoSpace reports whether err means a full disk or an exhausted quota
// (ENOSPC, EDQUOT) anywhere in its chain.
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Full classifies a full disk once for every caller: when err is a
// no-space error that carries no public kind yet, it returns an
// InsufficientStorage (507) error whose message names what is full
// (e.g. "the blob store"), never a host path; the cause stays for the
// logs. Any other error, and nil, is returned unchanged.
func Full(err error, what string) error {
	if err == nil || !NoSpace(err) {
		return err
	}
	if _, ok := Public(err); ok {
		return err
	}
	return Wrap(InsufficientStorage, err, what+" is full (no space left on its volume); free space on it and retry")
}
