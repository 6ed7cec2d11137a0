package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// textOutputOf rebuilds one stream's bytes from text-form events
// (?format=text): data lines joined with "\n", or base64 in <name>_b64.
func textOutputOf(t *testing.T, evs []sseEvent, stream string) (out []byte, b64 int) {
	t.Helper()
	for _, ev := range evs {
		switch ev.event {
		case stream:
			out = append(out, ev.data...)
		case stream + "_b64":
			b, err := base64.StdEncoding.DecodeString(ev.data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
			b64++
		}
	}
	return out, b64
}

func TestAppendTextEvent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		b64  bool
		want string
	}{
		{"hello\n", false, "event: stdout\ndata: hello\ndata: \n\n"},
		{"a\nb", false, "event: stdout\ndata: a\ndata: b\n\n"},
		{" lead\n\n", false, "event: stdout\ndata:  lead\ndata: \ndata: \n\n"},
		{"héllo", false, "event: stdout\ndata: héllo\n\n"},
		{"cr\r\n", true, ""},
		{"nul\x00", true, ""},
		{"\xff\xfe", true, ""},
	} {
		got := string(appendTextEvent(nil, "stdout", []byte(tc.in)))
		if tc.b64 {
			want := "event: stdout_b64\ndata: " + base64.StdEncoding.EncodeToString([]byte(tc.in)) + "\n\n"
			if got != want {
				t.Errorf("%q: got %q, want %q", tc.in, got, want)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
		evs := readSSE(t, strings.NewReader(got))
		if out, _ := textOutputOf(t, evs, "stdout"); string(out) != tc.in {
			t.Errorf("%q: a client rebuilds %q", tc.in, out)
		}
	}
}

// The text SSE form of exec (?format=text): text as plain data lines (no
// JSON), anything else as base64 events, the exit event as before; the
// bytes a client rebuilds are exactly the command's.
func TestExecTextSSE(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	script := `printf 'line one\n  indented\n\nno newline'; printf 'err\n' >&2; sleep 0.2; printf 'bin\000\377\r\n'; seq 1 20000; exit 3`
	j, _ := json.Marshal(map[string]any{"command": []string{"sh", "-c", script}})
	req, _ := http.NewRequest("POST", h.srv.URL+"/sandbox/"+id+"/exec?format=text", bytes.NewReader(j))
	res, err := h.alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("exec: %d %s", res.StatusCode, b)
	}
	if f := res.Header.Get("X-Exec-Format"); f != "text" {
		t.Errorf("X-Exec-Format %q, want text", f)
	}
	evs := readSSE(t, res.Body)
	var seq strings.Builder
	for i := 1; i <= 20000; i++ {
		seq.WriteString(strconv.Itoa(i) + "\n")
	}
	want := "line one\n  indented\n\nno newline" + "bin\x00\xff\r\n" + seq.String()
	out, b64 := textOutputOf(t, evs, "stdout")
	if string(out) != want {
		t.Fatalf("stdout rebuilt as %d bytes, want %d (first diff near %q)", len(out), len(want), firstDiff(string(out), want))
	}
	if b64 == 0 {
		t.Error("the binary chunk did not come as a stdout_b64 event")
	}
	for _, ev := range evs {
		if ev.event == "stdout" && strings.HasPrefix(ev.data, `{"data"`) {
			t.Fatalf("a text event holds JSON: %q", ev.data)
		}
	}
	if errOut, _ := textOutputOf(t, evs, "stderr"); string(errOut) != "err\n" {
		t.Errorf("stderr %q", errOut)
	}
	if e := exitOfEvents(t, evs); e.ExitCode != 3 {
		t.Errorf("exit %+v", e)
	}
}

func firstDiff(a, b string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[max(0, i-20):min(len(a), i+20)]
		}
	}
	return "(one is a prefix of the other)"
}
