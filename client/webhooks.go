package client

import (
	"context"
	"net/url"
	"time"
)

// Webhook is a webhook of the caller (never its secret).
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	CreatedAt time.Time `json:"created_at"`
}

// CreatedWebhook is the answer to CreateWebhook: the hook and its signing
// secret, which the server shows only this once.
type CreatedWebhook struct {
	Webhook
	Secret string `json:"secret"`
}

// WebhookDelivery is one entry of a hook's delivery log.
type WebhookDelivery struct {
	ID             string    `json:"id"`
	Event          string    `json:"event"`
	State          string    `json:"state"` // pending, delivered or failed
	Attempts       int       `json:"attempts"`
	ResponseStatus int       `json:"response_status,omitempty"`
	Error          string    `json:"error,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitzero"`
}

// CreateWebhook creates a webhook delivering the named events
// (run.finished, run.failed, permission.requested, ...) to hookURL.
func (c *Client) CreateWebhook(ctx context.Context, hookURL string, events ...string) (*CreatedWebhook, error) {
	var out CreatedWebhook
	if err := c.Do(ctx, "POST", "/webhooks", map[string]any{"url": hookURL, "events": events}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Webhooks lists the caller's webhooks.
func (c *Client) Webhooks(ctx context.Context) ([]Webhook, error) {
	var out struct {
		Webhooks []Webhook `json:"webhooks"`
	}
	if err := c.Do(ctx, "GET", "/webhooks", nil, &out); err != nil {
		return nil, err
	}
	return out.Webhooks, nil
}

// DeleteWebhook deletes a webhook and its delivery log.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/webhooks/"+url.PathEscape(id), nil, nil)
}

// WebhookDeliveries returns a hook's newest 100 deliveries.
func (c *Client) WebhookDeliveries(ctx context.Context, id string) ([]WebhookDelivery, error) {
	var out struct {
		Deliveries []WebhookDelivery `json:"deliveries"`
	}
	if err := c.Do(ctx, "GET", "/webhooks/"+url.PathEscape(id)+"/deliveries", nil, &out); err != nil {
		return nil, err
	}
	return out.Deliveries, nil
}

// TestWebhook queues a ping delivery to a hook.
func (c *Client) TestWebhook(ctx context.Context, id string) error {
	return c.Do(ctx, "POST", "/webhooks/"+url.PathEscape(id)+"/test", nil, nil)
}
