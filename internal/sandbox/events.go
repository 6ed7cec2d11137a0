package sandbox

import "context"

// EventSink receives events of users' sandboxes for their webhooks
// (internal/webhooks implements it). Emit never fails the caller.
type EventSink interface {
	Emit(ctx context.Context, userID, typ string, data any)
}

type noEvents struct{}

func (noEvents) Emit(context.Context, string, string, any) {}

// SnapshotFailedEvent is the data of the snapshot.failed webhook event
// when the final snapshot before a sandbox stops fails (Final; the
// sandbox is terminated all the same). An after-run snapshot's failure
// has the run's id instead (internal/agent).
type SnapshotFailedEvent struct {
	SandboxID string `json:"sandbox_id"`
	Final     bool   `json:"final"`
	Error     string `json:"error"`
}

// FailedEvent is the data of the sandbox.failed webhook event.
type FailedEvent struct {
	SandboxID string `json:"sandbox_id"`
	Reason    string `json:"reason"`
}
