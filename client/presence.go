package client

import (
	"context"
	"net/url"
	"time"
)

// Viewer is a user watching a sandbox: since when, how many streams
// (terminals, run event streams, process logs, file watching), of which
// kinds ("run", "pty", "logs", "watch"), following which runs.
type Viewer struct {
	UserID  string    `json:"user_id"`
	Email   string    `json:"email"`
	Since   time.Time `json:"since"`
	Streams int       `json:"streams"`
	Kinds   []string  `json:"kinds"`
	Runs    []string  `json:"runs,omitempty"`
}

// Presence lists who is watching the sandbox right now (through the
// server that answers: each replica knows the streams it serves).
func (c *Client) Presence(ctx context.Context, id string) ([]Viewer, error) {
	var out struct {
		Viewers []Viewer `json:"viewers"`
	}
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/presence", nil, &out); err != nil {
		return nil, err
	}
	return out.Viewers, nil
}
