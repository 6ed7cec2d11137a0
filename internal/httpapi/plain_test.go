package httpapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/agent"
)

// The plain form sends the model's text a line at a time as deltas
// complete lines, and the whole block adds only what is left; a client
// resuming at any event gets every line exactly once after its resume
// point and nothing it had.
func TestPlainLinesFromDeltas(t *testing.T) {
	const text = "first line\nsecond line\n\nfourth, no newline"
	evs := []agent.Event{agent.NewEvent(agent.TypeStarted, agent.StartedData{}, "")}
	for _, piece := range []string{"first li", "ne\nsecond", " line\n", "\nfourth,", " no newline"} {
		evs = append(evs, agent.NewEvent(agent.TypeTextDelta, agent.DeltaData{MessageID: "m1", Offset: offsetOf(evs), Text: piece}, ""))
	}
	evs = append(evs, agent.NewEvent(agent.TypeText, agent.TextData{Text: text, MessageID: "m1", Streamed: true}, ""))
	evs = append(evs, agent.NewEvent(agent.TypeDone, struct{}{}, ""))

	// Which SSE events each event produced, from the start.
	p := &plain{}
	var sent []string
	for i, ev := range evs {
		if l, ok := p.line(ev); ok {
			sent = append(sent, l)
			if i == 2 && l != "first line" {
				t.Errorf("the first complete line went out as %q with the delta that completed it", l)
			}
		}
	}
	want := []string{"first line", "second line", "", "fourth, no newline", "[DONE]"}
	if strings.Join(sent, "|") != strings.Join(want, "|") {
		t.Fatalf("plain from the start: %q, want %q", sent, want)
	}
	// Resuming after every event: the lines sent before plus the lines
	// sent after make the whole text once.
	for resume := 1; resume < len(evs); resume++ {
		var before, after []string
		p := &plain{}
		for _, ev := range evs[:resume] {
			if l, ok := p.line(ev); ok {
				before = append(before, l)
			}
		}
		p = &plain{}
		for _, ev := range evs[resume:] {
			if l, ok := p.line(ev); ok {
				after = append(after, l)
			}
		}
		got := strings.Join(append(before, after...), "\n")
		if got != text+"\n[DONE]" {
			t.Errorf("resumed after event %d: %q then %q, want the text once", resume, before, after)
		}
	}
}

func offsetOf(evs []agent.Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == agent.TypeTextDelta {
			var d agent.DeltaData
			_ = json.Unmarshal(ev.Data, &d)
			n += len(d.Text)
		}
	}
	return n
}
