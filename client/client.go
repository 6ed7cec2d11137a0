// Package client is the Go client for the TechBoss HTTP API. It speaks the
// JSON envelope ({"data": …} / {"error": …}) and authenticates with an API
// token (Authorization: Bearer) or a session cookie from Login.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	hc    *http.Client
	token string
	team  string // X-Team (WithTeam)
}

// Option configures a Client.
type Option func(*Client)

// WithToken authenticates every request with an API token.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc (its Jar, if any, keeps the session cookie).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the server at baseURL (e.g. http://localhost:8080).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: invalid server URL %q", baseURL)
	}
	c := &Client{base: u}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		jar, err := cookiejar.New(nil)
		if err != nil {
			return nil, fmt.Errorf("client: cookie jar: %w", err)
		}
		c.hc = &http.Client{Jar: jar}
	}
	return c, nil
}

// BaseURL returns the server URL the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// FieldError names one invalid request field.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Error is an error answered by the server.
type Error struct {
	StatusCode int          `json:"-"`
	Code       string       `json:"code"`
	Message    string       `json:"message"`
	RequestID  string       `json:"request_id"`
	Fields     []FieldError `json:"fields,omitempty"`
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s (request %s)", e.StatusCode, e.Code, e.Message, e.RequestID)
}

// Do sends a JSON request (in may be nil) and decodes the response's data
// into out (may be nil). A non-2xx answer is returned as *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	hdr := http.Header{}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
		hdr.Set("Content-Type", "application/json")
	}
	res, err := c.Request(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil || res.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&env); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("decode %s %s data: %w", method, path, err)
	}
	return nil
}

// Request sends a raw request (for streams and files) and returns the
// response when its status is 2xx; the caller closes the body. Other
// statuses are returned as *Error.
func (c *Client) Request(ctx context.Context, method, path string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.team != "" {
		req.Header.Set("X-Team", c.team)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return res, nil
	}
	defer res.Body.Close()
	return nil, readError(res)
}

func readError(res *http.Response) error {
	e := &Error{StatusCode: res.StatusCode}
	var env struct {
		Error *Error `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		env.Error.StatusCode = res.StatusCode
		e = env.Error
	} else {
		e.Code, e.Message = "http_"+strconv.Itoa(res.StatusCode), strings.TrimSpace(string(b))
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// User is an account.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// Token describes an API token (never the token itself).
type Token struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	RevokedAt  time.Time `json:"revoked_at"`
}

// NewToken is a freshly created API token; Token is shown only this once.
type NewToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"created_at"`
}

// Login opens a session; the cookie is kept in the client's jar.
func (c *Client) Login(ctx context.Context, email, password string) (*User, error) {
	var u User
	if err := c.Do(ctx, "POST", "/auth/login", map[string]string{"email": email, "password": password}, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Logout ends the session.
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, "POST", "/auth/logout", nil, nil)
}

// Me returns the authenticated user.
func (c *Client) Me(ctx context.Context) (*User, error) {
	var u User
	if err := c.Do(ctx, "GET", "/auth/me", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// CreateToken creates an API token.
func (c *Client) CreateToken(ctx context.Context, name string) (*NewToken, error) {
	var t NewToken
	if err := c.Do(ctx, "POST", "/auth/tokens", map[string]string{"name": name}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// ListTokens lists your API tokens.
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var ts []Token
	if err := c.Do(ctx, "GET", "/auth/tokens", nil, &ts); err != nil {
		return nil, err
	}
	return ts, nil
}

// RevokeToken revokes one of your API tokens.
func (c *Client) RevokeToken(ctx context.Context, id string) (*Token, error) {
	var t Token
	if err := c.Do(ctx, "DELETE", "/auth/tokens/"+url.PathEscape(id), nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// CreateUser creates a user (admins only). role is "admin" or "member".
func (c *Client) CreateUser(ctx context.Context, email, password, role string) (*User, error) {
	var u User
	if err := c.Do(ctx, "POST", "/auth/users", map[string]string{"email": email, "password": password, "role": role}, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Ready returns nil when /readyz says the server is ready.
func (c *Client) Ready(ctx context.Context) error { return c.Do(ctx, "GET", "/readyz", nil, nil) }
