package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// maxQueuedUsage bounds the gateway usage records waiting for the store
// (a few hundred bytes each); past it, RecordUsage waits for room.
const maxQueuedUsage = 100_000

// The queued usage records are written ahead to a file in
// Durability.SpoolDir, usage.<queue>.pending, named for the process's
// queue: the next start stores what the files of the processes before it
// hold. A file of its own keeps a process's records apart from those it
// recovers: its queue may spool while recovery still runs (a call through
// the gateway during an outage at start), and recovery removes what it
// stored. usage.pending is the name before files were per process.
const (
	usageSpoolPrefix = "usage"
	usageSpoolExt    = ".pending"
)

// usageQueue holds the metered calls the store could not take (a database
// outage), in order; a background writer stores them with retries. Each
// is stored with its run's totals in one transaction, once (StoreUsage).
type usageQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond // on mu: the queue shrank, or it stops
	recs    []UsageRecord
	perRun  map[string]int // queued records by run
	stopped bool
	kick    chan struct{} // capacity 1
	spool   *os.File      // the queued records, written ahead (nil: none or no spool dir)
	// spoolName is the name of this queue's spool file (recovery leaves it).
	spoolName string
}

func newUsageQueue() *usageQueue {
	q := &usageQueue{perRun: map[string]int{}, kick: make(chan struct{}, 1),
		spoolName: usageSpoolPrefix + "." + randHex(8) + usageSpoolExt}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// storeUsage stores rec at once if nothing waits ahead of it and the store
// takes it; otherwise it queues rec (waiting for room if the queue is full).
func (s *Service) storeUsage(ctx context.Context, rec UsageRecord) error {
	q := s.usage
	q.mu.Lock()
	ahead := len(q.recs) > 0
	q.mu.Unlock()
	if !ahead {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := s.store.StoreUsage(actx, rec)
		cancel()
		if err == nil || errs.KindOf(err) != errs.Unavailable {
			return err
		}
		s.log.Warn("store did not take a usage record; queued", "run_id", rec.RunID, "err", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.recs) >= maxQueuedUsage && !q.stopped {
		q.cond.Wait()
	}
	if q.stopped {
		return errs.E(errs.Unavailable, "the server is stopping and the database is unreachable: usage record not stored")
	}
	q.recs = append(q.recs, rec)
	q.perRun[rec.RunID]++
	s.spoolUsage(rec)
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return nil
}

// writeUsage stores queued usage records in order, retrying with backoff,
// until quit is closed; then it tries for up to drain more, and leaves
// the rest in the spool for the next start.
func (s *Service) writeUsage(quit <-chan struct{}, drain time.Duration) {
	q := s.usage
	wait := 50 * time.Millisecond
	var deadline <-chan time.Time
	for {
		q.mu.Lock()
		if len(q.recs) == 0 {
			q.mu.Unlock()
			if deadline != nil {
				break
			}
			select {
			case <-q.kick:
				continue
			case <-quit:
				deadline = time.After(drain)
				continue
			}
		}
		rec := q.recs[0]
		q.mu.Unlock()
		actx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		err := s.store.StoreUsage(actx, rec)
		cancel()
		if err == nil || errs.KindOf(err) != errs.Unavailable {
			if err != nil {
				s.log.Error("usage record refused by the store; dropped", "run_id", rec.RunID, "err", err)
			}
			q.mu.Lock()
			q.recs[0] = UsageRecord{}
			q.recs = q.recs[1:]
			if q.perRun[rec.RunID]--; q.perRun[rec.RunID] <= 0 {
				delete(q.perRun, rec.RunID)
			}
			if len(q.recs) == 0 && q.spool != nil {
				// All stored: the written-ahead copies are not needed.
				_ = q.spool.Close()
				_ = os.Remove(q.spool.Name())
				q.spool = nil
			}
			q.cond.Broadcast()
			q.mu.Unlock()
			wait = 50 * time.Millisecond
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-quit:
			t.Stop()
			if deadline == nil {
				deadline = time.After(drain)
			}
		case <-deadline:
			t.Stop()
			s.spillUsage()
			return
		}
		wait = min(2*wait, s.hub.dur.RetryMax)
	}
	s.spillUsage()
}

// spoolUsage writes a queued record ahead to the spool file, so that it
// survives a kill of the server too (the next start stores it; storing is
// idempotent). The caller holds q.mu.
func (s *Service) spoolUsage(rec UsageRecord) {
	q, dir := s.usage, s.hub.dur.SpoolDir
	if dir == "" {
		return
	}
	if q.spool == nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			s.log.Error("spool usage record", "err", err)
			return
		}
		f, err := os.OpenFile(filepath.Join(dir, q.spoolName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			s.log.Error("spool usage record", "err", err)
			return
		}
		q.spool = f
	}
	b, _ := json.Marshal(spooledUsage{rec, rec.CostNanoUSD, rec.Latency.Milliseconds()})
	if _, err := q.spool.Write(append(b, '\n')); err != nil {
		s.log.Error("spool usage record", "err", err)
	}
}

// spillUsage stops the queue; what it still holds is in the spool file
// for the next start.
func (s *Service) spillUsage() {
	q := s.usage
	q.mu.Lock()
	n := len(q.recs)
	q.recs, q.perRun, q.stopped = nil, map[string]int{}, true
	if q.spool != nil {
		_ = q.spool.Close()
		q.spool = nil
	}
	q.cond.Broadcast()
	q.mu.Unlock()
	switch {
	case n == 0:
	case s.hub.dur.SpoolDir == "":
		s.log.Error("the database is unreachable at shutdown and there is no spool: usage records lost", "records", n)
	default:
		s.log.Warn("the database is unreachable at shutdown: usage records spooled for the next start", "records", n)
	}
}

// spooledUsage is a UsageRecord as spooled (with its cost and latency,
// which the record's JSON form leaves out).
type spooledUsage struct {
	UsageRecord
	CostNanoUSD int64 `json:"cost_nusd_spooled"`
	LatencyMS   int64 `json:"latency_ms_spooled"`
}

// recoverUsage stores the usage records that processes before this one
// spooled, retrying until the store takes them or ctx ends, and removes
// each file once its records are stored. This process's own spool file is
// not touched: its records are in its queue. A file left by a process
// that died while recovering is stored again, harmlessly (StoreUsage
// skips a record it has).
func (s *Service) recoverUsage(ctx context.Context) error {
	dir := s.hub.dur.SpoolDir
	if dir == "" {
		return nil
	}
	paths, err := filepath.Glob(filepath.Join(dir, usageSpoolPrefix+"*"+usageSpoolExt))
	if err != nil {
		return err
	}
	for _, path := range paths {
		if filepath.Base(path) == s.usage.spoolName {
			continue
		}
		if err := s.recoverUsageFile(ctx, path); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) recoverUsageFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		var su spooledUsage
		if json.Unmarshal(sc.Bytes(), &su) != nil {
			continue // a partial last line: the process died writing it
		}
		rec := su.UsageRecord
		rec.CostNanoUSD, rec.Latency = su.CostNanoUSD, time.Duration(su.LatencyMS)*time.Millisecond
		err := s.retry(ctx, s.log, "store spooled usage", func(ctx context.Context) error { return s.store.StoreUsage(ctx, rec) })
		if ctx.Err() != nil || errs.KindOf(err) == errs.Unavailable {
			return fmt.Errorf("store spooled usage records: %w", err)
		}
		if err != nil {
			s.log.Error("spooled usage record refused by the store; dropped", "run_id", rec.RunID, "err", err)
			continue
		}
		n++
	}
	if err := sc.Err(); err != nil {
		// Kept for the next start (what was stored is skipped then).
		s.log.Error("read spooled usage records; the file is kept", "file", filepath.Base(path), "records", n, "err", err)
		return nil
	}
	f.Close()
	s.log.Info("stored spooled usage records", "records", n, "file", filepath.Base(path))
	return os.Remove(path)
}

// flushUsage waits until the run's queued usage records are stored (so
// its totals are whole), or stop is closed, or ctx ends.
func (s *Service) flushUsage(ctx context.Context, runID string, stop <-chan struct{}) error {
	q := s.usage
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-stop:
		case <-ctx.Done():
		}
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	}()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.perRun[runID] > 0 && !q.stopped {
		select {
		case <-stop:
			return fmt.Errorf("run %s: usage records still wait for the store", runID)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		q.cond.Wait()
	}
	return nil
}

// UsageBacklog reports how many usage records wait for the store.
func (s *Service) UsageBacklog() int {
	s.usage.mu.Lock()
	defer s.usage.mu.Unlock()
	return len(s.usage.recs)
}
