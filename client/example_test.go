package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/techbossai/techboss/client"
)

// A client for a server, with an API token (`techboss login` or
// POST /auth/tokens makes one).
func ExampleNew() {
	c, err := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.BaseURL())
	// Output: http://localhost:8080
}

// Create a sandbox, run a command in it with its output streamed, and
// terminate it.
func ExampleClient_ExecStream() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	sb, err := c.CreateSandbox(ctx, client.SandboxSpec{ImageBase: "python:3.12-slim"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.TerminateSandbox(ctx, sb.SandboxID)
	exit, err := c.ExecStream(ctx, sb.SandboxID, client.ExecRequest{Command: []string{"python3", "-c", "print(6*7)"}}, os.Stdout, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", exit.ExitCode)
}

// Start a Claude Code run and print its answer as it streams. The stream
// reconnects by itself (with Last-Event-ID) when the connection drops.
func ExampleClient_Claude() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	st, err := c.Claude(ctx, "sb_0123", client.ClaudeRequest{Prompt: "write a haiku to haiku.txt"})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		if ev.Type == "text_delta" {
			fmt.Print(ev.Text())
		}
		if ev.Type == "done" {
			var d client.DoneData
			_ = json.Unmarshal(ev.Data, &d)
			fmt.Println("\nrun", st.RunID, d.Status)
		}
	}
}

// Approve each tool call of a run started with permission_mode "ask".
func ExampleClient_AnswerPermission() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	st, err := c.Claude(ctx, "sb_0123", client.ClaudeRequest{Prompt: "clean up the build", PermissionMode: "ask"})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	for {
		ev, err := st.Next()
		if err != nil {
			break // io.EOF after the done event
		}
		if ev.Type != "permission_request" {
			continue
		}
		var req client.PermissionRequest
		_ = json.Unmarshal(ev.Data, &req)
		d := client.Decision{Behavior: "allow"}
		if strings.Contains(req.Summary, "rm -rf /") {
			d = client.Decision{Behavior: "deny", Message: "not that"}
		}
		if _, err := c.AnswerPermission(ctx, st.RunID, req.RequestID, d); err != nil {
			log.Print(err)
		}
	}
}

// Replay a finished run's events, or follow a running one from event 10.
func ExampleClient_RunEvents() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	st, err := c.RunEvents(ctx, "run_0123", client.StreamOptions{After: 10})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	done, err := st.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(done.Status)
}

// Snapshot a workspace, change it, see the difference, and go back.
func ExampleClient_CreateSnapshot() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	before, err := c.CreateSnapshot(ctx, "sb_0123")
	if err != nil {
		log.Fatal(err)
	}
	_, _ = c.Exec(ctx, "sb_0123", client.ExecRequest{Command: []string{"touch", "new.txt"}})
	after, err := c.CreateSnapshot(ctx, "sb_0123")
	if err != nil {
		log.Fatal(err)
	}
	diff, err := c.DiffSnapshots(ctx, before.ID, after.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("added:", diff.Added)
	if _, err := c.RestoreSnapshot(ctx, "sb_0123", before.ID); err != nil {
		log.Fatal(err)
	}
}

// API errors carry the server's code, message and the fields at fault.
func ExampleError() {
	err := error(&client.Error{StatusCode: 422, Code: "invalid", Message: "invalid request", RequestID: "req-1",
		Fields: []client.FieldError{{Field: "group_by", Reason: "must be day, model or sandbox"}}})
	var ae *client.Error
	if errors.As(err, &ae) {
		fmt.Println(ae.StatusCode, ae.Fields[0].Field)
		fmt.Println(ae)
	}
	// Output:
	// 422 group_by
	// 422 invalid: invalid request (request req-1)
}

// A sandbox that reaches only the listed hosts.
func ExampleNetworkAllow() {
	b, _ := json.Marshal(client.SandboxSpec{ImageBase: "node:22", Network: client.NetworkAllow("registry.example.com:443", "10.0.0.0/8")})
	fmt.Println(string(b))
	// Output: {"image_base":"node:22","network":{"allow":["registry.example.com:443","10.0.0.0/8"]}}
}
