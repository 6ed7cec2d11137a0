package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sync"
	"time"
)

// readOutput parses the CLI's stdout line by line and appends the events.
// It always drains the pipe, so the CLI never blocks on a full pipe.
//
// Token deltas are coalesced (Config.DeltaWindow): a delta that follows a
// quiet window goes out at once, so the first token is not delayed; the
// deltas of the same block that follow within the window are merged into
// one event at its end. A run streaming 100 tokens a second is then at
// most 20 delta events a second, whatever its number of followers; any
// other event first sends the delta it waits behind, so order is kept.
func (s *Service) readOutput(ctx context.Context, j *job, r io.Reader, log *slog.Logger) {
	o := &output{s: s, j: j, ctx: ctx, log: log, parser: s.cli.NewParser(), window: s.cfg.DeltaWindow}
	if o.window == 0 {
		o.window = 50 * time.Millisecond
	}
	// The agent may print its own credentials (a tool running `env`):
	// they never reach the event log.
	var settings struct {
		Env map[string]string `json:"env"` // settings may set variables too
	}
	_ = json.Unmarshal(j.run.Options.Settings, &settings)
	var secrets [][]byte
	for _, sec := range slices.Concat([]string{j.token, s.apiKey(j)}, slices.Collect(maps.Values(j.run.Options.Env)),
		slices.Collect(maps.Values(settings.Env)), j.revealed) {
		if len(sec) >= 8 {
			secrets = append(secrets, []byte(sec))
		}
	}
	o.secrets, o.red = secrets, newRedactor(secrets)
	// The CLI's errors name the address it called: in gateway mode that is
	// the gateway's listener inside the sandbox, which tells a user
	// nothing (the gateway's own answer names the real upstream).
	if s.cfg.Credentials != CredentialsDirect {
		if u, err := url.Parse(j.baseURL); err == nil && u.Host != "" {
			o.gwHost = []byte(u.Host)
		}
	}
	o.timer = time.AfterFunc(time.Hour, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.append(time.Now(), o.flush(nil))
	})
	o.timer.Stop()
	// Lines are read and published on this goroutine: a lone delta after
	// a quiet spell goes out without waking another one first.
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br, 16<<20)
		if len(line) > 0 {
			o.mu.Lock()
			o.line(line)
			o.mu.Unlock()
		}
		if err != nil {
			o.mu.Lock()
			o.timer.Stop()
			out := o.flush(nil)
			out = append(out, o.red.flush(Event{Time: s.now().UTC()})...)
			o.append(time.Now(), out)
			o.mu.Unlock()
			return
		}
	}
}

// output is one run's output being published (readOutput).
type output struct {
	s       *Service
	j       *job
	ctx     context.Context
	log     *slog.Logger
	parser  Parser
	secrets [][]byte
	gwHost  []byte
	red     *redactor
	window  time.Duration
	timer   *time.Timer // ends a window: appends the merged deltas

	mu        sync.Mutex // orders lines and the timer, which both append
	pending   *Event     // merged deltas waiting for the window to end
	lastDelta time.Time  // when a delta event was last appended
}

// line parses one line and appends its events.
func (o *output) line(line []byte) {
	t0 := time.Now()
	for _, sec := range o.secrets {
		if bytes.Contains(line, sec) {
			line = bytes.ReplaceAll(line, sec, []byte("[REDACTED]"))
		}
	}
	evs := o.parser.Parse(line)
	now := o.s.now().UTC()
	for i := range evs {
		evs[i].Time = now
		if o.gwHost != nil && (evs[i].Type == TypeError || evs[i].Type == TypeResult || evs[i].Type == TypeRetry) {
			evs[i].Data = bytes.ReplaceAll(evs[i].Data, o.gwHost, []byte(gatewayName))
		}
	}
	o.s.observe(o.j, evs)
	var out []Event
	for _, ev := range evs {
		if !isDelta(ev.Type) {
			// Held ends of deltas go first, in order.
			for _, held := range o.red.flush(ev) {
				if o.pending != nil && mergeDelta(o.pending, held) {
					continue
				}
				out = append(o.flush(out), held)
			}
		} else {
			var ok bool
			if ev, ok = o.red.delta(ev); !ok {
				continue
			}
		}
		if !isDelta(ev.Type) || o.window < 0 {
			out = append(o.flush(out), ev)
			continue
		}
		if o.pending != nil && mergeDelta(o.pending, ev) {
			continue
		}
		out = o.flush(out)
		if time.Since(o.lastDelta) >= o.window {
			out = append(out, ev)
			o.lastDelta = time.Now()
			continue
		}
		ev := ev
		o.pending = &ev
		o.timer.Reset(o.window - time.Since(o.lastDelta))
	}
	o.append(t0, out)
}

// flush moves the merged deltas, if any, to out.
func (o *output) flush(out []Event) []Event {
	if o.pending != nil {
		out = append(out, *o.pending)
		o.pending = nil
		o.lastDelta = time.Now()
	}
	return out
}

// append appends evs to the run's log, unless an append failed before.
func (o *output) append(t0 time.Time, evs []Event) {
	j := o.j
	j.mu.Lock()
	failed := j.appendError != nil
	j.mu.Unlock()
	if len(evs) == 0 || failed {
		return
	}
	if _, err := o.s.hub.Append(o.ctx, j.run.ID, evs...); err != nil {
		o.log.Error("append run events", "err", err)
		j.mu.Lock()
		j.appendError = err
		j.mu.Unlock()
		return
	}
	o.s.m.publish.Observe(time.Since(t0).Seconds())
}

// gatewayName replaces the gateway's in-sandbox address in the CLI's errors.
const gatewayName = "the TechBoss LLM gateway"

// isDelta reports whether typ is a token delta (coalesced by readOutput).
func isDelta(typ string) bool {
	return typ == TypeTextDelta || typ == TypeThinkingDelta || typ == TypeToolInputDelta
}

// mergeDelta appends ev to p when it continues p's block (same type,
// message, index, and offset where p ends) and reports whether it did.
// The merged event keeps every raw line, one per line.
func mergeDelta(p *Event, ev Event) bool {
	if p.Type != ev.Type {
		return false
	}
	var a, b DeltaData
	if json.Unmarshal(p.Data, &a) != nil || json.Unmarshal(ev.Data, &b) != nil {
		return false
	}
	if a.MessageID != b.MessageID || a.Index != b.Index || a.Offset+len(a.Text) != b.Offset {
		return false
	}
	a.Text += b.Text
	data, err := json.Marshal(a)
	if err != nil {
		return false
	}
	p.Data = data
	if ev.Raw != "" {
		if p.Raw != "" {
			p.Raw += "\n"
		}
		p.Raw += ev.Raw
	}
	return true
}
