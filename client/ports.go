package client

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Port is a TCP port listening inside a sandbox.
type Port struct {
	Port    int    `json:"port"`
	Address string `json:"address"`
	Process string `json:"process,omitempty"`
	// PreviewURL is the path form of its preview, relative to the server
	// (Client.PreviewURL gives it absolute).
	PreviewURL string `json:"preview_url"`
	// HostURL is the host form ({port}-{id}.preview.<domain>), when the
	// server has a preview domain.
	HostURL string `json:"host_url,omitempty"`
}

// PreviewLink is a share link to a port of a sandbox.
type PreviewLink struct {
	LinkID string `json:"link_id"`
	// URL opens the port's preview with the link's token (absolute; the
	// first visit trades the token for a cookie scoped to the preview).
	URL       string    `json:"url"`
	HostURL   string    `json:"host_url,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// PreviewLinkInfo describes an existing share link (never its token).
type PreviewLinkInfo struct {
	LinkID    string    `json:"link_id"`
	SandboxID string    `json:"sandbox_id"`
	Port      int       `json:"port"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func portsPath(id string, port int) string {
	return "/sandbox/" + url.PathEscape(id) + "/ports/" + strconv.Itoa(port)
}

// Ports lists the TCP ports listening inside a sandbox.
func (c *Client) Ports(ctx context.Context, id string) ([]Port, error) {
	var out struct {
		Ports []Port `json:"ports"`
	}
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(id)+"/ports", nil, &out); err != nil {
		return nil, err
	}
	return out.Ports, nil
}

// PreviewURL is the absolute URL of a port's preview (the path form). It
// takes the owner's token (Authorization) or session cookie, like the API.
func (c *Client) PreviewURL(id string, port int) string {
	return c.base.String() + portsPath(id, port) + "/"
}

// CreatePreviewLink creates a share link to a port that works for anyone
// holding its URL until ttl has passed (0: the server's default, an hour)
// or RevokePreviewLink.
func (c *Client) CreatePreviewLink(ctx context.Context, id string, port int, ttl time.Duration) (*PreviewLink, error) {
	in := map[string]any{}
	if ttl > 0 {
		in["expires_in_s"] = int64((ttl + time.Second - 1) / time.Second)
	}
	var out PreviewLink
	if err := c.Do(ctx, "POST", portsPath(id, port)+"/links", in, &out); err != nil {
		return nil, err
	}
	if strings.HasPrefix(out.URL, "/") {
		out.URL = c.base.String() + out.URL
	}
	return &out, nil
}

// PreviewLinks lists the unexpired share links to a port.
func (c *Client) PreviewLinks(ctx context.Context, id string, port int) ([]PreviewLinkInfo, error) {
	var out struct {
		Links []PreviewLinkInfo `json:"links"`
	}
	if err := c.Do(ctx, "GET", portsPath(id, port)+"/links", nil, &out); err != nil {
		return nil, err
	}
	return out.Links, nil
}

// RevokePreviewLink revokes a share link: its URL stops working at once.
func (c *Client) RevokePreviewLink(ctx context.Context, id string, port int, linkID string) error {
	return c.Do(ctx, "DELETE", portsPath(id, port)+"/links/"+url.PathEscape(linkID), nil, nil)
}
