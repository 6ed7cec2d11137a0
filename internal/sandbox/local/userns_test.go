package local

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
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
