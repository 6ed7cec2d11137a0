// Command techboss is the admin and API client CLI: `techboss user create`,
// `techboss token create`, `techboss migrate`, `techboss version`
// (`techboss help` lists every command).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "techboss:", err)
		os.Exit(1)
	}
}
