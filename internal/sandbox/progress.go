package sandbox

import (
	"context"
	"io"
)

type progressKey struct{}

// WithProgress returns a context whose lifecycle hooks report progress to
// w: the Manager passes the sandbox's build log (GET /sandbox/{id}/logs),
// so a long init_from_s3 or from_snapshot restore is visible while the
// sandbox is still creating.
func WithProgress(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, progressKey{}, w)
}

// ProgressFrom returns the progress writer of ctx, or io.Discard.
func ProgressFrom(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(progressKey{}).(io.Writer); ok && w != nil {
		return w
	}
	return io.Discard
}
