package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/store/pgserver"
)

var (
	buildOnce sync.Once
	serverBin string
	buildErr  error
)

// buildServer builds this command once for the tests that run it as a
// process of its own (to kill it).
func buildServer(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "techboss-server-bin-")
		if err != nil {
			buildErr = err
			return
		}
		serverBin = filepath.Join(dir, "server")
		// The version flag the Makefile passes (see TestBuildVersion).
		out, err := exec.Command("go", "build", "-ldflags", "-X main.buildVersion="+testBuildVersion, "-o", serverBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return serverBin
}

const testBuildVersion = "v0.0.0-test.1"

// The binary reports the version the build gave it (the Makefile's
// -X main.buildVersion), not "dev".
func TestBuildVersion(t *testing.T) {
	p := startProc(t, map[string]string{"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir()})
	defer p.stop()
	resp, err := http.Get(p.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Data struct{ Version string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if h.Data.Version != testBuildVersion {
		t.Fatalf("version = %q, want %q", h.Data.Version, testBuildVersion)
	}
}

// proc is the server run as a process of its own.
type proc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{} // closed when it exited
	logs *bytes.Buffer // guarded by mu
	mu   *sync.Mutex
}

// stop stops the server with SIGTERM (SIGKILL after a minute).
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startProc starts the server binary with env only (plus PATH and HOME)
// and waits until it listens. The caller stops it.
func startProc(t *testing.T, env map[string]string) *proc {
	t.Helper()
	bin := buildServer(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TECHBOSS_SANDBOX_INIT=" + sandboxInit}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if !sent && json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
				sent = true
			}
		}
		_ = cmd.Wait()
		close(p.done)
		if !sent {
			close(addr)
		}
	}()
	a, ok := <-addr
	if !ok {
		t.Fatalf("server did not start:\n%s", p.log())
	}
	p.url = "http://" + a
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// kill9 kills the server process outright.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// toolMarker is the long command the agent's Bash tool runs in
// TestKill9WithSpooledEvents; nothing else on the machine runs it.
const toolMarker = "timeout 3117 tail -f /dev/null"

// hostHas reports whether a process on this machine runs toolMarker.
func hostHas() bool {
	ms, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range ms {
		if b, _ := os.ReadFile(m); strings.Contains(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), toolMarker) {
			return true
		}
	}
	return false
}

type wireEvent struct {
	Seq  int64           `json:"seq"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// TestKill9WithSpooledEvents kills the server (SIGKILL, a process of its
// own) in the middle of a real Claude run while its database is down, so
// that the run's later events exist only in the spool under the data dir.
// The next start, with the database back, must store every spooled event,
// in order and once, before it ends the run as interrupted (its done event
// last), and the processes the run started in the sandbox must be gone:
// the CLI, the command its Bash tool runs (in a session of its own) and a
// job an earlier tool call left in the background.
func TestKill9WithSpooledEvents(t *testing.T) {
	claudeBin := modeltest.ClaudeBin(t)
	pg := pgserver.Start(t)
	model := modeltest.New(t,
		modeltest.Bash("echo first tool"),
		// A job in the background: the tool's shell exits and leaves it
		// behind, outside the CLI's process tree.
		modeltest.Bash(toolMarker+" > /dev/null 2>&1 &"),
		modeltest.Bash("timeout 3200 tail -f /dev/null; echo slept"), // the run goes on meanwhile (the CLI blocks a long sleep)
		modeltest.Text("never reached"),
	)
	dataDir := t.TempDir()
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": dataDir, "DATABASE_URL": pg.URL,
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "sk-ant-upstream-kill9",
		"TECHBOSS_CLAUDE_BIN": claudeBin,
	}
	// Servers stop at cleanup after the sandbox is terminated through the
	// live one (cleanups run last-registered first).
	var servers []*proc
	t.Cleanup(func() {
		for _, p := range servers {
			p.stop()
		}
		http.DefaultClient.CloseIdleConnections()
		if t.Failed() {
			for i, p := range servers {
				t.Logf("server %d log:\n%s", i+1, p.log())
			}
		}
	})
	a := startProc(t, env)
	servers = append(servers, a)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, _ := client.New(a.url)
	if _, err := c.Login(ctx, "admin@example.com", "bootstrap-password-1"); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "kill9")
	if err != nil {
		t.Fatal(err)
	}
	base := a.url
	call := func(method, path, body string) *http.Response {
		t.Helper()
		return bearerCall(t, ctx, tok.Token, method, base+path, body)
	}
	var created struct {
		Data struct {
			ID string `json:"sandbox_id"`
		} `json:"data"`
	}
	res := call("POST", "/sandbox", `{"image_base":"host"}`)
	if err := json.NewDecoder(res.Body).Decode(&created); err != nil || res.StatusCode != 200 {
		t.Fatalf("create: %d %v", res.StatusCode, err)
	}
	res.Body.Close()
	id := created.Data.ID
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", base+"/sandbox/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	})

	// The run's own stream, read as it comes (from memory while the
	// database is down).
	res = call("POST", "/sandbox/"+id+"/claude?format=ndjson", `{"prompt":"run the tools"}`)
	runID := res.Header.Get("X-Run-ID")
	if res.StatusCode != 200 || runID == "" {
		t.Fatalf("claude: %d, run %q", res.StatusCode, runID)
	}
	live := make(chan wireEvent, 1000)
	go func() {
		defer close(live)
		dec := json.NewDecoder(res.Body)
		for {
			var ev wireEvent
			if dec.Decode(&ev) != nil {
				return
			}
			live <- ev
		}
	}()
	var seen []wireEvent
	until := func(what string, ok func(wireEvent) bool) {
		t.Helper()
		for ev := range live {
			seen = append(seen, ev)
			if ok(ev) {
				return
			}
		}
		t.Fatalf("the stream ended before %s: %v", what, seen)
	}
	until("the run started", func(ev wireEvent) bool { return ev.Type == "run.started" })
	pg.Stop()
	// The first tool's result and the second tool's call are published
	// from memory and wait in the spool.
	until("the long tool's call", func(ev wireEvent) bool {
		return ev.Type == "tool_use" && bytes.Contains(ev.Data, []byte("timeout 3200"))
	})
	for !hostHas() {
		if ctx.Err() != nil {
			t.Fatal("the Bash tool never started its command")
		}
		time.Sleep(50 * time.Millisecond)
	}
	spooled, _ := filepath.Glob(filepath.Join(dataDir, "run-events", "*.events"))
	if len(spooled) == 0 {
		t.Fatalf("no spool file under the data dir while the database is down")
	}
	// The gateway records a call's usage once the call's answer has been
	// read to its end, then adds a usage event to the run; the calls
	// before the one that runs the long tool are done: wait for theirs.
	// Each record is stored or spooled by the time its event is out.
	gatewayUsage := func() int {
		n := 0
		for _, ev := range seen {
			if ev.Type == "usage" && bytes.Contains(ev.Data, []byte(`"source":"gateway"`)) {
				n++
			}
		}
		return n
	}
	for gatewayUsage() < len(model.MessageRequests())-1 {
		until("a gateway usage event", func(ev wireEvent) bool { return ev.Type == "usage" })
	}
	recorded := gatewayUsage()
	a.kill9(t)
	res.Body.Close()
	for range live { // whatever was in flight
	}
	pg.Start()

	b := startProc(t, env)
	servers = append(servers, b)
	base = b.url
	res = call("GET", "/runs/"+runID+"/events?format=ndjson", "")
	var stored []wireEvent
	dec := json.NewDecoder(res.Body)
	for {
		var ev wireEvent
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("read the run's events after the restart: %v", err)
		}
		stored = append(stored, ev)
	}
	res.Body.Close()
	for i, ev := range stored {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: gap, duplicate or reorder in %v", i, ev.Seq, stored)
		}
	}
	if len(stored) < len(seen)+1 {
		t.Fatalf("%d events stored, %d seen live before the kill: %v", len(stored), len(seen), stored)
	}
	for i, ev := range seen {
		if st := stored[i]; st.Seq != ev.Seq || st.Type != ev.Type || !bytes.Equal(st.Data, ev.Data) {
			t.Fatalf("stored event %d = %d %s %s, seen live as %d %s %s", i, st.Seq, st.Type, st.Data, ev.Seq, ev.Type, ev.Data)
		}
	}
	last := stored[len(stored)-1]
	if last.Type != "done" || !bytes.Contains(last.Data, []byte(`"status":"interrupted"`)) {
		t.Fatalf("last event %d %s %s, want done with status interrupted", last.Seq, last.Type, last.Data)
	}
	var run struct {
		Data struct {
			Status  string `json:"status"`
			LastSeq int64  `json:"last_seq"`
		} `json:"data"`
	}
	res = call("GET", "/runs/"+runID, "")
	if err := json.NewDecoder(res.Body).Decode(&run); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if run.Data.Status != "interrupted" || run.Data.LastSeq != last.Seq {
		t.Errorf("run = %+v, want interrupted with last_seq %d", run.Data, last.Seq)
	}
	// The gateway's usage records of the model calls made while the
	// database was down were written ahead to the spool and stored by the
	// next start (the call in flight at the kill may have none).
	var usage struct {
		Data struct {
			Total struct {
				Requests int `json:"requests"`
			} `json:"total"`
		} `json:"data"`
	}
	res = call("GET", "/usage?group_by=model", "")
	if err := json.NewDecoder(res.Body).Decode(&usage); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := usage.Data.Total.Requests; got < recorded || got > len(model.MessageRequests()) {
		t.Errorf("%d usage records after the restart; the server had recorded %d before it was killed (of %d model calls)", got, recorded, len(model.MessageRequests()))
	}
	if left, _ := filepath.Glob(filepath.Join(dataDir, "run-events", "*")); len(left) != 0 {
		t.Errorf("spool files left after the restart: %v", left)
	}

	// Nothing the run started runs in the sandbox any more.
	bc, _ := client.New(b.url, client.WithToken(tok.Token))
	var out *client.ExecResult
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err = bc.Exec(ctx, id, client.ExecRequest{Command: []string{"sh", "-c",
			`for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); [ -n "$c" ] && echo "$c"; done; true`}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out.Stdout), toolMarker) && !strings.Contains(string(out.Stdout), "timeout 3200") && !strings.Contains(string(out.Stdout), "claude") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes the run started still run in the sandbox after the restart:\n%s", out.Stdout)
		}
	}
}
