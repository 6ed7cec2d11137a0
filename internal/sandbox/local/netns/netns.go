// Package netns runs code in another network namespace (a sandbox's) on a
// thread of the server's, and gives the thread back afterwards.
//
// Why give it back rather than let it die (the usual way to be sure no
// other goroutine ever runs in the wrong namespace): the parent-death
// signal of a child process (Pdeathsig, bwrap --die-with-parent) fires
// when the thread that forked the child ends, not when the process does.
// A thread that runs the server's goroutines in turn may have forked such
// a child earlier, and ending it kills that child halfway: it made the
// creation of the driver's user namespace fail or hang for good.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on a thread that entered the network namespace nsf (a
// descriptor of /proc/<pid>/ns/net), then returns the thread to the
// server's namespace. Only if that fails does the goroutine end still
// locked, so that the runtime ends the thread and nothing else ever runs
// in the other namespace. Sockets fn creates stay in the namespace they
// were created in.
func Do(nsf int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(nsf, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
