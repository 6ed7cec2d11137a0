package client

import (
	"context"
	"net/url"
	"time"
)

// SecretInfo names a stored secret (no route returns a value).
type SecretInfo struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PutSecret stores a secret; runs use it as "${secret:NAME}".
func (c *Client) PutSecret(ctx context.Context, name, value string) error {
	return c.Do(ctx, "PUT", "/secrets/"+url.PathEscape(name), map[string]string{"value": value}, nil)
}

// ListSecrets lists your secrets' names and dates.
func (c *Client) ListSecrets(ctx context.Context) ([]SecretInfo, error) {
	var out []SecretInfo
	if err := c.Do(ctx, "GET", "/secrets", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSecret deletes a secret.
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/secrets/"+url.PathEscape(name), nil, nil)
}

// UsageGroup is the usage of one day, model or sandbox.
type UsageGroup struct {
	Key      string  `json:"key"`
	Requests int64   `json:"requests"`
	Usage    Usage   `json:"usage"`
	CostUSD  float64 `json:"cost_usd"`
}

// UsageReport is the answer to Usage.
type UsageReport struct {
	From    time.Time    `json:"from"`
	To      time.Time    `json:"to"`
	GroupBy string       `json:"group_by"`
	UserID  string       `json:"user_id,omitempty"`
	Groups  []UsageGroup `json:"groups"`
	Total   UsageGroup   `json:"total"`
}

// UsageOptions selects a usage report: GroupBy is day (the default),
// model or sandbox; a zero From/To is the server's default (the last 30
// days); User (admins) reads another user's usage.
type UsageOptions struct {
	From, To time.Time
	GroupBy  string
	User     *string
}

// Usage reports LLM usage (tokens, cost).
func (c *Client) Usage(ctx context.Context, o UsageOptions) (*UsageReport, error) {
	q := url.Values{}
	if !o.From.IsZero() {
		q.Set("from", o.From.Format(time.RFC3339))
	}
	if !o.To.IsZero() {
		q.Set("to", o.To.Format(time.RFC3339))
	}
	if o.GroupBy != "" {
		q.Set("group_by", o.GroupBy)
	}
	if o.User != nil {
		q.Set("user", *o.User)
	}
	p := "/usage"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out UsageReport
	if err := c.Do(ctx, "GET", p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Budget is a user's LLM limits and this month's spend.
type Budget struct {
	MonthlyUSD        float64   `json:"monthly_usd"`
	RequestsPerMinute int       `json:"requests_per_minute"`
	Override          bool      `json:"override"`
	SpentUSD          float64   `json:"spent_usd_this_month"`
	MonthResetsAt     time.Time `json:"month_resets_at"`
}

// BudgetLimits are a user's own LLM limits (0 = unlimited).
type BudgetLimits struct {
	MonthlyUSD        float64 `json:"monthly_usd,omitempty"`
	RequestsPerMinute int     `json:"requests_per_minute,omitempty"`
}

// MyBudget returns your LLM limits and spend.
func (c *Client) MyBudget(ctx context.Context) (*Budget, error) {
	var out Budget
	if err := c.Do(ctx, "GET", "/v1/budget", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetBudget sets a user's own LLM limits (admins).
func (c *Client) SetBudget(ctx context.Context, userID string, l BudgetLimits) (*Budget, error) {
	var out Budget
	if err := c.Do(ctx, "PUT", "/v1/budgets/"+url.PathEscape(userID), l, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ResetBudget returns a user to the default LLM limits (admins).
func (c *Client) ResetBudget(ctx context.Context, userID string) (*Budget, error) {
	var out Budget
	if err := c.Do(ctx, "DELETE", "/v1/budgets/"+url.PathEscape(userID), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetUser returns a user (admins, or yourself).
func (c *Client) GetUser(ctx context.Context, id string) (*User, error) {
	var u User
	if err := c.Do(ctx, "GET", "/auth/users/"+url.PathEscape(id), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}
