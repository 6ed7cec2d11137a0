// Racer swaps two entries of a directory in a tight loop with
// renameat2(RENAME_EXCHANGE), the move a hostile sandbox uses to turn a
// directory the host is walking into a symlink (and back) mid-walk:
//
//	racer -dir D -a d -b l -for 5s
//	racer -dir D -a d -b l -n 100000
//
// Each exchange is atomic: at every instant one of D/a, D/b is what the
// other was. It runs until -for has passed or -n exchanges were attempted,
// whichever comes first (at least one of the two must be given), or until
// SIGTERM/SIGINT, then prints "racer: <n> exchanges (<m> failed)" on
// stdout and exits 0. A failed exchange (e.g. an entry removed meanwhile)
// is counted and the loop goes on; it exits 1 only when no exchange
// succeeded at all.
//
// It is a static, stdlib-plus-x/sys program so the security tests can copy
// it into a sandbox (CGO_ENABLED=0 go build ./internal/testbin/racer).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("racer", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dir := fl.String("dir", "", "directory holding both entries (required)")
	a := fl.String("a", "", "first entry name, relative to -dir (required)")
	b := fl.String("b", "", "second entry name, relative to -dir (required)")
	dur := fl.Duration("for", 0, "how long to swap (e.g. 5s)")
	n := fl.Int64("n", 0, "how many exchanges to attempt")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || *a == "" || *b == "" || (*dur <= 0 && *n <= 0) {
		fmt.Fprintln(stderr, "usage: racer -dir D -a NAME -b NAME (-for DURATION | -n COUNT)")
		return 2
	}
	// One directory handle, names relative to it: the swaps stay in D even
	// if D's own path changes.
	fd, err := unix.Open(*dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(stderr, "racer: open %s: %v\n", *dir, err)
		return 1
	}
	defer unix.Close(fd)

	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop.Store(true) }()

	var deadline time.Time
	if *dur > 0 {
		deadline = time.Now().Add(*dur)
	}
	var done, failed int64
	for i := int64(0); !stop.Load(); i++ {
		if *n > 0 && done+failed >= *n {
			break
		}
		// Checking the clock every exchange would halve the rate.
		if i%256 == 0 && !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		if err := unix.Renameat2(fd, *a, fd, *b, unix.RENAME_EXCHANGE); err != nil {
			failed++
			continue
		}
		done++
	}
	fmt.Fprintf(stdout, "racer: %d exchanges (%d failed)\n", done, failed)
	if done == 0 {
		fmt.Fprintln(stderr, "racer: no exchange succeeded")
		return 1
	}
	return 0
}
