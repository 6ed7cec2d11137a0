package netns

import (
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Do gives its thread back: the thread that ran fn still exists after it
// returned (an ended thread would fire the parent-death signal of every
// child it forked), and it is back in the server's namespace.
func TestDoKeepsThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setns needs root; run as root (make test does)")
	}
	own, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(own.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		var tid int
		var inside unix.Stat_t
		if err := Do(int(own.Fd()), func() error {
			tid = unix.Gettid()
			return unix.Stat("/proc/thread-self/ns/net", &inside)
		}); err != nil {
			t.Fatal(err)
		}
		if inside.Ino != st.Ino {
			t.Fatalf("fn ran in namespace %d, want %d", inside.Ino, st.Ino)
		}
		time.Sleep(100 * time.Millisecond) // an ending thread is gone by then
		if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(tid)); err != nil {
			t.Fatalf("the thread that ran fn has ended: %v", err)
		}
	}
}

func TestDoBadNamespace(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notns")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ran := false
	if err := Do(int(f.Fd()), func() error { ran = true; return nil }); err == nil || ran {
		t.Fatalf("Do on a plain file: err %v, fn ran %v; want an error and fn not run", err, ran)
	}
}
