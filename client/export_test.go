package client

import (
	"context"
	"io"
)

// ExecStreamAccept is ExecStream asking for the given media types, so
// tests can take the SSE path too.
func (c *Client) ExecStreamAccept(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer, accept string) (*ExecExit, error) {
	return c.execStream(ctx, id, req, stdout, stderr, accept)
}
