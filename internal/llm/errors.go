package llm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

type fieldErr struct{ field, reason string }

func invalid(fs []fieldErr) error {
	if len(fs) == 0 {
		return nil
	}
	out := make([]errs.FieldError, len(fs))
	for i, f := range fs {
		out[i] = errs.FieldError{Field: f.field, Reason: f.reason}
	}
	return errs.Fields(out)
}

// UpstreamStatus maps an HTTP status answered by a provider to a public
// error. retryAfter is the upstream's Retry-After header value (seconds or
// an HTTP date), passed on for 429 and 503. detail (the upstream's error
// type and request ID, never its message or body: those may quote the key)
// becomes the cause, for logs only.
func UpstreamStatus(provider string, status int, retryAfter, detail string) error {
	cause := fmt.Errorf("upstream %s answered HTTP %d: %s", provider, status, detail)
	switch {
	case status == 401 || status == 403:
		return errs.Wrap(errs.BadGateway, cause, fmt.Sprintf("upstream %s rejected the configured key (HTTP %d)", provider, status))
	case status == 429:
		e := errs.Wrap(errs.TooMany, cause, fmt.Sprintf("upstream %s is rate limiting this server (HTTP 429)", provider))
		e.RetryAfter = ParseRetryAfter(retryAfter, time.Now())
		if e.RetryAfter > 0 {
			e.Message += fmt.Sprintf("; retry after %d s", e.RetryAfter)
		}
		return e
	case status == 400 || status == 404 || status == 413 || status == 422:
		return errs.Wrap(errs.Invalid, cause, fmt.Sprintf("upstream %s rejected the request (HTTP %d); check the model and messages", provider, status))
	case status == 503 || status == 529:
		e := errs.Wrap(errs.Unavailable, cause, fmt.Sprintf("upstream %s is overloaded or unavailable (HTTP %d)", provider, status))
		e.RetryAfter = ParseRetryAfter(retryAfter, time.Now())
		return e
	case status == 504 || status == 408:
		return errs.Wrap(errs.Unavailable, cause, fmt.Sprintf("upstream %s timed out (HTTP %d)", provider, status))
	default:
		return errs.Wrap(errs.BadGateway, cause, fmt.Sprintf("upstream %s failed (HTTP %d)", provider, status))
	}
}

// TransportError maps an error that is not an HTTP status (a timeout, a
// refused connection, a broken stream) to a public error. The caller's own
// cancellation is returned unchanged, so callers can tell it apart.
func TransportError(ctx context.Context, provider string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errs.Public(err); ok {
		return err
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return errs.Wrap(errs.Unavailable, err, fmt.Sprintf("upstream %s timed out", provider))
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return errs.Wrap(errs.BadGateway, err, fmt.Sprintf("upstream %s is unreachable", provider))
	}
	return errs.Wrap(errs.BadGateway, err, fmt.Sprintf("upstream %s sent a malformed or broken stream", provider))
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// ParseRetryAfter turns a Retry-After value (delta seconds or an HTTP date)
// into whole seconds, 0 when absent or unparsable.
func ParseRetryAfter(v string, now time.Time) int {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return n
	}
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		d := t.Sub(now)
		if d <= 0 {
			return 0
		}
		return int((d + time.Second - 1) / time.Second)
	}
	return 0
}
