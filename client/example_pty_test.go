package client_test

import (
	"context"
	"io"
	"log"
	"os"

	"github.com/techbossai/techboss/client"
)

// A terminal in a sandbox: run a command, print the output, detach and
// re-attach to the same shell with its session ID.
func ExampleClient_PTY() {
	ctx := context.Background()
	c, err := client.New("http://localhost:8080", client.WithToken(os.Getenv("TECHBOSS_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	term, err := c.PTY(ctx, "sb_123", client.PTYOptions{Cols: 120, Rows: 40})
	if err != nil {
		log.Fatal(err)
	}
	_, _ = term.Write([]byte("ls -la\r"))
	_ = term.Resize(ctx, 160, 50)
	id := term.SessionID()
	_ = term.Close() // the shell keeps running for TECHBOSS_PTY_GRACE

	term, err = c.PTY(ctx, "sb_123", client.PTYOptions{SessionID: id}) // the scrollback first
	if err != nil {
		log.Fatal(err)
	}
	_, _ = term.Write([]byte("exit\r"))
	_, _ = io.Copy(os.Stdout, term) // until the shell exits
	code, _ := term.ExitCode()
	log.Printf("exit code %d", code)
}
