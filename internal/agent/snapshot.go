package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// ErrSandboxGone is what Deps.AfterRun returns when the run's sandbox no
// longer exists or runs: there is no workspace to snapshot, and a failed
// snapshot is not retried any more.
var ErrSandboxGone = errors.New("the sandbox is gone")

// snapshotRetryMax caps the wait between retries of an after-run snapshot.
const snapshotRetryMax = 5 * time.Minute

// SnapshotErrorData is the data of a snapshot_error event.
type SnapshotErrorData struct {
	Error    string `json:"error"`
	Retrying bool   `json:"retrying"`
}

// snapshotMessage is what the run record and event say about a failed
// snapshot: the error's public text, never a host path or a credential.
func snapshotMessage(err error) string {
	if e, ok := errs.Public(err); ok {
		return "the workspace snapshot failed: " + e.Message
	}
	return "the workspace snapshot failed (the server log has the cause)"
}

// snapshotFailed records a failed after-run snapshot on the run and in its
// event log (before its done event), counts it, and retries it in the
// background.
func (s *Service) snapshotFailed(ctx context.Context, r Run, cause error, log *slog.Logger) {
	log.Warn("snapshot after run failed; retrying", "err", cause)
	s.m.snapFailed.Inc()
	msg := snapshotMessage(cause)
	s.events.Emit(ctx, r.OwnerID, "snapshot.failed", SnapshotEvent{RunID: r.ID, SandboxID: r.SandboxID, Error: msg})
	if err := s.retry(ctx, log, "record snapshot error", func(ctx context.Context) error { return s.store.SetRunSnapshotError(ctx, r.ID, msg) }); err != nil {
		log.Error("record snapshot error", "err", err)
	}
	if _, err := s.hub.Append(ctx, r.ID, NewEvent(TypeSnapshotError, SnapshotErrorData{Error: msg, Retrying: true}, "")); err != nil {
		log.Error("append snapshot error event", "err", err)
	}
	s.m.snapPending.Inc()
	s.bg.Go(func() {
		defer s.m.snapPending.Dec()
		s.retrySnapshot(r, msg, log)
	})
}

// retrySnapshot calls AfterRun again with backoff until it succeeds (the
// run's snapshot_error is cleared), the sandbox is gone, or the service
// stops (a snapshot still failing then stays recorded on the run).
func (s *Service) retrySnapshot(r Run, msg string, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-stop:
		}
	}()
	wait := s.cfg.SnapshotRetry
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		err := s.afterRun(ctx, r)
		switch {
		case err == nil:
			if err := s.retry(ctx, log, "clear snapshot error", func(ctx context.Context) error { return s.store.SetRunSnapshotError(ctx, r.ID, "") }); err != nil {
				log.Error("clear snapshot error", "err", err)
			}
			log.Info("snapshot after run stored on retry")
			return
		case errors.Is(err, ErrSandboxGone):
			log.Warn("snapshot after run abandoned: the sandbox is gone")
			return
		case ctx.Err() != nil:
			return
		}
		s.m.snapFailed.Inc()
		if m := snapshotMessage(err); m != msg {
			msg = m
			if err := s.store.SetRunSnapshotError(ctx, r.ID, msg); err != nil {
				log.Warn("record snapshot error", "err", err)
			}
		}
		log.Warn("snapshot after run failed again", "err", err, "next_in", min(2*wait, snapshotRetryMax))
		wait = min(2*wait, snapshotRetryMax)
	}
}

// stopSnapshotAttempts is how many times SnapshotBeforeStop tries the
// final snapshot of a sandbox that is being stopped.
const stopSnapshotAttempts = 3

// SnapshotBeforeStop runs take, the final snapshot of a sandbox that is
// being stopped (terminated or idle-stopped; the sandbox Manager's
// BeforeTerminate hook), and tries it again with backoff (SnapshotRetry,
// doubling) while the sandbox still exists: up to 3 attempts in all,
// since the stop cannot wait for longer. Every failed attempt is counted
// in techboss_agent_snapshot_failures_total; when all fail, the error is
// recorded as the snapshot_error of the sandbox's latest run (its event
// log has ended, so no event is added) and returned, and the Manager
// notes it in the sandbox's reason.
func (s *Service) SnapshotBeforeStop(ctx context.Context, sandboxID string, take func(context.Context) error) error {
	log := s.log.With("sandbox_id", sandboxID)
	wait := s.cfg.SnapshotRetry
	var err error
	for attempt := 1; ; attempt++ {
		if err = take(ctx); err == nil {
			return nil
		}
		s.m.snapFailed.Inc()
		if attempt == stopSnapshotAttempts || ctx.Err() != nil {
			break
		}
		log.Warn("final snapshot before stop failed; retrying", "err", err, "attempt", attempt, "next_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, snapshotRetryMax)
	}
	log.Error("final snapshot before stop failed", "err", err, "attempts", stopSnapshotAttempts)
	msg := "the final snapshot before the sandbox stopped failed (the server log has the cause)"
	if e, ok := errs.Public(err); ok {
		msg = "the final snapshot before the sandbox stopped failed: " + e.Message
	}
	runs, lerr := s.store.ListRuns(ctx, sandboxID, 1)
	if lerr == nil && len(runs) == 1 {
		lerr = s.retry(ctx, log, "record snapshot error", func(ctx context.Context) error { return s.store.SetRunSnapshotError(ctx, runs[0].ID, msg) })
	}
	if lerr != nil {
		log.Error("record the final snapshot's error on the last run", "err", lerr)
	}
	return err
}
