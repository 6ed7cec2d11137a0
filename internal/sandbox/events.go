package sandbox

import "context"

// EventSink receives events of users' sandboxes for their webhooks
// (internal/webhooks implements it). Emit never fails the caller.
type EventSink interface {
	Emit(ctx context.Context, userID, typ string, data any)
}

type noEvents struct{}

func (noEvents) Emit(context.Context, string, string, any) {}

// FailedEvent is the data of the sandbox.failed webhook event.
type FailedEvent struct {
	SandboxID string `json:"sandbox_id"`
	Reason    string `json:"reason"`
}
