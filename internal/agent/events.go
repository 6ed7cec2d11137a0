package agent

import (
	"context"
	"time"
)

// EventSink receives events of users' resources for their webhooks
// (internal/webhooks implements it). Emit records the event before it
// returns and never fails the caller: the run goes on whatever happens.
type EventSink interface {
	Emit(ctx context.Context, userID, typ string, data any)
}

type noEvents struct{}

func (noEvents) Emit(context.Context, string, string, any) {}

// RunEvent is the data of the run.* webhook events.
type RunEvent struct {
	RunID      string    `json:"run_id"`
	SandboxID  string    `json:"sandbox_id"`
	Status     Status    `json:"status"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	NumTurns   int       `json:"num_turns"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// runEvent is the webhook event type and data of a finished run:
// run.finished (succeeded), run.failed, run.cancelled or run.interrupted.
func runEvent(r Run) (string, RunEvent) {
	typ := "run." + string(r.Status)
	if r.Status == Succeeded {
		typ = "run.finished"
	}
	return typ, RunEvent{RunID: r.ID, SandboxID: r.SandboxID, Status: r.Status, ExitCode: r.ExitCode, Error: r.Error,
		NumTurns: r.NumTurns, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
}

// emitRun sends a finished run's webhook event.
func (s *Service) emitRun(ctx context.Context, r Run) {
	typ, data := runEvent(r)
	s.events.Emit(ctx, r.OwnerID, typ, data)
}

// PermissionEvent is the data of the permission.requested webhook event.
type PermissionEvent struct {
	RunID     string    `json:"run_id"`
	SandboxID string    `json:"sandbox_id"`
	RequestID string    `json:"request_id"`
	ToolName  string    `json:"tool_name"`
	Summary   string    `json:"summary,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SnapshotEvent is the data of the snapshot.failed webhook event.
type SnapshotEvent struct {
	RunID     string `json:"run_id"`
	SandboxID string `json:"sandbox_id"`
	Error     string `json:"error"`
}
