package agent

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// redactor keeps a run's secrets (its gateway token, the key of direct
// mode, the values of its env) out of its token deltas. Each delta line is
// redacted on its own like every line, but a secret the model streams
// arrives cut across deltas; so for each block the redactor holds back the
// end of what it has seen while that end could be the start of a secret,
// redacts what it sends, and renumbers the offsets to the text it sent (a
// client appending deltas builds the redacted block). Held bytes go out
// with the next delta of their block or before the next other event.
type redactor struct {
	secrets [][]byte
	blocks  map[string]*heldBlock
	order   []string // blocks with held bytes, oldest first
}

type heldBlock struct {
	typ  string
	d    DeltaData // the last delta's fields (message, index, tool)
	sent int       // bytes sent
	held string
}

const redacted = "[REDACTED]"

func newRedactor(secrets [][]byte) *redactor {
	return &redactor{secrets: secrets, blocks: map[string]*heldBlock{}}
}

// redact replaces every secret in b.
func (r *redactor) redact(b []byte) []byte {
	for _, sec := range r.secrets {
		if bytes.Contains(b, sec) {
			b = bytes.ReplaceAll(b, sec, []byte(redacted))
		}
	}
	return b
}

// delta returns the delta to send for ev (ok false: nothing yet).
func (r *redactor) delta(ev Event) (Event, bool) {
	var d DeltaData
	if json.Unmarshal(ev.Data, &d) != nil {
		return ev, true
	}
	k := ev.Type + "/" + d.MessageID + "/" + strconv.Itoa(d.Index)
	b := r.blocks[k]
	if b == nil {
		b = &heldBlock{typ: ev.Type}
		r.blocks[k] = b
	}
	b.d = d
	u := string(r.redact([]byte(b.held + d.Text)))
	hold := r.prefixTail(u)
	if b.held == "" && hold > 0 {
		r.order = append(r.order, k)
	}
	b.held = u[len(u)-hold:]
	return r.out(b, ev, u[:len(u)-hold])
}

// flush returns the held ends of every block, as deltas, oldest first.
func (r *redactor) flush(now Event) []Event {
	var evs []Event
	for _, k := range r.order {
		b := r.blocks[k]
		if b == nil || b.held == "" {
			continue
		}
		text := b.held
		b.held = ""
		if ev, ok := r.out(b, Event{Type: b.typ, Time: now.Time}, text); ok {
			evs = append(evs, ev)
		}
	}
	r.order = r.order[:0]
	return evs
}

func (r *redactor) out(b *heldBlock, ev Event, text string) (Event, bool) {
	if text == "" {
		return ev, false
	}
	d := b.d
	d.Offset, d.Text = b.sent, text
	b.sent += len(text)
	ev.Data, _ = json.Marshal(d)
	// The delta's CLI line may hold part of a secret: its data is the
	// whole of what it says.
	ev.Raw = ""
	return ev, true
}

// prefixTail is the length of the longest end of s that is the start of a
// secret (shorter than the secret).
func (r *redactor) prefixTail(s string) int {
	best := 0
	for _, sec := range r.secrets {
		for n := min(len(sec)-1, len(s)); n > best; n-- {
			if strings.HasSuffix(s, string(sec[:n])) {
				best = n
				break
			}
		}
	}
	return best
}
