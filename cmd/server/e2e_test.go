package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/modeltest"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestOriginalDesignFlow drives the whole wired server the way the original
// design's curl examples do: create a sandbox, run Claude Code in it (the
// real CLI, in a real local sandbox, through the gateway, against a
// scripted model), read the plain SSE stream to [DONE], find the agent's
// file in the workspace and the after-run snapshot, then terminate.
func TestOriginalDesignFlow(t *testing.T) {
	claudeBin := modeltest.ClaudeBin(t)
	const upstreamKey = "sk-ant-upstream-e2e-0123456789"
	model := modeltest.New(t,
		modeltest.Bash("echo made-by-agent > /workspace/agent.txt"),
		modeltest.Text("I wrote agent.txt for you."),
	)
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": upstreamKey,
		"TECHBOSS_CLAUDE_BIN": claudeBin,
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) *http.Response {
		t.Helper()
		return bearerCall(t, context.WithoutCancel(ctx), tok.Token, method, in.url+path, body)
	}
	readJSON := func(res *http.Response, want int, v any) {
		t.Helper()
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("%s %s: got %d, want %d: %s", res.Request.Method, res.Request.URL.Path, res.StatusCode, want, b)
		}
		if v != nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
		}
	}

	// The original design's create body and answer.
	var created struct {
		Data map[string]any `json:"data"`
	}
	readJSON(call("POST", "/sandbox", `{"image_base":"host","dockerfile_commands":[],"volume_name":"",
		"s3_bucket_name":"","s3_key_prefix":"","init_from_s3":false}`), 200, &created)
	id, _ := created.Data["sandbox_id"].(string)
	if id != "" {
		terminateAtCleanup(t, in.url, tok.Token, id)
	}
	if id == "" || created.Data["status"] != "running" || created.Data["created_at"] == nil {
		t.Fatalf("create answer = %v, want sandbox_id, status running, created_at", created.Data)
	}

	// The plain SSE form: assistant text as data lines, then [DONE].
	res := call("POST", "/sandbox/"+id+"/claude", `{"prompt":"write agent.txt"}`)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("claude: status %d, content type %q: %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if !bytes.Contains(body, []byte("data: I wrote agent.txt for you.\n")) || !bytes.HasSuffix(bytes.TrimRight(body, "\n"), []byte("data: [DONE]")) {
		t.Fatalf("claude stream lacks the text or the final [DONE]:\n%s", body)
	}
	if bytes.Contains(body, []byte(upstreamKey)) {
		t.Fatal("the upstream key reached the stream")
	}

	// The Bash tool really ran in the sandbox.
	var file bytes.Buffer
	if _, err := c.ReadFile(ctx, id, "/workspace/agent.txt", &file); err != nil || file.String() != "made-by-agent\n" {
		t.Fatalf("agent.txt = %q, %v; want made-by-agent", file.String(), err)
	}

	// The run was snapshotted before its done event: a version with trigger "run".
	var snaps struct {
		Data struct {
			Snapshots []struct {
				ID      string `json:"snapshot_id"`
				Trigger string `json:"trigger"`
				RunID   string `json:"run_id"`
			} `json:"snapshots"`
		} `json:"data"`
	}
	readJSON(call("GET", "/sandbox/"+id+"/snapshots", ""), 200, &snaps)
	if got := snaps.Data.Snapshots; len(got) != 1 || got[0].Trigger != "run" || got[0].RunID == "" {
		t.Fatalf("snapshots after the run = %+v, want one with trigger run and its run id", got)
	}

	// Usage was metered through the gateway against the scripted model's figures.
	var usage struct {
		Data struct {
			Total struct {
				Requests int `json:"requests"`
				Usage    struct {
					Input  int64 `json:"input_tokens"`
					Output int64 `json:"output_tokens"`
				} `json:"usage"`
				Cost float64 `json:"cost_usd"`
			} `json:"total"`
		} `json:"data"`
	}
	readJSON(call("GET", "/usage?group_by=model", ""), 200, &usage)
	rep := model.Reported()
	if tot := usage.Data.Total; tot.Requests != 2 || tot.Usage.Input != rep.InputTokens || tot.Usage.Output != rep.OutputTokens || tot.Cost <= 0 {
		t.Fatalf("usage total = %+v, want 2 requests, %d/%d tokens as the model reported, and a cost", tot, rep.InputTokens, rep.OutputTokens)
	}

	readJSON(call("DELETE", "/sandbox/"+id, ""), 200, nil)
	var got struct {
		Data map[string]any `json:"data"`
	}
	readJSON(call("GET", "/sandbox/"+id, ""), 200, &got)
	if got.Data["status"] != "terminated" {
		t.Fatalf("status after DELETE = %v, want terminated", got.Data["status"])
	}
	logs := in.stop()
	if strings.Contains(logs, upstreamKey) || strings.Contains(logs, tok.Token) {
		t.Fatal("a secret reached the server logs")
	}
}

// TestClaudeInMuslImage runs Claude Code in a sandbox whose image is
// musl-based (busybox plus musl's loader, pulled from a loopback OCI
// registry, no network): the server's launcher must pick the CLI's -musl
// build, mounted read-only, and the run must reach the gateway.
func TestClaudeInMuslImage(t *testing.T) {
	claudeBin := modeltest.ClaudeBin(t)
	muslBin := os.Getenv("TECHBOSS_CLAUDE_MUSL_BIN")
	loader, lerr := os.ReadFile("/lib/ld-musl-x86_64.so.1")
	if muslBin == "" || lerr != nil {
		why := "why: needs TECHBOSS_CLAUDE_MUSL_BIN (the CLI's -musl build) and /lib/ld-musl-x86_64.so.1 (apt musl); make test installs both"
		if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	ref, _ := sandboxtest.PushBusybox(t,
		sandboxtest.ImageFile{Name: "lib", Dir: true, Mode: 0o755},
		sandboxtest.ImageFile{Name: "lib/ld-musl-x86_64.so.1", Mode: 0o755, Body: loader},
	)
	model := modeltest.New(t, modeltest.Text("hello from a musl image"))
	env := map[string]string{
		"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "sk-ant-upstream-musl-0123456789",
		"TECHBOSS_CLAUDE_BIN": claudeBin, "TECHBOSS_CLAUDE_MUSL_BIN": muslBin,
	}
	in := start(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, _ := client.New(in.url)
	if _, err := c.Login(ctx, env["TECHBOSS_ADMIN_EMAIL"], env["TECHBOSS_ADMIN_PASSWORD"]); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: ref})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.TerminateSandbox(context.Background(), sb.SandboxID) })

	res, err := c.Request(ctx, "POST", "/sandbox/"+sb.SandboxID+"/claude", strings.NewReader(`{"prompt":"hi"}`), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Contains(body, []byte("data: hello from a musl image\n")) || !bytes.HasSuffix(bytes.TrimRight(body, "\n"), []byte("data: [DONE]")) {
		t.Fatalf("claude in a musl image: status %d:\n%s", res.StatusCode, body)
	}

	// An image that brings its own claude on PATH (the original design
	// installs it with dockerfile_commands) runs that one, not the mounts.
	// Here it is a script that prints what a CLI prints.
	own := "#!/bin/sh\n" +
		`echo '{"type":"system","subtype":"init","session_id":"s-own","model":"own","cwd":"/workspace","tools":[]}'` + "\n" +
		`echo '{"type":"assistant","message":{"id":"m1","role":"assistant","model":"own","content":[{"type":"text","text":"the image has its own claude"}]},"session_id":"s-own"}'` + "\n" +
		`echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","num_turns":1,"session_id":"s-own"}'` + "\n"
	ownRef, _ := sandboxtest.PushBusybox(t, sandboxtest.ImageFile{Name: "usr/bin/claude", Mode: 0o755, Body: []byte(own)})
	sb2, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: ownRef})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.TerminateSandbox(context.Background(), sb2.SandboxID) })
	res, err = c.Request(ctx, "POST", "/sandbox/"+sb2.SandboxID+"/claude", strings.NewReader(`{"prompt":"hi"}`), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Contains(body, []byte("data: the image has its own claude\n")) {
		t.Fatalf("an image with its own claude: status %d:\n%s", res.StatusCode, body)
	}
}

// TestTwoReplicas runs two servers on one PostgreSQL database, on two
// hosts (data directories), as a load balancer would front them. A Claude
// run goes on in replica A's local sandbox while replica B starts: B's
// start leaves the run and the sandbox alone, and B's event stream of the
// run follows it live to its done event. B refuses to exec in A's local
// sandbox with a conflict naming the host.
func TestTwoReplicas(t *testing.T) {
	claudeBin := modeltest.ClaudeBin(t)
	dbURL := storetest.PostgresURL(t)
	model := modeltest.New(t,
		modeltest.Bash("sleep 3; echo made-on-a > /workspace/a.txt"),
		modeltest.Text("Wrote a.txt."),
	)
	envFor := func() map[string]string {
		return map[string]string{
			"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(), "DATABASE_URL": dbURL,
			"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "bootstrap-password-1",
			"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "sk-ant-upstream-two-replicas",
			"TECHBOSS_CLAUDE_BIN": claudeBin,
		}
	}
	a := start(t, envFor())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, _ := client.New(a.url)
	if _, err := c.Login(ctx, "admin@example.com", "bootstrap-password-1"); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, "replicas")
	if err != nil {
		t.Fatal(err)
	}
	call := func(base, method, path, body string) *http.Response {
		t.Helper()
		return bearerCall(t, ctx, tok.Token, method, base+path, body)
	}
	var created struct {
		Data struct {
			ID string `json:"sandbox_id"`
		} `json:"data"`
	}
	res := call(a.url, "POST", "/sandbox", `{"image_base":"host"}`)
	if err := json.NewDecoder(res.Body).Decode(&created); err != nil || res.StatusCode != 200 {
		t.Fatalf("create on A: %d %v", res.StatusCode, err)
	}
	res.Body.Close()
	id := created.Data.ID
	terminateAtCleanup(t, a.url, tok.Token, id)

	// The run starts on A; its own stream is read to the end meanwhile.
	res = call(a.url, "POST", "/sandbox/"+id+"/claude?format=events", `{"prompt":"write a.txt"}`)
	runID := res.Header.Get("X-Run-ID")
	if res.StatusCode != 200 || runID == "" {
		t.Fatalf("claude on A: %d, run %q", res.StatusCode, runID)
	}
	aStream := make(chan []byte, 1)
	go func(body io.ReadCloser) {
		b, _ := io.ReadAll(body)
		body.Close()
		aStream <- b
	}(res.Body)

	// B starts while the run goes on, and follows the run.
	b := start(t, envFor())
	res = call(b.url, "GET", "/runs/"+runID+"/events", "")
	bStream, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("events on B: %d %s", res.StatusCode, bStream)
	}
	var ids []int
	types := map[string]bool{}
	for _, line := range strings.Split(string(bStream), "\n") {
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			n, _ := strconv.Atoi(v)
			ids = append(ids, n)
		}
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			types[v] = true
		}
	}
	for i, n := range ids {
		if n != i+1 {
			t.Fatalf("event ids on B = %v, want 1..%d without gaps", ids, len(ids))
		}
	}
	if !types["run.started"] || !types["done"] || !bytes.Contains(bStream, []byte(`"status":"succeeded"`)) {
		t.Fatalf("B's stream lacks the run's start or its successful end:\n%s", bStream)
	}
	if got := <-aStream; !bytes.Contains(got, []byte("event: done")) || len(ids) == 0 || !bytes.Contains(got, []byte(fmt.Sprintf("id: %d\n", ids[len(ids)-1]))) {
		t.Fatalf("A's stream does not end with the same last event:\n%s", got)
	}
	// The agent's work is there, on A.
	var file bytes.Buffer
	if _, err := c.ReadFile(ctx, id, "/workspace/a.txt", &file); err != nil || file.String() != "made-on-a\n" {
		t.Fatalf("a.txt = %q, %v", file.String(), err)
	}
	// B cannot reach A's local sandbox, and says so.
	res = call(b.url, "POST", "/sandbox/"+id+"/exec?wait=true", `{"command":["true"]}`)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusConflict || !bytes.Contains(body, []byte("another server")) {
		t.Fatalf("exec through B: %d %s; want 409 naming another server", res.StatusCode, body)
	}

	// A run on A is cancelled through B (the feed carries the request).
	model.Reset(modeltest.Hang("Working on it"))
	res = call(a.url, "POST", "/sandbox/"+id+"/claude?format=events", `{"prompt":"take your time"}`)
	run2 := res.Header.Get("X-Run-ID")
	go func(body io.ReadCloser) { _, _ = io.Copy(io.Discard, body); body.Close() }(res.Body)
	if err := model.AwaitMessageRequests(ctx, 3); err != nil { // the first run made two
		t.Fatal(err)
	}
	res = call(b.url, "POST", "/runs/"+run2+"/cancel", "")
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel through B: %d %s", res.StatusCode, body)
	}
	res = call(b.url, "GET", "/runs/"+run2+"/events", "")
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Contains(body, []byte("event: done")) || !bytes.Contains(body, []byte(`"status":"cancelled"`)) {
		t.Fatalf("the run cancelled through B did not end cancelled:\n%s", body)
	}
}

// bearerCall sends a JSON request (body may be empty) with token as its
// bearer and returns the response; a transport error fails the test.
func bearerCall(t *testing.T, ctx context.Context, token, method, url, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return res
}

// terminateAtCleanup terminates sandbox id when the test ends: a failed
// test must not leave it running.
func terminateAtCleanup(t *testing.T, base, token, id string) {
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", base+"/sandbox/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	})
}
