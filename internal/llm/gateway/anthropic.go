package gateway

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/llm"
)

// DefaultAnthropicURL is the public Anthropic API.
const DefaultAnthropicURL = "https://api.anthropic.com"

// Anthropic forwards requests unchanged to an Anthropic-compatible API,
// adding the server's key.
type Anthropic struct {
	baseURL string
	key     llm.Secret
	client  *http.Client
}

// NewAnthropic returns the upstream at baseURL ("" = DefaultAnthropicURL).
// client nil uses a transport without an overall timeout (answers stream
// for minutes) but with dial and header timeouts.
func NewAnthropic(baseURL string, key llm.Secret, client *http.Client) *Anthropic {
	if baseURL == "" {
		baseURL = DefaultAnthropicURL
	}
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Minute,
			ReadBufferSize:        64 << 10,
			WriteBufferSize:       64 << 10,
		}}
	}
	return &Anthropic{baseURL: strings.TrimRight(baseURL, "/"), key: key, client: client}
}

// Name implements Upstream.
func (a *Anthropic) Name() string { return "anthropic" }

// Endpoint implements Endpointer.
func (a *Anthropic) Endpoint() string { return endpoint(a.baseURL) }

// Do implements Upstream.
func (a *Anthropic) Do(ctx context.Context, req UpstreamRequest) (*http.Response, error) {
	u := a.baseURL + req.Path
	if req.RawQuery != "" {
		u += "?" + req.RawQuery
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u, bytes.NewReader(req.Body))
	if err != nil {
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	hr.Header.Set("x-api-key", a.key.Reveal())
	// Identity keeps the stream readable for metering and unbuffered.
	hr.Header.Set("Accept-Encoding", "identity")
	resp, err := a.client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("anthropic upstream: %w", err)
	}
	return resp, nil
}
