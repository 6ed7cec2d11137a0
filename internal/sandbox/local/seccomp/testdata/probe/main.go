// Command probe tries, inside a sandbox, the system calls the seccomp filter
// must refuse and a few it must allow, and prints one line per probe:
// "name: outcome", where outcome is "ok", an errno name (EPERM), or
// "killed:SIGSYS". Each probe runs in a child process of its own, so a
// probe the filter kills does not stop the others.
//
// Arguments are chosen so that, without the filter, the kernel answers
// something other than EPERM where it can (a bad pointer gives EFAULT, bad
// flags EINVAL): then EPERM can only come from the filter.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// badPtr is an address the kernel cannot read from.
const badPtr = 8

var probes = map[string]func() error{
	"getpid": func() error { return raw(unix.SYS_GETPID, 0, 0, 0) },
	"unshare-user": func() error {
		return unix.Unshare(unix.CLONE_NEWUSER)
	},
	"unshare-mount": func() error { return unix.Unshare(unix.CLONE_NEWNS) },
	"unshare-net":   func() error { return unix.Unshare(unix.CLONE_NEWNET) },
	"unshare-files": func() error { return unix.Unshare(unix.CLONE_FILES) },
	"clone-newuser": func() error { return fork(unix.CLONE_NEWUSER) },
	"clone-newns":   func() error { return fork(unix.CLONE_NEWNS) },
	"clone-newpid":  func() error { return fork(unix.CLONE_NEWPID) },
	"clone-plain":   func() error { return fork(0) },
	"clone3-newuser": func() error {
		return clone3(unix.CLONE_NEWUSER)
	},
	"clone3-plain": func() error { return clone3(0) },
	"setns":        func() error { return raw(unix.SYS_SETNS, ^uintptr(0), 0, 0) },
	"mount": func() error {
		return raw6(unix.SYS_MOUNT, badPtr, badPtr, badPtr, 0, 0, 0)
	},
	"umount2":    func() error { return raw(unix.SYS_UMOUNT2, badPtr, 0xffff, 0) },
	"pivot_root": func() error { return raw(unix.SYS_PIVOT_ROOT, badPtr, badPtr, 0) },
	"chroot":     func() error { return raw(unix.SYS_CHROOT, badPtr, 0, 0) },
	"open_tree":  func() error { return raw(unix.SYS_OPEN_TREE, ^uintptr(0), badPtr, 0) },
	"fsopen":     func() error { return raw(unix.SYS_FSOPEN, badPtr, 0, 0) },
	"bpf":        func() error { return raw(unix.SYS_BPF, 0xffff, 0, 0) },
	"perf_event_open": func() error {
		return raw6(unix.SYS_PERF_EVENT_OPEN, badPtr, 0, ^uintptr(0), ^uintptr(0), 0, 0)
	},
	"keyctl":      func() error { return raw(unix.SYS_KEYCTL, 0xffff, 0, 0) },
	"add_key":     func() error { return raw6(unix.SYS_ADD_KEY, badPtr, badPtr, 0, 0, 0, 0) },
	"request_key": func() error { return raw6(unix.SYS_REQUEST_KEY, badPtr, badPtr, 0, 0, 0, 0) },
	"init_module": func() error { return raw(unix.SYS_INIT_MODULE, badPtr, 0, badPtr) },
	"finit_module": func() error {
		return raw(unix.SYS_FINIT_MODULE, ^uintptr(0), badPtr, 0)
	},
	"delete_module":   func() error { return raw(unix.SYS_DELETE_MODULE, badPtr, 0, 0) },
	"kexec_load":      func() error { return raw6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0xffffffff, 0, 0) },
	"kexec_file_load": func() error { return raw6(unix.SYS_KEXEC_FILE_LOAD, ^uintptr(0), ^uintptr(0), 0, 0, 0xffff, 0) },
	"open_by_handle_at": func() error {
		return raw(unix.SYS_OPEN_BY_HANDLE_AT, ^uintptr(0), badPtr, 0)
	},
	"reboot":         func() error { return raw6(unix.SYS_REBOOT, 0, 0, 0, 0, 0, 0) },
	"swapon":         func() error { return raw(unix.SYS_SWAPON, badPtr, 0, 0) },
	"swapoff":        func() error { return raw(unix.SYS_SWAPOFF, badPtr, 0, 0) },
	"userfaultfd":    func() error { return raw(unix.SYS_USERFAULTFD, 0xffffffff, 0, 0) },
	"io_uring_setup": func() error { return raw(unix.SYS_IO_URING_SETUP, 1, badPtr, 0) },
	"ptrace":         func() error { return raw6(unix.SYS_PTRACE, 0xffff, 0, 0, 0, 0, 0) },
	"personality-linux": func() error {
		return raw(unix.SYS_PERSONALITY, 0, 0, 0) // PER_LINUX
	},
	"personality-query": func() error { return raw(unix.SYS_PERSONALITY, 0xffffffff, 0, 0) },
	"personality-read-implies-exec": func() error {
		return raw(unix.SYS_PERSONALITY, 0x0400000, 0, 0) // READ_IMPLIES_EXEC
	},
	"socket-inet":  func() error { return socket(unix.AF_INET) },
	"socket-unix":  func() error { return socket(unix.AF_UNIX) },
	"socket-vsock": func() error { return socket(unix.AF_VSOCK) },
	"socket-alg":   func() error { return socket(unix.AF_ALG) },
	"socket-inet-high-bits": func() error {
		return socket(unix.AF_INET | 1<<32)
	},
	"file_getattr": func() error { return raw(468, ^uintptr(0), badPtr, 0) },
	"nr-1000":      func() error { return raw(1000, 0, 0, 0) },
	"x32-getpid":   x32Getpid,
	"i386-getpid":  i386Getpid,
}

func raw(nr, a1, a2, a3 uintptr) error {
	_, _, e := unix.RawSyscall(nr, a1, a2, a3)
	if e != 0 {
		return e
	}
	return nil
}

func raw6(nr, a1, a2, a3, a4, a5, a6 uintptr) error {
	_, _, e := unix.RawSyscall6(nr, a1, a2, a3, a4, a5, a6)
	if e != 0 {
		return e
	}
	return nil
}

func socket(domain uint64) error {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(domain), unix.SOCK_STREAM, 0)
	if e != 0 {
		return e
	}
	unix.Close(int(fd))
	return nil
}

// fork is clone(flags|SIGCHLD) without a new stack: the child exits at once.
func fork(flags uintptr) error {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, flags|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	if pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	return reap(int(pid))
}

func clone3(flags uint64) error {
	// struct clone_args, CLONE_ARGS_SIZE_VER0.
	args := [8]uint64{0: flags, 4: uint64(unix.SIGCHLD)}
	pid, _, e := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	if e != 0 {
		return e
	}
	if pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	return reap(int(pid))
}

func reap(pid int) error {
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		return err
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("child: %v", ws)
	}
	return nil
}

func main() {
	if len(os.Args) == 2 {
		p, ok := probes[os.Args[1]]
		if !ok {
			fmt.Println("unknown probe")
			os.Exit(2)
		}
		fmt.Println(outcome(p()))
		return
	}
	names := make([]string, 0, len(probes))
	for n := range probes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out, err := exec.Command("/proc/self/exe", n).Output()
		res := string(out)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				res = "killed:" + unix.SignalName(ws.Signal())
			} else {
				res = "failed:" + err.Error()
			}
		} else if err != nil {
			res = "failed:" + err.Error()
		} else if len(res) > 0 && res[len(res)-1] == '\n' {
			res = res[:len(res)-1]
		}
		fmt.Printf("%s: %s\n", n, res)
	}
}

func outcome(err error) string {
	var e unix.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &e):
		return unix.ErrnoName(e)
	default:
		return err.Error()
	}
}
