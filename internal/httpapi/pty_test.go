package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local/agent"
)

// term is a test client of GET /sandbox/{id}/pty.
type term struct {
	t      *testing.T
	c      *websocket.Conn
	id     string
	out    bytes.Buffer
	exit   *int
	closed error // why reading stopped
}

// dialPTY opens the terminal WebSocket; query is appended to the URL.
func (h *sbHarness) dialPTY(c *http.Client, sbID, query string, hdr ...string) (*term, *http.Response, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/sandbox/" + sbID + "/pty" + query
	opts := &websocket.DialOptions{HTTPClient: c, HTTPHeader: http.Header{}}
	for i := 0; i+1 < len(hdr); i += 2 {
		opts.HTTPHeader.Set(hdr[i], hdr[i+1])
	}
	wc, res, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return nil, res, err
	}
	wc.SetReadLimit(4 << 20)
	tm := &term{t: h.t, c: wc}
	h.t.Cleanup(func() { _ = wc.CloseNow() })
	typ, b, err := wc.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		h.t.Fatalf("first frame: %v %s", err, b)
	}
	var ctl ptyControl
	if err := json.Unmarshal(b, &ctl); err != nil || ctl.Type != "session" || !strings.HasPrefix(ctl.SessionID, "pty_") {
		h.t.Fatalf("first frame %s, want a session message", b)
	}
	tm.id = ctl.SessionID
	return tm, res, nil
}

func (h *sbHarness) mustDialPTY(c *http.Client, sbID, query string) *term {
	h.t.Helper()
	tm, res, err := h.dialPTY(c, sbID, query)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		h.t.Fatalf("dial pty: %v (status %d)", err, status)
	}
	return tm
}

func (tm *term) send(s string) {
	tm.t.Helper()
	if err := tm.c.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		tm.t.Fatalf("send %q: %v", s, err)
	}
}

func (tm *term) resize(cols, rows int) {
	tm.t.Helper()
	b, _ := json.Marshal(map[string]any{"type": "resize", "cols": cols, "rows": rows})
	if err := tm.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		tm.t.Fatal(err)
	}
}

// readOne reads one message into the transcript; false once the
// connection ended.
func (tm *term) readOne(ctx context.Context) bool {
	if tm.closed != nil {
		return false
	}
	typ, b, err := tm.c.Read(ctx)
	if err != nil {
		tm.closed = err
		return false
	}
	if typ == websocket.MessageBinary {
		tm.out.Write(b)
		return true
	}
	var ctl ptyControl
	if err := json.Unmarshal(b, &ctl); err != nil {
		tm.t.Fatalf("control frame %q: %v", b, err)
	}
	if ctl.Type == "exit" {
		tm.exit = ctl.ExitCode
	}
	return true
}

// waitFor reads until the output contains want (the deadline only bounds
// a hung test).
func (tm *term) waitFor(want string) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for !bytes.Contains(tm.out.Bytes(), []byte(want)) {
		if !tm.readOne(ctx) {
			tm.t.Fatalf("connection ended (%v) before %q; output:\n%q", tm.closed, want, tm.out.String())
		}
	}
}

// waitEnd reads until the connection ends.
func (tm *term) waitEnd() {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for tm.readOne(ctx) {
	}
	if ctx.Err() != nil {
		tm.t.Fatalf("connection still open; output:\n%q", tm.out.String())
	}
}

func (h *sbHarness) ptySessions(c *http.Client, sbID string) []sandbox.PTYSession {
	h.t.Helper()
	var out ptySessionsResponse
	r := h.do(c, "GET", "/sandbox/"+sbID+"/pty/sessions", nil)
	wantStatus(h.t, r, http.StatusOK)
	r.data(h.t, &out)
	return out.Sessions
}

// TestPTYShell: the image user's login shell on a real terminal inside a
// sandbox without network, in /workspace, resized by the control message,
// ending with its exit code.
func TestPTYShell(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	testPTYShell(t, h)
}

// TestPTYShellRunsc is TestPTYShell under gVisor.
func TestPTYShellRunsc(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil, withRunsc(t))
	testPTYShell(t, h)
}

func testPTYShell(t *testing.T, h *sbHarness) {
	id := h.createSandbox(h.alice, map[string]any{"network": "none"})
	tm := h.mustDialPTY(h.alice, id, "?cols=90&rows=30")
	tm.send("tty; pwd; echo T=$TERM\r")
	tm.waitFor("T=xterm-256color")
	out := tm.out.String()
	if !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "/workspace\r\n") {
		t.Fatalf("tty and pwd: %q", out)
	}
	tm.send("stty size\r")
	tm.waitFor("30 90\r\n")
	tm.resize(132, 41)
	tm.send("stty size\r")
	tm.waitFor("41 132\r\n")
	list := h.ptySessions(h.alice, id)
	if len(list) != 1 || list[0].SessionID != tm.id || list[0].Attached != 1 || list[0].Cols != 132 || list[0].Rows != 41 || len(list[0].Command) == 0 {
		t.Fatalf("sessions %+v, want %s attached once at 132x41", list, tm.id)
	}
	// ^C reaches the foreground job: the terminal is the shell's controlling
	// one. The job prints the marker itself, so it runs (exec'd, in the
	// terminal's foreground group: the shell hands that over before the
	// exec) when ^C is sent. With sh -c 'echo MARK; sleep 1000' the ^C
	// could arrive while sh was still starting sleep: sh (dash), as on any
	// terminal, then puts the SIGINT off until its child ends, and sleep,
	// not yet there, never gets one. Its status 130 (128+SIGINT) shows the
	// signal ended it.
	tm.send("echo SLEE\"\"PING > int.txt; tail -f int.txt\r")
	tm.waitFor("SLEEPING\r\n")
	tm.send("\x03")
	tm.send("echo INT=$?\r")
	tm.waitFor("INT=130\r\n") // fails (after its minute) if this ^C did not end the job
	// A job left in the background ends with the session.
	tm.send("sleep 4243 & exit 7\r")
	tm.waitEnd()
	if tm.exit == nil || *tm.exit != 7 {
		t.Fatalf("exit %v, want 7; output %q", tm.exit, tm.out.String())
	}
	h.waitNoProcess(id, "sleep 424[3]")
	var ce websocket.CloseError
	if !errors.As(tm.closed, &ce) || ce.Code != websocket.StatusNormalClosure {
		t.Errorf("closed with %v, want a normal closure", tm.closed)
	}
	if list := h.ptySessions(h.alice, id); len(list) != 0 {
		t.Errorf("sessions after exit: %+v", list)
	}
}

// TestPTYFullScreen: vim draws on the alternate screen, takes keystrokes
// and writes the file.
func TestPTYFullScreen(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	tm := h.mustDialPTY(h.alice, id, "?cols=80&rows=24")
	tm.send("vim -u NONE -N /workspace/v.txt; echo VIM\"\"-DONE\r")
	tm.waitFor("\x1b[?1049h") // xterm's alternate screen: a full-screen program
	tm.send("ihello from vim\x1b:wq\r")
	tm.waitFor("VIM-DONE\r\n")
	r := h.do(h.alice, "GET", "/sandbox/"+id+"/files/v.txt", nil)
	if r.status != http.StatusOK || string(r.body) != "hello from vim\n" {
		t.Fatalf("file vim wrote: %d %q", r.status, r.body)
	}
}

// TestPTYBinary: every byte value through the terminal both ways, in raw mode.
func TestPTYBinary(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	wantStatus(t, h.do(h.alice, "PUT", "/sandbox/"+id+"/files/all.bin", string(all)), http.StatusOK)
	tm := h.mustDialPTY(h.alice, id, "")
	// Out: the file's bytes arrive unchanged (no output processing). The
	// markers are quoted so that the echoed command line does not match.
	tm.send("stty raw -echo -iexten; echo BEG\"\"IN; cat /workspace/all.bin; echo EN\"\"D; stty sane\r")
	tm.waitFor("END")
	if !bytes.Contains(tm.out.Bytes(), all) {
		t.Fatalf("output lacks the 256 byte values: %q", tm.out.String())
	}
	// In: keystrokes of every value reach the program unchanged.
	tm.send("stty raw -echo -iexten; echo REA\"\"DY; head -c 256 > /workspace/in.bin; stty sane; echo IN\"\"-DONE\r")
	tm.waitFor("READY")
	tm.send(string(all))
	tm.waitFor("IN-DONE")
	r := h.do(h.alice, "GET", "/sandbox/"+id+"/files/in.bin", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, all) {
		t.Fatalf("bytes the program read: %d %q", r.status, r.body)
	}
}

// TestPTYReconnect: a dropped connection loses nothing: attaching again
// with the session ID replays the scrollback and the same shell goes on.
func TestPTYReconnect(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	tm := h.mustDialPTY(h.alice, id, "")
	tm.send("X=4\"\"2; echo MARK-ONE\r")
	tm.waitFor("MARK-ONE\r\n")
	_ = tm.c.CloseNow() // a dropped laptop connection, no close handshake
	tm2 := h.mustDialPTY(h.alice, id, "?session_id="+tm.id)
	if tm2.id != tm.id {
		t.Fatalf("re-attached to %s, want %s", tm2.id, tm.id)
	}
	tm2.waitFor("MARK-ONE\r\n") // the scrollback
	tm2.send("echo X=$X\r")
	tm2.waitFor("X=42\r\n")
	// A session that is not there (or not this sandbox's) is a 404 before the upgrade.
	_, res, err := h.dialPTY(h.alice, id, "?session_id=pty_0123456789abcdef")
	if err == nil || res == nil || res.StatusCode != http.StatusNotFound {
		t.Fatalf("attach to a missing session: %v %v, want 404", err, res)
	}
}

// TestPTYTwoViewers: two connections on one session see the same output
// and may both type (all attached viewers write, like tmux).
func TestPTYTwoViewers(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	a := h.mustDialPTY(h.alice, id, "")
	a.send("echo READ\"\"Y\r")
	a.waitFor("READY\r\n")
	b := h.mustDialPTY(h.alice, id, "?session_id="+a.id)
	b.waitFor("READY\r\n")
	a.send("echo FROM-\"\"A\r")
	a.waitFor("FROM-A\r\n")
	b.waitFor("FROM-A\r\n")
	b.send("echo FROM-\"\"B\r")
	a.waitFor("FROM-B\r\n")
	b.waitFor("FROM-B\r\n")
	if l := h.ptySessions(h.alice, id); len(l) != 1 || l[0].Attached != 2 {
		t.Fatalf("sessions %+v, want one with 2 attached", l)
	}
}

// TestPTYGraceExpiry: a session nobody attaches to within its grace period
// ends, and what it started in the background goes with it.
func TestPTYGraceExpiry(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, func(l *sandbox.Limits) { l.PTYGrace = 300 * time.Millisecond })
	id := h.createSandbox(h.alice, map[string]any{})
	tm := h.mustDialPTY(h.alice, id, "")
	tm.send("sleep 4242 & echo BG-\"\"STARTED\r")
	tm.waitFor("BG-STARTED\r\n")
	if out := h.execOut(id, "pgrep -c -f 'sleep 424[2]'"); out != "1" {
		t.Fatalf("background sleeps: %q", out)
	}
	_ = tm.c.Close(websocket.StatusNormalClosure, "")
	// Poll for the end (the deadline only bounds a hung test).
	deadline := time.Now().Add(time.Minute)
	for len(h.ptySessions(h.alice, id)) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("session still listed long after its grace period")
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.waitNoProcess(id, "sleep 424[2]")
	_, res, err := h.dialPTY(h.alice, id, "?session_id="+tm.id)
	if err == nil || res == nil || res.StatusCode != http.StatusNotFound {
		t.Fatalf("attach to an expired session: %v, want 404", err)
	}
}

// execOut runs a shell command in the sandbox and returns its trimmed stdout.
func (h *sbHarness) execOut(id, cmd string) string {
	h.t.Helper()
	var out execWaitResponse
	r := h.do(h.alice, "POST", "/sandbox/"+id+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", cmd}})
	wantStatus(h.t, r, http.StatusOK)
	r.data(h.t, &out)
	return strings.TrimSpace(out.Stdout)
}

// TestPTYAccess: another user gets 404 everywhere; a cookie upgrade from a
// foreign page is refused, one from the server's own origin is not; the
// per-sandbox session cap answers 429; DELETE ends a session.
func TestPTYAccess(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	tm := h.mustDialPTY(h.alice, id, "")
	for _, q := range []string{"", "?session_id=" + tm.id} {
		_, res, err := h.dialPTY(h.bob, id, q)
		if err == nil || res == nil || res.StatusCode != http.StatusNotFound {
			t.Errorf("bob attaching %q: %v, want 404", q, err)
		}
	}
	wantStatus(t, h.do(h.bob, "GET", "/sandbox/"+id+"/pty/sessions", nil), http.StatusNotFound)
	wantStatus(t, h.do(h.bob, "DELETE", "/sandbox/"+id+"/pty/sessions/"+tm.id, nil), http.StatusNotFound)

	_, res, err := h.dialPTY(h.alice, id, "", "Origin", "http://evil.example")
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("cookie upgrade from a foreign origin: %v, want 403", err)
	}
	_, res, err = h.dialPTY(h.alice, id, "", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("cookie upgrade with Sec-Fetch-Site cross-site: %v, want 403", err)
	}
	own := h.mustDialPTYHdr(h.alice, id, "Origin", h.srv.URL)
	wantField(t, h.do(h.alice, "GET", "/sandbox/"+id+"/pty?cols=0", nil), http.StatusUnprocessableEntity, "cols")
	wantField(t, h.do(h.alice, "GET", "/sandbox/"+id+"/pty?rows=x", nil), http.StatusUnprocessableEntity, "rows")
	wantField(t, h.do(h.alice, "GET", "/sandbox/"+id+"/pty?session_id=nope", nil), http.StatusUnprocessableEntity, "session_id")

	// The cap: 2 open, up to MaxPTYSessions.
	for range agent.MaxPTYSessions - 2 {
		x := h.mustDialPTY(h.alice, id, "")
		_ = x.c.CloseNow()
	}
	_, res, err = h.dialPTY(h.alice, id, "")
	if err == nil || res == nil || res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("one session too many: %v, want 429", err)
	}
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id+"/pty/sessions/"+own.id, nil), http.StatusNoContent)
	own.waitEnd()
	if own.exit == nil {
		t.Errorf("deleted session's viewer got no exit message")
	}
	if l := h.ptySessions(h.alice, id); len(l) != agent.MaxPTYSessions-1 {
		t.Errorf("%d sessions after a delete, want %d", len(l), agent.MaxPTYSessions-1)
	}
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id+"/pty/sessions/"+own.id, nil), http.StatusNotFound)
}

func (h *sbHarness) mustDialPTYHdr(c *http.Client, sbID string, hdr ...string) *term {
	h.t.Helper()
	tm, _, err := h.dialPTY(c, sbID, "", hdr...)
	if err != nil {
		h.t.Fatalf("dial pty with %v: %v", hdr, err)
	}
	return tm
}

// TestPTYSandboxTerminated: terminating the sandbox closes its terminals.
func TestPTYSandboxTerminated(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	tm := h.mustDialPTY(h.alice, id, "")
	tm.send("echo UP\"\"\r")
	tm.waitFor("UP\r\n")
	wantStatus(t, h.do(h.alice, "DELETE", "/sandbox/"+id, nil), http.StatusOK)
	tm.waitEnd()
}

// waitNoProcess polls until no process of the sandbox matches pattern
// (pgrep -f); a SIGKILLed process takes a moment to be gone.
func (h *sbHarness) waitNoProcess(id, pattern string) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := h.execOut(id, "pgrep -c -f '"+pattern+"'")
		if out == "0" {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s processes of %q remain after the session ended", out, pattern)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPTYServerStopping: a server shutting down closes its terminal
// WebSockets (1001) and WaitStreams sees them end; the session lives on in
// the sandbox, and the next server re-attaches to it.
func TestPTYServerStopping(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	id := h.createSandbox(h.alice, map[string]any{})
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	api := NewServer(Deps{Logger: h.logger(), Store: h.db, Auth: h.auth, Metrics: h.reg, Clock: h.clock.Now, Sandboxes: h.m, Stopping: stopping})
	srv := httptest.NewServer(api)
	defer srv.Close()
	h2 := &sbHarness{harness: &harness{t: t, srv: srv, db: h.db, auth: h.auth, clock: h.clock, logs: h.logs, reg: h.reg}, m: h.m}
	tm := h2.mustDialPTY(h.alice, id, "")
	tm.send("echo BEFORE-\"\"STOP\r")
	tm.waitFor("BEFORE-STOP\r\n")
	stop()
	tm.waitEnd()
	var ce websocket.CloseError
	if !errors.As(tm.closed, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("closed with %v, want 1001", tm.closed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := api.WaitStreams(ctx); err != nil {
		t.Fatal(err)
	}
	again := h.mustDialPTY(h.alice, id, "?session_id="+tm.id)
	again.waitFor("BEFORE-STOP\r\n")
	again.send("echo AFTER-\"\"STOP\r")
	again.waitFor("AFTER-STOP\r\n")
}
