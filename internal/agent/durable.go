package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Durability says how a run's events wait for the store while it cannot
// take them (a database outage). The Hub publishes an event to this
// process's subscribers at once and persists it in order behind them,
// retrying with backoff: first from memory, then, past MemoryBytes, from a
// spool file per run under SpoolDir. Past SpoolBytes too, Append waits for
// room (the CLI's output backs up in its pipe); an event is never dropped.
//
// The longest outage a run survives with nothing lost and nothing stalled
// is (MemoryBytes + SpoolBytes) / the event rate: with the defaults and a
// busy run (~2 KiB events, 50 a second) about 3 hours.
type Durability struct {
	// MemoryBytes bounds the events of all runs held in memory while they
	// wait for the store (default 32 MiB).
	MemoryBytes int64
	// SpoolDir holds the events beyond MemoryBytes, one file per run. ""
	// means no spool: Append waits for room in memory instead, and events
	// still waiting at shutdown are lost (logged).
	SpoolDir string
	// SpoolBytes bounds the spool files together (default 1 GiB).
	SpoolBytes int64
	// RetryMax caps the backoff between attempts to persist (default 2s).
	RetryMax time.Duration
	// DrainTimeout is how long Stop lets waiting events reach the store
	// before it spools them for the next start (default 10s).
	DrainTimeout time.Duration
}

func (d Durability) withDefaults() Durability {
	if d.MemoryBytes <= 0 {
		d.MemoryBytes = 32 << 20
	}
	if d.SpoolBytes <= 0 {
		d.SpoolBytes = 1 << 30
	}
	if d.RetryMax <= 0 {
		d.RetryMax = 2 * time.Second
	}
	if d.DrainTimeout <= 0 {
		d.DrainTimeout = 10 * time.Second
	}
	return d
}

// attemptTimeout bounds one attempt to persist an event, so a store that
// hangs (rather than refuses) does not hold the run up.
const attemptTimeout = 5 * time.Second

// spoolExt names the spool files in Durability.SpoolDir.
const spoolExt = ".events"

// backlog is a topic's events not yet in the store, in seq order: the
// ones in memory, then the ones in the spool file. Guarded by topic.pmu.
type backlog struct {
	persisted int64   // seq of the last event in the store
	mem       []Event // seqs persisted+1 ..
	memBytes  int64
	spool     *spoolFile    // events after mem; nil when none
	draining  bool          // a drain goroutine owns the backlog's head
	drainDone chan struct{} // closed when that goroutine ends
}

func (b *backlog) empty() bool { return len(b.mem) == 0 && b.spool == nil }

// spoolFile is one run's spool: JSON lines appended at the end, read from
// the front by the drain goroutine.
type spoolFile struct {
	path  string
	w     *os.File
	r     *bufio.Reader
	rf    *os.File
	head  *Event // read from r, not yet persisted
	n     int    // events in the file not yet persisted
	bytes int64  // size of the file
}

// spoolRecord is an Event as spooled (Raw included).
type spoolRecord struct {
	RunID string          `json:"run_id"`
	Seq   int64           `json:"seq"`
	Type  string          `json:"type"`
	Time  time.Time       `json:"time"`
	Data  json.RawMessage `json:"data"`
	Raw   string          `json:"raw,omitempty"`
}

func evSize(ev Event) int64 { return int64(len(ev.Data)+len(ev.Raw)+len(ev.Type)+len(ev.RunID)) + 64 }

// SetDurability configures how events wait for the store (call before
// the first Open) and the logger that reports outages.
func (h *Hub) SetDurability(d Durability, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h.dur, h.log = d.withDefaults(), log
}

// Backlog reports how many events and bytes wait for the store, in
// memory and in spool files.
func (h *Hub) Backlog() (events int, memBytes, spoolBytes int64) {
	h.roomMu.Lock()
	defer h.roomMu.Unlock()
	return h.backlogEvents, h.memBytes, h.spoolBytes
}

// persistOrQueue persists ev if nothing waits ahead of it, and otherwise
// (or if the store fails) queues it behind the run's backlog. It reports
// whether ev is in the store now. The caller holds t.appendMu.
func (h *Hub) persistOrQueue(ctx context.Context, runID string, t *topic, ev Event) (bool, error) {
	t.pmu.Lock()
	queued := !t.bl.empty() || t.bl.draining
	t.pmu.Unlock()
	if !queued {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := h.store.AppendRunEvent(actx, ev)
		cancel()
		if err == nil || errs.KindOf(err) == errs.Conflict {
			if err != nil {
				h.log.Error("run event already taken in the store", "run_id", runID, "seq", ev.Seq, "err", err)
			}
			t.pmu.Lock()
			t.bl.persisted = ev.Seq
			t.pmu.Unlock()
			return true, nil
		}
		h.log.Warn("store did not take a run event; retrying behind the stream", "run_id", runID, "seq", ev.Seq, "err", err)
	}
	if err := h.enqueue(ctx, runID, t, ev); err != nil {
		return false, err
	}
	return false, nil
}

// enqueue adds ev to the run's backlog, in memory while there is room and
// no spooled event precedes it, else in the spool; with neither, it waits
// for room. It starts the drain goroutine if none runs.
func (h *Hub) enqueue(ctx context.Context, runID string, t *topic, ev Event) error {
	size := evSize(ev)
	h.roomMu.Lock()
	for {
		t.pmu.Lock()
		spooled := t.bl.spool != nil
		t.pmu.Unlock()
		if !spooled && h.memBytes+size <= h.dur.MemoryBytes {
			h.memBytes += size
			h.backlogEvents++
			h.roomMu.Unlock()
			t.pmu.Lock()
			t.bl.mem = append(t.bl.mem, ev)
			t.bl.memBytes += size
			t.pmu.Unlock()
			break
		}
		if h.dur.SpoolDir != "" && h.spoolBytes+size <= h.dur.SpoolBytes {
			h.roomMu.Unlock()
			t.pmu.Lock()
			n, err := t.spoolEvent(h.dur.SpoolDir, runID, ev)
			t.pmu.Unlock()
			h.roomMu.Lock()
			if err == nil {
				h.spoolBytes += n
				h.backlogEvents++
				h.roomMu.Unlock()
				break
			}
			h.log.Error("spool run event", "run_id", runID, "seq", ev.Seq, "err", err)
		}
		// No room anywhere: wait for the drain to make some.
		select {
		case <-h.stop:
			h.roomMu.Unlock()
			return fmt.Errorf("event %d of run %s: the store is unreachable and the backlog is full at shutdown", ev.Seq, runID)
		case <-ctx.Done():
			h.roomMu.Unlock()
			return ctx.Err()
		default:
		}
		h.room.Wait()
	}
	t.pmu.Lock()
	start := !t.bl.draining
	if start {
		t.bl.draining = true
		t.bl.drainDone = make(chan struct{})
	}
	t.pmu.Unlock()
	if start {
		h.drainWG.Go(func() { h.drain(runID, t) })
	}
	return nil
}

// spoolEvent appends ev to the run's spool file (creating it) and returns
// the bytes written. The caller holds t.pmu.
func (t *topic) spoolEvent(dir, runID string, ev Event) (int64, error) {
	if t.bl.spool == nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return 0, err
		}
		path := filepath.Join(dir, runID+spoolExt)
		w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o600)
		if err != nil {
			return 0, err
		}
		rf, err := os.Open(path)
		if err != nil {
			w.Close()
			return 0, err
		}
		t.bl.spool = &spoolFile{path: path, w: w, rf: rf, r: bufio.NewReaderSize(rf, 64<<10)}
	}
	b, err := json.Marshal(spoolRecord{RunID: ev.RunID, Seq: ev.Seq, Type: ev.Type, Time: ev.Time, Data: ev.Data, Raw: ev.Raw})
	if err != nil {
		return 0, err
	}
	b = append(b, '\n')
	if _, err := t.bl.spool.w.Write(b); err != nil {
		return 0, err
	}
	t.bl.spool.n++
	t.bl.spool.bytes += int64(len(b))
	return int64(len(b)), nil
}

// head returns the backlog's first event. The caller holds t.pmu.
func (t *topic) head() (Event, bool, error) {
	if len(t.bl.mem) > 0 {
		return t.bl.mem[0], true, nil
	}
	sp := t.bl.spool
	if sp == nil {
		return Event{}, false, nil
	}
	if sp.head == nil {
		line, err := sp.r.ReadBytes('\n')
		if err != nil {
			return Event{}, false, fmt.Errorf("read spool %s: %w", sp.path, err)
		}
		ev, err := decodeSpooled(line)
		if err != nil {
			return Event{}, false, fmt.Errorf("read spool %s: %w", sp.path, err)
		}
		sp.head = &ev
	}
	return *sp.head, true, nil
}

func decodeSpooled(line []byte) (Event, error) {
	var rec spoolRecord
	if err := json.Unmarshal(line, &rec); err != nil {
		return Event{}, err
	}
	return Event{RunID: rec.RunID, Seq: rec.Seq, Type: rec.Type, Time: rec.Time, Data: rec.Data, Raw: rec.Raw}, nil
}

// pop removes the head (now persisted) and returns the memory and spool
// bytes it frees. The caller holds t.pmu.
func (t *topic) pop(ev Event) (memFreed, spoolFreed int64) {
	t.bl.persisted = ev.Seq
	if len(t.bl.mem) > 0 {
		t.bl.mem[0] = Event{}
		t.bl.mem = t.bl.mem[1:]
		size := evSize(ev)
		t.bl.memBytes -= size
		if len(t.bl.mem) == 0 {
			t.bl.mem = nil
		}
		return size, 0
	}
	sp := t.bl.spool
	sp.head = nil
	sp.n--
	if sp.n > 0 {
		return 0, 0
	}
	sp.close(true)
	t.bl.spool = nil
	return 0, sp.bytes
}

func (sp *spoolFile) close(remove bool) {
	_ = sp.w.Close()
	_ = sp.rf.Close()
	if remove {
		_ = os.Remove(sp.path)
	}
}

// drain persists the run's backlog in order, retrying with backoff, until
// it is empty or the hub stops; on stop it spools what is still in memory
// for the next start (see RecoverSpool).
func (h *Hub) drain(runID string, t *topic) {
	wait := 50 * time.Millisecond
	failing := false
	for {
		t.pmu.Lock()
		ev, ok, err := t.head()
		if !ok && err == nil {
			t.bl.draining = false
			close(t.bl.drainDone)
			t.pmu.Unlock()
			h.drained(runID, t)
			if failing {
				h.log.Info("store took a run's waiting events", "run_id", runID)
			}
			return
		}
		t.pmu.Unlock()
		if err == nil {
			actx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
			err = h.store.AppendRunEvent(actx, ev)
			cancel()
			if errs.KindOf(err) == errs.Conflict {
				// Another event holds this seq (another replica closed the
				// run meanwhile): ours cannot be stored; say so loudly.
				h.log.Error("run event already taken in the store; not stored", "run_id", runID, "seq", ev.Seq, "err", err)
				err = nil
			}
		}
		if err == nil {
			t.pmu.Lock()
			mem, sp := t.pop(ev)
			t.pmu.Unlock()
			h.roomMu.Lock()
			h.memBytes -= mem
			h.spoolBytes -= sp
			h.backlogEvents--
			h.roomMu.Unlock()
			h.room.Broadcast()
			if h.feed != nil {
				h.notify(Notice{RunID: runID, Seq: ev.Seq})
			}
			wait = 50 * time.Millisecond
			continue
		}
		if !failing {
			h.log.Warn("store unreachable; run events wait", "run_id", runID, "seq", ev.Seq, "err", err)
			failing = true
		}
		timer := time.NewTimer(wait)
		select {
		case <-h.stop:
			timer.Stop()
			h.spill(runID, t)
			return
		case <-timer.C:
		}
		wait = min(2*wait, h.dur.RetryMax)
	}
}

// drained removes a closed run's topic once its backlog is in the store
// (Close keeps it so subscribers are served from memory until then).
func (h *Hub) drained(runID string, t *topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.mu.RLock()
	closed := t.closed
	t.mu.RUnlock()
	t.pmu.Lock()
	idle := t.bl.empty() && !t.bl.draining
	t.pmu.Unlock()
	if closed && idle && h.topics[runID] == t {
		delete(h.topics, runID)
	}
}

// spill writes the run's in-memory backlog and the rest of its spool to a
// fresh spool file, in order, for the next start to drain.
func (h *Hub) spill(runID string, t *topic) {
	t.pmu.Lock()
	defer t.pmu.Unlock()
	var evs []Event
	for {
		ev, ok, err := t.head()
		if err != nil || !ok {
			if err != nil {
				h.log.Error("read spool at shutdown", "run_id", runID, "err", err)
			}
			break
		}
		evs = append(evs, ev)
		t.pop(ev)
	}
	t.bl.draining = false
	close(t.bl.drainDone)
	if len(evs) == 0 {
		return
	}
	if h.dur.SpoolDir == "" {
		h.log.Error("the store is unreachable at shutdown and there is no spool: run events lost", "run_id", runID, "events", len(evs))
		return
	}
	for _, ev := range evs {
		if _, err := t.spoolEvent(h.dur.SpoolDir, runID, ev); err != nil {
			h.log.Error("spool run event at shutdown: events lost", "run_id", runID, "from_seq", ev.Seq, "err", err)
			break
		}
	}
	if t.bl.spool != nil {
		t.bl.spool.close(false)
		t.bl.spool = nil
	}
	h.log.Warn("the store is unreachable at shutdown: run events spooled for the next start", "run_id", runID, "events", len(evs))
}

// Flush waits until the run's events appended so far are in the store,
// or stop is closed, or ctx ends (and then says so).
func (h *Hub) Flush(ctx context.Context, runID string, stop <-chan struct{}) error {
	h.mu.Lock()
	t, ok := h.topics[runID]
	h.mu.Unlock()
	if !ok {
		return nil
	}
	for {
		t.pmu.Lock()
		draining, done := t.bl.draining, t.bl.drainDone
		t.pmu.Unlock()
		if !draining {
			return nil
		}
		select {
		case <-done:
		case <-stop:
			return fmt.Errorf("run %s: events still wait for the store", runID)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stop lets the runs' waiting events reach the store for up to
// Durability.DrainTimeout, then spools the rest for the next start.
// Call it after the runs ended.
func (h *Hub) Stop() {
	done := make(chan struct{})
	go func() { h.drainWG.Wait(); close(done) }()
	timer := time.NewTimer(h.dur.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
	h.stopOnce.Do(func() { close(h.stop) })
	h.roomMu.Lock()
	h.room.Broadcast()
	h.roomMu.Unlock()
	<-done
}

// RecoverSpool stores the events a previous process of this server
// spooled and could not store before it stopped (or died), in order,
// retrying until the store takes them or ctx ends; then removes the files.
// Call it before runs left active are marked interrupted, so their logs
// are whole before their done events.
func (h *Hub) RecoverSpool(ctx context.Context) error {
	if h.dur.SpoolDir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(h.dur.SpoolDir, "*"+spoolExt))
	if err != nil {
		return err
	}
	for _, path := range files {
		n, err := h.recoverFile(ctx, path)
		if err != nil {
			return fmt.Errorf("recover spooled run events from %s: %w", filepath.Base(path), err)
		}
		h.log.Info("stored spooled run events", "run_id", strings.TrimSuffix(filepath.Base(path), spoolExt), "events", n)
	}
	return nil
}

func (h *Hub) recoverFile(ctx context.Context, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	n := 0
	wait := 50 * time.Millisecond
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			// A partial last line was being written when the process died:
			// that event never reached a subscriber; nothing is lost.
			break
		}
		if err != nil {
			return n, err
		}
		ev, err := decodeSpooled(line)
		if err != nil {
			return n, err
		}
		for {
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			err = h.store.AppendRunEvent(actx, ev)
			cancel()
			if err == nil || errs.KindOf(err) == errs.Conflict {
				break
			}
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return n, ctx.Err()
			case <-timer.C:
			}
			wait = min(2*wait, h.dur.RetryMax)
		}
		n++
	}
	f.Close()
	return n, os.Remove(path)
}

// unpersisted returns the run's events after seq `after` that are not in
// the store yet (at most limit), from memory or the spool file, and
// whether `after` lies in the backlog at all.
func (t *topic) unpersisted(after int64, limit int) ([]Event, bool, error) {
	t.pmu.Lock()
	if after < t.bl.persisted {
		t.pmu.Unlock()
		return nil, false, nil
	}
	var out []Event
	for _, ev := range t.bl.mem {
		if ev.Seq > after && len(out) < limit {
			out = append(out, ev)
		}
	}
	var path string
	if t.bl.spool != nil && len(out) < limit {
		path = t.bl.spool.path
		_ = t.bl.spool.w.Sync()
	}
	t.pmu.Unlock()
	if path == "" {
		return out, true, nil
	}
	// A follower behind the spooled part: rare (it fell more than the
	// in-memory tail behind during an outage); read the file from the top.
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// Drained meanwhile: the store has what the file held (and what
		// memory held before it, if out is empty).
		return out, len(out) > 0, nil
	}
	if err != nil {
		return out, true, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for len(out) < limit {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break
		}
		ev, err := decodeSpooled(line)
		if err != nil {
			return out, true, err
		}
		if ev.Seq > after && (len(out) == 0 || ev.Seq == out[len(out)-1].Seq+1) {
			out = append(out, ev)
		}
	}
	return out, true, nil
}

// roomState is the Hub's accounting of backlog memory and spool.
type roomState struct {
	roomMu        sync.Mutex
	room          *sync.Cond // on roomMu: room was made, or the hub stops
	memBytes      int64
	spoolBytes    int64
	backlogEvents int
	stop          chan struct{}
	stopOnce      sync.Once
	drainWG       sync.WaitGroup
}
