package agent

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelSigaction is the kernel's struct sigaction for rt_sigaction (the
// same layout on amd64 and arm64).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const sigIgn = 1 // SIG_IGN; SIG_DFL is 0

// ResetIgnoredSignals sets every signal the agent inherited as ignored
// back to its default action. An ignored signal stays ignored across
// fork and exec, so without this every command in the sandbox would get
// what the server's own parent ignored: GNU make, for one, starts its
// commands with signals 32 and 33 ignored, a shell starts background jobs
// with SIGINT ignored (then ^C and a run's cancel would not reach them).
// Signals the Go runtime handles are not ignored and are left alone; a
// caught signal is reset by exec anyway. Call it before starting any
// command.
func ResetIgnoredSignals() {
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		var old kernelSigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 || old.handler != sigIgn {
			continue
		}
		dfl := kernelSigaction{}
		_, _, _ = unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}
}
