// Command techboss is the TechBoss CLI: for users, `techboss login`,
// `techboss sandbox create`, `techboss exec`, `techboss cp`, `techboss
// claude`, ... against a server (docs/cli.md); for admins, `techboss user
// create`, `techboss token create`, `techboss migrate` on the server's
// database (`techboss help` lists every command).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/techbossai/techboss/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		if wantsJSON(os.Args[1:]) {
			_ = writeJSON(os.Stderr, map[string]any{"error": errorJSON(err)})
		} else {
			fmt.Fprintln(os.Stderr, "techboss:", errorText(err))
		}
		os.Exit(1)
	}
}

// errorText is the API's message for an API error (with the fields it
// names), else the error.
func errorText(err error) string {
	var ae *client.Error
	if !errors.As(err, &ae) {
		return err.Error()
	}
	var b strings.Builder
	b.WriteString(ae.Message)
	for _, f := range ae.Fields {
		fmt.Fprintf(&b, "; %s: %s", f.Field, f.Reason)
	}
	fmt.Fprintf(&b, " (%d %s", ae.StatusCode, ae.Code)
	if ae.RequestID != "" {
		fmt.Fprintf(&b, ", request %s", ae.RequestID)
	}
	b.WriteString(")")
	return b.String()
}

// wantsJSON reports whether the command line asks for --json (before any "--").
func wantsJSON(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--json", "-json", "--json=true", "-json=true":
			return true
		}
	}
	return false
}

// errorJSON is an error as --json prints it on stderr: the API's error
// (status, code, message, request_id, fields), or a message.
func errorJSON(err error) any {
	var ae *client.Error
	if !errors.As(err, &ae) {
		return map[string]string{"message": err.Error()}
	}
	return struct {
		Status int `json:"status"`
		*client.Error
	}{ae.StatusCode, ae}
}
