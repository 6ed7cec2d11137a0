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

// ExecStreamJSONForm is ExecStream over SSE in the JSON form, as a server
// without the text form answers.
func (c *Client) ExecStreamJSONForm(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer) (*ExecExit, error) {
	return c.execStreamQuery(ctx, id, req, stdout, stderr, "text/event-stream", "")
}
