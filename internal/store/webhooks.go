package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Webhook is a user's webhook as stored (SecretSealed is the sealed
// signing secret; it never leaves the server).
type Webhook struct {
	ID           string
	UserID       string
	URL          string
	Events       []string
	SecretSealed string
	CreatedAt    time.Time
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// WebhookDelivery is one event to send to one hook (the outbox row).
type WebhookDelivery struct {
	ID             string
	WebhookID      string
	Event          string
	Data           string // the event's data, JSON
	State          string
	Attempts       int
	NextAttemptAt  time.Time
	ResponseStatus int
	LastError      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

const webhookCols = `id, user_id, url, events, secret_sealed, created_at`

func scanWebhook(r rowScanner) (*Webhook, error) {
	var h Webhook
	var events string
	var created int64
	if err := r.Scan(&h.ID, &h.UserID, &h.URL, &events, &h.SecretSealed, &created); err != nil {
		return nil, err
	}
	h.Events = strings.Split(events, ",")
	h.CreatedAt = fromMS(created)
	return &h, nil
}

// CreateWebhook stores a hook.
func (d *DB) CreateWebhook(ctx context.Context, h *Webhook) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO webhooks (`+webhookCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		h.ID, h.UserID, h.URL, strings.Join(h.Events, ","), h.SecretSealed, ms(h.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert webhook: %w", err)
	}
	return nil
}

// GetWebhook returns one hook of userID ("" = any user) or NotFound.
func (d *DB) GetWebhook(ctx context.Context, userID, id string) (*Webhook, error) {
	h, err := scanWebhook(d.queryRow(ctx, d.db, `SELECT `+webhookCols+` FROM webhooks WHERE id = ?`, id))
	if isNoRows(err) || (err == nil && userID != "" && h.UserID != userID) {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "webhook not found")
	}
	if err != nil {
		return nil, fmt.Errorf("read webhook: %w", err)
	}
	return h, nil
}

// ListWebhooks returns a user's hooks, oldest first.
func (d *DB) ListWebhooks(ctx context.Context, userID string) ([]*Webhook, error) {
	return d.listWebhooks(ctx, d.db, userID)
}

func (d *DB) listWebhooks(ctx context.Context, q querier, userID string) ([]*Webhook, error) {
	rows, err := d.query(ctx, q, `SELECT `+webhookCols+` FROM webhooks WHERE user_id = ? ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	defer rows.Close()
	out := []*Webhook{}
	for rows.Next() {
		h, err := scanWebhook(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// DeleteWebhook removes a user's hook and its deliveries.
func (d *DB) DeleteWebhook(ctx context.Context, userID, id string) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := d.exec(ctx, tx, `DELETE FROM webhooks WHERE user_id = ? AND id = ?`, userID, id)
		if err != nil {
			return fmt.Errorf("delete webhook: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.Wrap(errs.NotFound, errs.ErrNotFound, "webhook not found")
		}
		_, err = d.exec(ctx, tx, `DELETE FROM webhook_deliveries WHERE webhook_id = ?`, id)
		return err
	})
}

// EnqueueWebhookEvent writes, in one transaction, a pending delivery of
// the event to every hook of userID subscribed to it (or, with onlyHook
// set, to that hook alone whatever its events: the test ping). newID
// names each delivery. It returns the number of deliveries written.
func (d *DB) EnqueueWebhookEvent(ctx context.Context, userID, onlyHook, event, data string, at time.Time, newID func() string) (int, error) {
	n := 0
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		hooks, err := d.listWebhooks(ctx, tx, userID)
		if err != nil {
			return err
		}
		for _, h := range hooks {
			if onlyHook != "" {
				if h.ID != onlyHook {
					continue
				}
			} else if !subscribed(h.Events, event) {
				continue
			}
			if _, err := d.exec(ctx, tx, `INSERT INTO webhook_deliveries
				(id, webhook_id, event, data, state, attempts, next_attempt_at, claimed_until, response_status, last_error, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, 0, ?, 0, 0, '', ?, ?)`,
				newID(), h.ID, event, data, DeliveryPending, ms(at), ms(at), ms(at)); err != nil {
				return fmt.Errorf("insert webhook delivery: %w", err)
			}
			n++
		}
		return nil
	})
	return n, err
}

func subscribed(events []string, e string) bool {
	for _, x := range events {
		if x == e {
			return true
		}
	}
	return false
}

const deliveryCols = `id, webhook_id, event, data, state, attempts, next_attempt_at, response_status, last_error, created_at, updated_at`

func scanDelivery(r rowScanner) (*WebhookDelivery, error) {
	var x WebhookDelivery
	var next, created, updated int64
	if err := r.Scan(&x.ID, &x.WebhookID, &x.Event, &x.Data, &x.State, &x.Attempts, &next, &x.ResponseStatus, &x.LastError, &created, &updated); err != nil {
		return nil, err
	}
	x.NextAttemptAt, x.CreatedAt, x.UpdatedAt = fromMS(next), fromMS(created), fromMS(updated)
	return &x, nil
}

// ClaimWebhookDeliveries leases up to limit pending deliveries that are
// due at now and not leased by anyone, until now+lease, and returns them.
// On PostgreSQL the rows are locked with SKIP LOCKED, so replicas claiming
// at once never get the same row.
func (d *DB) ClaimWebhookDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]*WebhookDelivery, error) {
	lock := ""
	if d.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	rows, err := d.query(ctx, d.db, `UPDATE webhook_deliveries SET claimed_until = ?
		WHERE id IN (SELECT id FROM webhook_deliveries
			WHERE state = ? AND next_attempt_at <= ? AND claimed_until <= ?
			ORDER BY next_attempt_at, id LIMIT ?`+lock+`)
		RETURNING `+deliveryCols,
		ms(now.Add(lease)), DeliveryPending, ms(now), ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	defer rows.Close()
	var out []*WebhookDelivery
	for rows.Next() {
		x, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// RecordWebhookAttempt stores the outcome of one attempt and releases the
// lease: x's State, Attempts, NextAttemptAt, ResponseStatus, LastError
// and UpdatedAt.
func (d *DB) RecordWebhookAttempt(ctx context.Context, x *WebhookDelivery) error {
	_, err := d.exec(ctx, d.db, `UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?,
		claimed_until = 0, response_status = ?, last_error = ?, updated_at = ? WHERE id = ?`,
		x.State, x.Attempts, ms(x.NextAttemptAt), x.ResponseStatus, x.LastError, ms(x.UpdatedAt), x.ID)
	if err != nil {
		return fmt.Errorf("record webhook attempt: %w", err)
	}
	return nil
}

// ListWebhookDeliveries returns a hook's deliveries, newest first (at most limit).
func (d *DB) ListWebhookDeliveries(ctx context.Context, webhookID string, limit int) ([]*WebhookDelivery, error) {
	rows, err := d.query(ctx, d.db, `SELECT `+deliveryCols+` FROM webhook_deliveries WHERE webhook_id = ?
		ORDER BY created_at DESC, id DESC LIMIT ?`, webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("list webhook deliveries: %w", err)
	}
	defer rows.Close()
	out := []*WebhookDelivery{}
	for rows.Next() {
		x, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}
