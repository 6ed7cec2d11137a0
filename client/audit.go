package client

import (
	"context"
	"net/url"
	"strconv"
	"time"
)

// AuditEntry is one recorded state-changing request (GET /audit).
type AuditEntry struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at"`
	UserID    string    `json:"user_id,omitempty"`
	Email     string    `json:"email,omitempty"`
	Auth      string    `json:"auth,omitempty"` // session, password (a login) or token
	TokenID   string    `json:"token_id,omitempty"`
	IP        string    `json:"ip"`
	Action    string    `json:"action"`
	Method    string    `json:"method"`
	Route     string    `json:"route"`
	Resource  string    `json:"resource,omitempty"`
	Status    int       `json:"status"`
	ErrorCode string    `json:"error_code,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
}

// AuditOptions filter and page GET /audit; zero fields match everything.
type AuditOptions struct {
	User, Action, Resource string
	From, To               time.Time
	Limit                  int
	Cursor                 string
}

// AuditPage is a page of the audit log, newest first.
type AuditPage struct {
	Entries    []AuditEntry `json:"entries"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// Audit returns a page of the audit log (admins).
func (c *Client) Audit(ctx context.Context, o AuditOptions) (*AuditPage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"user": o.User, "action": o.Action, "resource": o.Resource, "cursor": o.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !o.From.IsZero() {
		q.Set("from", o.From.Format(time.RFC3339Nano))
	}
	if !o.To.IsZero() {
		q.Set("to", o.To.Format(time.RFC3339Nano))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	path := "/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out AuditPage
	if err := c.Do(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
