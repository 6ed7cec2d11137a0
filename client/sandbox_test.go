package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestClientSandboxes(t *testing.T) {
	sandboxtest.RequireLocal(t)
	bin := filepath.Join(t.TempDir(), "techboss-sandbox-init")
	if err := sandboxtest.BuildInit(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db := storetest.OpenSQLite(t)
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() }) // its data dir is a mount until then
	m, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local", Limits: sandbox.DefaultLimits(), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams, AccountLimit: 2})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Store: db, Auth: svc, Sandboxes: m}))
	t.Cleanup(srv.Close)
	u, err := svc.CreateUser(ctx, "dev@example.com", "dev-password-1", auth.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := svc.CreateToken(ctx, u.ID, "t")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL, client.WithToken(string(tok)))
	if err != nil {
		t.Fatal(err)
	}

	created, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "host", Labels: map[string]string{"app": "x"}})
	if err != nil || created.Status != "running" {
		t.Fatalf("CreateSandbox = %+v, %v", created, err)
	}
	id := created.SandboxID
	t.Cleanup(func() { _ = drv.Destroy(context.Background(), sandbox.Ref(id)) })
	if _, err := c.CreateSandbox(ctx, client.SandboxSpec{Network: "bridge"}); err == nil {
		t.Fatal("bad spec accepted")
	} else if ce := (*client.Error)(nil); !errors.As(err, &ce) || ce.StatusCode != 422 || len(ce.Fields) == 0 || ce.Fields[0].Field != "network" {
		t.Fatalf("bad spec error %v", err)
	}

	page, err := c.ListSandboxes(ctx, client.ListSandboxesOptions{States: []string{"running"}, Labels: map[string]string{"app": "x"}})
	if err != nil || len(page.Sandboxes) != 1 || page.Sandboxes[0].ID != id {
		t.Fatalf("ListSandboxes = %+v, %v", page, err)
	}
	in := "typed"
	res, err := c.Exec(ctx, id, client.ExecRequest{Command: []string{"sh", "-c", "cat; printf '\\377' >&2"}, Stdin: &in})
	if err != nil || string(res.Stdout) != "typed" || !bytes.Equal(res.Stderr, []byte{0xff}) {
		t.Fatalf("Exec = %+v, %v", res, err)
	}
	var out, errOut bytes.Buffer
	exit, err := c.ExecStream(ctx, id, client.ExecRequest{Command: []string{"sh", "-c", "echo a; echo b >&2; exit 4"}}, &out, &errOut)
	if err != nil || exit.ExitCode != 4 || out.String() != "a\n" || errOut.String() != "b\n" {
		t.Fatalf("ExecStream = %+v, %v, %q, %q", exit, err, out.String(), errOut.String())
	}
	// Binary output (NULs, bytes that are not UTF-8, a UTF-8 sequence cut
	// between writes) arrives intact both as frames and as SSE.
	binCmd := client.ExecRequest{Command: []string{"sh", "-c", `printf 'a\000b\377'; printf '\342\202'; sleep 0.05; printf '\254z'; printf 'e\001' >&2`}}
	for _, accept := range []string{client.ExecFramesType, "text/event-stream"} {
		out.Reset()
		errOut.Reset()
		exit, err := c.ExecStreamAccept(ctx, id, binCmd, &out, &errOut, accept)
		if err != nil || exit.ExitCode != 0 || out.String() != "a\x00b\xff\xe2\x82\xacz" || errOut.String() != "e\x01" {
			t.Fatalf("ExecStream (%s) = %+v, %v, %q, %q", accept, exit, err, out.String(), errOut.String())
		}
	}
	testExecSSEForms(t, srv.URL, string(tok), id)
	// An exec that cannot run answers a JSON error before any stream.
	if _, err := c.ExecStream(ctx, "sb_missing", client.ExecRequest{Command: []string{"true"}}, nil, nil); err == nil {
		t.Fatal("ExecStream on a missing sandbox: nil error")
	} else if ce := (*client.Error)(nil); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("ExecStream on a missing sandbox: %v", err)
	}
	if n, err := c.WriteFile(ctx, id, "notes/a.txt", strings.NewReader("hello"), 0o640); err != nil || n != 5 {
		t.Fatalf("WriteFile = %d, %v", n, err)
	}
	var got bytes.Buffer
	if _, err := c.ReadFile(ctx, id, "notes/a.txt", &got); err != nil || got.String() != "hello" {
		t.Fatalf("ReadFile = %q, %v", got.String(), err)
	}
	ents, err := c.ListDir(ctx, id, "notes")
	if err != nil || len(ents) != 1 || ents[0].Name != "a.txt" || ents[0].Mode.Perm() != 0o640 {
		t.Fatalf("ListDir = %+v, %v", ents, err)
	}
	rc, err := c.ArchiveOut(ctx, id, "notes")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ArchiveIn(ctx, id, "copy", rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	res, err = c.Exec(ctx, id, client.ExecRequest{Command: []string{"sh", "-c", "cat $(find /workspace/copy -name a.txt)"}})
	if err != nil || string(res.Stdout) != "hello" {
		t.Fatalf("archive round trip: %+v, %v", res, err)
	}
	if err := c.RemoveFile(ctx, id, "notes/a.txt"); err != nil {
		t.Fatal(err)
	}
	if logs, err := c.SandboxLogs(ctx, id); err != nil || !strings.Contains(logs, "running") {
		t.Fatalf("SandboxLogs = %q, %v", logs, err)
	}
	testClientPTY(t, c, id)
	sb, err := c.TerminateSandbox(ctx, id)
	if err != nil || sb.Status != "terminated" {
		t.Fatalf("TerminateSandbox = %+v, %v", sb, err)
	}
	if vols, err := c.ListVolumes(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("ListVolumes = %+v, %v", vols, err)
	}
}

// readUntil reads r until its output contains want.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read before %q: %v; got %q", want, err, got)
		}
	}
	return string(got)
}

func testClientPTY(t *testing.T, c *client.Client, id string) {
	ctx := context.Background()
	term, err := c.PTY(ctx, id, client.PTYOptions{Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := term.Write([]byte("stty size; echo A\"\"B\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, term, "30 100\r\nAB\r\n")
	if err := term.Resize(ctx, 120, 40); err != nil {
		t.Fatal(err)
	}
	_ = term.Close() // detach: the shell goes on
	again, err := c.PTY(ctx, id, client.PTYOptions{SessionID: term.SessionID()})
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, again, "30 100\r\nAB\r\n") // the scrollback
	if l, err := c.PTYSessions(ctx, id); err != nil || len(l) != 1 || l[0].SessionID != term.SessionID() {
		t.Fatalf("PTYSessions = %+v, %v", l, err)
	}
	if _, err := again.Write([]byte("exit 3\r")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, again); err != nil {
		t.Fatalf("read to the end: %v", err)
	}
	if code, ok := again.ExitCode(); !ok || code != 3 {
		t.Fatalf("ExitCode = %d, %v; want 3", code, ok)
	}
	if _, err := c.PTY(ctx, "sb_missing", client.PTYOptions{}); err == nil {
		t.Fatal("PTY on a missing sandbox: nil error")
	} else if ce := (*client.Error)(nil); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("PTY on a missing sandbox: %v", err)
	}
	if err := c.ClosePTY(ctx, id, term.SessionID()); err == nil {
		t.Fatal("ClosePTY of an ended session: nil error")
	}
}

// formRecorder notes the X-Exec-Format of each exec stream's answer.
type formRecorder struct{ forms []string }

func (f *formRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && strings.HasSuffix(req.URL.Path, "/exec") {
		f.forms = append(f.forms, res.Header.Get("X-Exec-Format"))
	}
	return res, err
}

// testExecSSEForms: over SSE the client asks for the text form and
// decodes it (text over many lines, empty lines, no last newline; bytes
// that are not UTF-8, NULs and CRs, which come as *_b64 events; stderr;
// the exit code), and it still decodes the JSON form an older server
// sends.
func testExecSSEForms(t *testing.T, url, tok, id string) {
	t.Helper()
	ctx := context.Background()
	rec := &formRecorder{}
	tc, err := client.New(url, client.WithToken(tok), client.WithHTTPClient(&http.Client{Transport: rec}))
	if err != nil {
		t.Fatal(err)
	}
	var seq strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&seq, "line %d\n", i)
	}
	script := `printf 'one\n\n  two\n'; printf 'err\n' >&2; seq -f 'line %g' 0 4999; printf 'a\000b\377\r\n'; printf '\342\202'; sleep 0.05; printf '\254z'; printf 'e\001' >&2; printf 'tail'; exit 5`
	wantOut := "one\n\n  two\n" + seq.String() + "a\x00b\xff\r\n\xe2\x82\xacz" + "tail"
	wantErr := "err\ne\x01"
	req := client.ExecRequest{Command: []string{"sh", "-c", script}}
	for _, form := range []string{"text", "json"} {
		var out, errOut bytes.Buffer
		var exit *client.ExecExit
		if form == "text" {
			exit, err = tc.ExecStreamAccept(ctx, id, req, &out, &errOut, "text/event-stream")
		} else {
			exit, err = tc.ExecStreamJSONForm(ctx, id, req, &out, &errOut)
		}
		if err != nil || exit.ExitCode != 5 {
			t.Fatalf("%s form: exit %+v, %v", form, exit, err)
		}
		if out.String() != wantOut {
			t.Errorf("%s form: stdout %d bytes, want %d: %q", form, out.Len(), len(wantOut), out.String()[max(0, out.Len()-80):])
		}
		if errOut.String() != wantErr {
			t.Errorf("%s form: stderr %q, want %q", form, errOut.String(), wantErr)
		}
	}
	if len(rec.forms) != 2 || rec.forms[0] != "text" || rec.forms[1] != "" {
		t.Errorf("the answers' X-Exec-Format %q, want the text form, then the JSON form", rec.forms)
	}
	// Output dropped when no writer is given; the exit still comes.
	if exit, err := tc.ExecStreamAccept(ctx, id, req, nil, nil, "text/event-stream"); err != nil || exit.ExitCode != 5 {
		t.Fatalf("no writers: exit %+v, %v", exit, err)
	}
}
