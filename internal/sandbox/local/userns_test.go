package local

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The shared user namespace maps the driver's range and forbids nested
// user namespaces; a process joining it sees 0 as its uid.
func TestSharedUserNS(t *testing.T) {
	requireHost(t)
	bw, err := exec.LookPath("bwrap")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := newUserNS(bw, DefaultIDs)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cmd := exec.Command("nsenter", "--user=/proc/self/fd/3", "--",
		"/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map /proc/sys/user/max_user_namespaces; id -u")
	cmd.ExtraFiles = []*os.File{ns}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	f := strings.Fields(string(out))
	want := []string{"0", strconv.Itoa(int(DefaultIDs.HostBase)), strconv.Itoa(int(DefaultIDs.Size)),
		"0", strconv.Itoa(int(DefaultIDs.HostBase)), strconv.Itoa(int(DefaultIDs.Size)), "0", "0"}
	if strings.Join(f, " ") != strings.Join(want, " ") {
		t.Fatalf("in the shared namespace: %q, want %q", f, want)
	}
}

// Creating the shared namespace survives the server's threads coming and
// going: a goroutine that enters a sandbox's network namespace may end
// its thread, and the parent-death signal of a child is tied to the
// thread that forked it, not to the process. The bubblewrap that creates
// the namespace must not be killed halfway by that (it failed or, when
// killed between reporting its child and releasing it, hung for good).
func TestSharedUserNSThreadChurn(t *testing.T) {
	requireHost(t)
	bw, err := exec.LookPath("bwrap")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var churn sync.WaitGroup
	for range 4 {
		churn.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					runtime.LockOSThread() // no unlock: the thread ends with the goroutine
				}()
				<-done
			}
		})
	}
	defer func() {
		close(stop)
		churn.Wait()
	}()
	for i := range 20 {
		errc := make(chan error, 1)
		go func() {
			ns, err := newUserNS(bw, DefaultIDs)
			if err == nil {
				ns.Close()
			}
			errc <- err
		}()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("create %d did not return in 2 minutes", i)
		}
	}
}
