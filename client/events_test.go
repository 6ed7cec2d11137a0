package client

import (
	"strings"
	"testing"
)

func TestReadEvents(t *testing.T) {
	in := ": ping\n\nevent: stdout\ndata: {\"data\":\"a\"}\n\nevent: exit\ndata: line1\ndata: line2\n\ndata: no-event\n\n"
	var got []string
	if err := readEvents(strings.NewReader(in), func(ev string, data []byte) error {
		got = append(got, ev+"|"+string(data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{`stdout|{"data":"a"}`, "exit|line1\nline2", "|no-event"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// CRLF line ends, a line longer than the reader's buffer, a comment, a
// field without a colon, and a last event cut off without its blank line.
func TestReadEventsLines(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	in := "event: a\r\ndata: 1\r\n\r\n: note\nevent: b\ndata: " + long + "\ndata\n\nevent: c\ndata: cut"
	var got []string
	if err := readEvents(strings.NewReader(in), func(ev string, data []byte) error {
		got = append(got, ev+"|"+string(data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"a|1", "b|" + long + "\n"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("got %d events %.40q, want %d", len(got), got, len(want))
	}
}

func FuzzReadEvents(f *testing.F) {
	f.Add("event: stdout\ndata: {}\n\n")
	f.Add("data: x\r\ndata:\n\n:c\n")
	f.Add("event: exit\n")
	f.Fuzz(func(t *testing.T, s string) {
		_ = readEvents(strings.NewReader(s), func(ev string, data []byte) error {
			if strings.ContainsAny(ev, "\n") {
				t.Fatalf("event name %q holds a newline", ev)
			}
			return nil
		})
	})
}
