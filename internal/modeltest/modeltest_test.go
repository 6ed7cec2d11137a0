package modeltest_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/modeltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func post(t *testing.T, url string, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url+"/v1/messages?beta=true", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func sseEvents(t *testing.T, r io.Reader) []string {
	t.Helper()
	var evs []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			evs = append(evs, e)
		}
	}
	return evs
}

func TestWire(t *testing.T) {
	s := modeltest.New(t,
		modeltest.Text("hello"),
		modeltest.Bash("ls"),
		modeltest.HTTPError(529).Times(2),
		modeltest.MidstreamError(),
		modeltest.Text("fallback").WithUsage(modeltest.Usage{InputTokens: 7, OutputTokens: 3, CacheReadTokens: 5}),
	)
	stream := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"},{"role":"system","content":"odd role"}]}`

	resp := post(t, s.URL, stream)
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Fatalf("content type %q", got)
	}
	want := []string{"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
	if d := cmp.Diff(want, sseEvents(t, resp.Body)); d != "" {
		t.Errorf("text stream (-want +got):\n%s", d)
	}

	resp = post(t, s.URL, stream)
	evs := sseEvents(t, resp.Body)
	if !strings.Contains(strings.Join(evs, ","), "content_block_delta,content_block_stop,content_block_start,content_block_delta") {
		t.Errorf("tool stream events: %v", evs)
	}

	for range 2 {
		resp = post(t, s.URL, stream)
		if resp.StatusCode != 529 {
			t.Errorf("got status %d, want 529", resp.StatusCode)
		}
	}
	resp = post(t, s.URL, stream)
	if d := cmp.Diff([]string{"message_start", "error"}, sseEvents(t, resp.Body)); d != "" {
		t.Errorf("midstream (-want +got):\n%s", d)
	}

	resp = post(t, s.URL, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	var msg struct {
		Content []struct{ Text string } `json:"content"`
		Usage   modeltest.Usage         `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "fallback" {
		t.Errorf("non-streaming content %+v", msg.Content)
	}

	req, _ := http.NewRequest(http.MethodHead, s.URL+"/", nil)
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()

	reqs := s.Requests()
	if len(reqs) != 7 || reqs[0].Messages[1].Role != "system" || reqs[6].Method != "HEAD" {
		t.Fatalf("request log: %d entries", len(reqs))
	}
	// 100+100 input, 20+20 output from the two full streams, 100 input and
	// 1 output from the mid-stream message_start, 7/3/5 from the JSON answer.
	wantUsage := modeltest.Usage{InputTokens: 307, OutputTokens: 44, CacheReadTokens: 5}
	if d := cmp.Diff(wantUsage, s.Reported()); d != "" {
		t.Errorf("reported usage (-want +got):\n%s", d)
	}
}

// TestRealCLI drives the real Claude Code CLI straight at the server (no
// sandbox, no gateway): the baseline the agent tests build on.
func TestRealCLI(t *testing.T) {
	bin := modeltest.ClaudeBin(t)
	s := modeltest.New(t, modeltest.Text("Hello from modeltest."))
	dir := t.TempDir()
	cmd := exec.Command(bin, "-p", "--output-format", "stream-json", "--verbose", "--", "-say hi")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "CLAUDE_CONFIG_DIR=" + dir + "/.claude",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "ANTHROPIC_BASE_URL=" + s.URL, "ANTHROPIC_API_KEY=k"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("claude: %v\n%s", err, stderr.String())
	}
	if !bytes.Contains(out, []byte(`"result":"Hello from modeltest."`)) {
		t.Errorf("stdout has no result line:\n%s", out)
	}
	reqs := s.MessageRequests()
	if len(reqs) != 1 || !reqs[0].Stream {
		t.Fatalf("got %d message requests, want 1 streaming", len(reqs))
	}
	if !strings.Contains(reqs[0].Text(), "-say hi") {
		t.Errorf("the prompt after -- did not reach the model")
	}
	if reqs[0].Header.Get("x-api-key") != "k" {
		t.Errorf("x-api-key not passed")
	}
	_ = os.RemoveAll(dir)
}
