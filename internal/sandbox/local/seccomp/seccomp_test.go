package seccomp

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// vm runs a filter the way the kernel would, on the x/net/bpf interpreter.
type vm struct {
	t  *testing.T
	vm *bpf.VM
}

func newVM(t *testing.T, prog []byte) *vm {
	t.Helper()
	if len(prog)%8 != 0 || len(prog) == 0 {
		t.Fatalf("program is %d bytes, want a non-empty multiple of 8", len(prog))
	}
	var insns []bpf.Instruction
	for b := prog; len(b) > 0; b = b[8:] {
		raw := bpf.RawInstruction{
			Op: binary.NativeEndian.Uint16(b[0:]),
			Jt: b[2],
			Jf: b[3],
			K:  binary.NativeEndian.Uint32(b[4:]),
		}
		in := raw.Disassemble()
		if _, ok := in.(bpf.RawInstruction); ok {
			t.Fatalf("instruction %d: unknown opcode %#x", len(insns), raw.Op)
		}
		insns = append(insns, in)
	}
	v, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	return &vm{t: t, vm: v}
}

// run returns the filter's verdict for one system call. The interpreter
// loads words big-endian, so each 32-bit word of struct seccomp_data is
// stored big-endian at the offset where a little-endian kernel reads it.
func (v *vm) run(audit, nr uint32, args [6]uint64) uint32 {
	v.t.Helper()
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[offNr:], nr)
	binary.BigEndian.PutUint32(data[offArch:], audit)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[offArgs+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[offArgs+8*i+4:], uint32(a>>32))
	}
	r, err := v.vm.Run(data)
	if err != nil {
		v.t.Fatal(err)
	}
	return uint32(r)
}

func hostTable(t *testing.T) (*arch, *table) {
	t.Helper()
	a, err := archFor(runtime.GOARCH)
	if err != nil {
		t.Skipf("no filter for %s: %v", runtime.GOARCH, err)
	}
	p, err := hostProfile()
	if err != nil {
		t.Fatal(err)
	}
	tb, err := resolve(a, p)
	if err != nil {
		t.Fatal(err)
	}
	return a, tb
}

func retName(r uint32) string {
	switch {
	case r == retAllow:
		return "allow"
	case r == retKill:
		return "kill"
	case r&unix.SECCOMP_RET_ACTION_FULL == retErrno:
		return unix.ErrnoName(unix.Errno(r & unix.SECCOMP_RET_DATA))
	}
	return fmt.Sprintf("%#x", r)
}

// TestProgram checks the filter for this host against what the sandbox
// must and must not do.
func TestProgram(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the expectations below are written for amd64")
	}
	prog, err := Program()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := hostTable(t)
	v := newVM(t, prog)
	nr := func(name string) uint32 {
		n, ok := a.nums[name]
		if !ok {
			t.Fatalf("no system call %s on %s", name, a.goarch)
		}
		return uint32(n)
	}
	const sigchld = uint64(unix.SIGCHLD)
	// What glibc and Go pass to clone for a thread and for fork.
	const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
	const forkFlags = unix.CLONE_CHILD_SETTID | unix.CLONE_CHILD_CLEARTID | uint64(unix.SIGCHLD)
	const vforkFlags = unix.CLONE_VM | unix.CLONE_VFORK | uint64(unix.SIGCHLD)
	tests := []struct {
		name  string
		audit uint32
		nr    uint32
		args  [6]uint64
		want  string
	}{
		{"read", unix.AUDIT_ARCH_X86_64, nr("read"), [6]uint64{}, "allow"},
		{"execve", unix.AUDIT_ARCH_X86_64, nr("execve"), [6]uint64{}, "allow"},
		{"setuid", unix.AUDIT_ARCH_X86_64, nr("setuid"), [6]uint64{}, "allow"},
		{"capset", unix.AUDIT_ARCH_X86_64, nr("capset"), [6]uint64{}, "allow"},
		{"prctl", unix.AUDIT_ARCH_X86_64, nr("prctl"), [6]uint64{}, "allow"},
		{"ptrace", unix.AUDIT_ARCH_X86_64, nr("ptrace"), [6]uint64{}, "allow"},
		{"process_vm_readv", unix.AUDIT_ARCH_X86_64, nr("process_vm_readv"), [6]uint64{}, "allow"},
		{"fchmodat2", unix.AUDIT_ARCH_X86_64, nr("fchmodat2"), [6]uint64{}, "allow"},
		{"clone thread", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{threadFlags}, "allow"},
		{"clone fork", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{forkFlags}, "allow"},
		{"clone vfork", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{vforkFlags}, "allow"},
		{"clone pidfd", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{vforkFlags | unix.CLONE_PIDFD}, "allow"},
		{"clone newuser", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWUSER | sigchld}, "EPERM"},
		{"clone newns", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWNS | sigchld}, "EPERM"},
		{"clone newpid", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWPID | sigchld}, "EPERM"},
		{"clone newnet", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWNET | sigchld}, "EPERM"},
		{"clone newipc", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWIPC | sigchld}, "EPERM"},
		{"clone newuts", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWUTS | sigchld}, "EPERM"},
		{"clone newcgroup", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{unix.CLONE_NEWCGROUP | sigchld}, "EPERM"},
		{"clone newuser high bits", unix.AUDIT_ARCH_X86_64, nr("clone"), [6]uint64{1<<32 | unix.CLONE_NEWUSER | sigchld}, "EPERM"},
		{"clone3", unix.AUDIT_ARCH_X86_64, nr("clone3"), [6]uint64{}, "ENOSYS"},
		{"unshare", unix.AUDIT_ARCH_X86_64, nr("unshare"), [6]uint64{unix.CLONE_NEWUSER}, "EPERM"},
		{"setns", unix.AUDIT_ARCH_X86_64, nr("setns"), [6]uint64{}, "EPERM"},
		{"mount", unix.AUDIT_ARCH_X86_64, nr("mount"), [6]uint64{}, "EPERM"},
		{"umount2", unix.AUDIT_ARCH_X86_64, nr("umount2"), [6]uint64{}, "EPERM"},
		{"pivot_root", unix.AUDIT_ARCH_X86_64, nr("pivot_root"), [6]uint64{}, "EPERM"},
		{"chroot", unix.AUDIT_ARCH_X86_64, nr("chroot"), [6]uint64{}, "EPERM"},
		{"open_tree", unix.AUDIT_ARCH_X86_64, nr("open_tree"), [6]uint64{}, "EPERM"},
		{"move_mount", unix.AUDIT_ARCH_X86_64, nr("move_mount"), [6]uint64{}, "EPERM"},
		{"fsopen", unix.AUDIT_ARCH_X86_64, nr("fsopen"), [6]uint64{}, "EPERM"},
		{"mount_setattr", unix.AUDIT_ARCH_X86_64, nr("mount_setattr"), [6]uint64{}, "EPERM"},
		{"kexec_load", unix.AUDIT_ARCH_X86_64, nr("kexec_load"), [6]uint64{}, "EPERM"},
		{"kexec_file_load", unix.AUDIT_ARCH_X86_64, nr("kexec_file_load"), [6]uint64{}, "EPERM"},
		{"bpf", unix.AUDIT_ARCH_X86_64, nr("bpf"), [6]uint64{}, "EPERM"},
		{"perf_event_open", unix.AUDIT_ARCH_X86_64, nr("perf_event_open"), [6]uint64{}, "EPERM"},
		{"keyctl", unix.AUDIT_ARCH_X86_64, nr("keyctl"), [6]uint64{}, "EPERM"},
		{"add_key", unix.AUDIT_ARCH_X86_64, nr("add_key"), [6]uint64{}, "EPERM"},
		{"request_key", unix.AUDIT_ARCH_X86_64, nr("request_key"), [6]uint64{}, "EPERM"},
		{"init_module", unix.AUDIT_ARCH_X86_64, nr("init_module"), [6]uint64{}, "EPERM"},
		{"finit_module", unix.AUDIT_ARCH_X86_64, nr("finit_module"), [6]uint64{}, "EPERM"},
		{"delete_module", unix.AUDIT_ARCH_X86_64, nr("delete_module"), [6]uint64{}, "EPERM"},
		{"open_by_handle_at", unix.AUDIT_ARCH_X86_64, nr("open_by_handle_at"), [6]uint64{}, "EPERM"},
		{"reboot", unix.AUDIT_ARCH_X86_64, nr("reboot"), [6]uint64{}, "EPERM"},
		{"swapon", unix.AUDIT_ARCH_X86_64, nr("swapon"), [6]uint64{}, "EPERM"},
		{"swapoff", unix.AUDIT_ARCH_X86_64, nr("swapoff"), [6]uint64{}, "EPERM"},
		{"userfaultfd", unix.AUDIT_ARCH_X86_64, nr("userfaultfd"), [6]uint64{}, "EPERM"},
		{"io_uring_setup", unix.AUDIT_ARCH_X86_64, nr("io_uring_setup"), [6]uint64{}, "EPERM"},
		{"sethostname", unix.AUDIT_ARCH_X86_64, nr("sethostname"), [6]uint64{}, "EPERM"},
		{"settimeofday", unix.AUDIT_ARCH_X86_64, nr("settimeofday"), [6]uint64{}, "EPERM"},
		{"iopl", unix.AUDIT_ARCH_X86_64, nr("iopl"), [6]uint64{}, "EPERM"},
		{"acct", unix.AUDIT_ARCH_X86_64, nr("acct"), [6]uint64{}, "EPERM"},
		{"syslog", unix.AUDIT_ARCH_X86_64, nr("syslog"), [6]uint64{}, "EPERM"},
		{"personality 0", unix.AUDIT_ARCH_X86_64, nr("personality"), [6]uint64{0}, "allow"},
		{"personality query", unix.AUDIT_ARCH_X86_64, nr("personality"), [6]uint64{0xffffffff}, "allow"},
		{"personality READ_IMPLIES_EXEC", unix.AUDIT_ARCH_X86_64, nr("personality"), [6]uint64{0x0400000}, "EPERM"},
		{"personality ADDR_NO_RANDOMIZE", unix.AUDIT_ARCH_X86_64, nr("personality"), [6]uint64{0x0040000}, "EPERM"},
		{"socket AF_UNIX", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{unix.AF_UNIX}, "allow"},
		{"socket AF_INET", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{unix.AF_INET}, "allow"},
		{"socket AF_INET6", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{unix.AF_INET6}, "allow"},
		{"socket AF_NETLINK", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{unix.AF_NETLINK}, "allow"},
		{"socket AF_VSOCK", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{unix.AF_VSOCK}, "EPERM"},
		{"socket AF_ALG", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{unix.AF_ALG}, "EPERM"},
		{"socket AF_INET high bits", unix.AUDIT_ARCH_X86_64, nr("socket"), [6]uint64{1<<32 | unix.AF_INET}, "EPERM"},
		{"unassigned number", unix.AUDIT_ARCH_X86_64, 400, [6]uint64{}, "EPERM"},
		{"newer than the table", unix.AUDIT_ARCH_X86_64, a.max + 1, [6]uint64{}, "ENOSYS"},
		{"far above the table", unix.AUDIT_ARCH_X86_64, 0x3fffffff, [6]uint64{}, "ENOSYS"},
		{"x32 getpid", unix.AUDIT_ARCH_X86_64, x32Bit | nr("getpid"), [6]uint64{}, "kill"},
		{"x32 top", unix.AUDIT_ARCH_X86_64, 0xffffffff, [6]uint64{}, "kill"},
		{"i386 getpid", unix.AUDIT_ARCH_I386, 20, [6]uint64{}, "kill"},
		{"aarch64 read", unix.AUDIT_ARCH_AARCH64, 63, [6]uint64{}, "kill"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retName(v.run(tt.audit, tt.nr, tt.args)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestCompile runs the compiled filter against an evaluation of the
// resolved profile, for every system call number and many arguments, on
// each architecture (with the profile resolved for this host's: the names
// differ, the compiler's work does not).
func TestCompile(t *testing.T) {
	p, err := hostProfile()
	if err != nil {
		t.Fatal(err)
	}
	for _, goarch := range []string{"amd64", "arm64"} {
		t.Run(goarch, func(t *testing.T) {
			a, err := archFor(goarch)
			if err != nil {
				t.Fatal(err)
			}
			tb, err := resolve(a, p)
			if err != nil {
				t.Fatal(err)
			}
			testCompile(t, a, tb)
		})
	}
}

func testCompile(t *testing.T, a *arch, tb *table) {
	insns, err := compile(a, tb)
	if err != nil {
		t.Fatal(err)
	}
	v := newVM(t, encode(insns))
	values := []uint64{0, 1, 2, 3, 0xffffffff, 1 << 32, ^uint64(0)}
	for i := range 64 {
		values = append(values, 1<<i, 1<<i|uint64(unix.SIGCHLD))
	}
	for i := range 64 {
		values = append(values, uint64(i), uint64(i)|1<<63)
	}
	for _, c := range tb.calls {
		for _, r := range c.rules {
			for _, cond := range r.conds {
				for _, d := range []uint64{0, 1, ^uint64(0), 1 << 32, 0xffffffff << 32} {
					values = append(values, cond.Value+d, cond.Value^d, cond.ValueTwo+d)
				}
			}
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		values = append(values, rnd.Uint64(), rnd.Uint64()&0xffffffff)
	}
	checked := 0
	for nr := uint32(0); nr <= a.max+2; nr++ {
		c, ok := tb.calls[nr]
		argSets := [][6]uint64{{}}
		if ok && len(c.rules) > 0 {
			argSets = nil
			for _, x := range values {
				for i := range 6 {
					var args [6]uint64
					args[i] = x
					argSets = append(argSets, args)
				}
				argSets = append(argSets, [6]uint64{x, x, x, x, x, x})
			}
		}
		for _, args := range argSets {
			want := evaluate(a, tb, a.audit, nr, args)
			if got := v.run(a.audit, nr, args); got != want {
				t.Fatalf("system call %d, args %#x: got %s, want %s", nr, args, retName(got), retName(want))
			}
			checked++
		}
	}
	t.Logf("%d system call numbers, %d evaluations, %d instructions", a.max+3, checked, len(insns))
}

// evaluate is the reference semantics compile implements.
func evaluate(a *arch, tb *table, audit, nr uint32, args [6]uint64) uint32 {
	switch {
	case audit != a.audit, a.x32 && nr >= x32Bit:
		return retKill
	case nr > a.max:
		return retENOSYS
	}
	c, ok := tb.calls[nr]
	if !ok {
		return tb.def
	}
	if len(c.rules) == 0 {
		return c.ret
	}
next:
	for _, r := range c.rules {
		for _, cond := range r.conds {
			x := args[cond.Index]
			var holds bool
			switch cond.Op {
			case specs.OpEqualTo:
				holds = x == cond.Value
			case specs.OpNotEqual:
				holds = x != cond.Value
			case specs.OpMaskedEqual:
				holds = x&cond.Value == cond.ValueTwo
			case specs.OpLessThan:
				holds = x < cond.Value
			case specs.OpLessEqual:
				holds = x <= cond.Value
			case specs.OpGreaterThan:
				holds = x > cond.Value
			case specs.OpGreaterEqual:
				holds = x >= cond.Value
			}
			if !holds {
				continue next
			}
		}
		return r.ret
	}
	return tb.def
}

// TestOperators compiles one rule per operator and checks it on boundary
// values, including the high words Docker's profile never compares.
func TestOperators(t *testing.T) {
	a, err := archFor(runtime.GOARCH)
	if err != nil {
		t.Skip(err)
	}
	const value = 0x1_0000_0005
	ops := []specs.LinuxSeccompOperator{
		specs.OpEqualTo, specs.OpNotEqual, specs.OpMaskedEqual,
		specs.OpLessThan, specs.OpLessEqual, specs.OpGreaterThan, specs.OpGreaterEqual,
	}
	var xs []uint64
	for _, hi := range []uint64{0, 1, 2, 0xffffffff} {
		for _, lo := range []uint64{0, 4, 5, 6, 0xffffffff} {
			xs = append(xs, hi<<32|lo)
		}
	}
	for _, op := range ops {
		t.Run(string(op), func(t *testing.T) {
			p := &specs.LinuxSeccomp{
				DefaultAction: specs.ActErrno,
				Syscalls: []specs.LinuxSyscall{{
					Names:  []string{"read"},
					Action: specs.ActAllow,
					Args:   []specs.LinuxSeccompArg{{Index: 3, Value: value, ValueTwo: 0x1_0000_0004, Op: op}},
				}},
			}
			tb, err := resolve(a, p)
			if err != nil {
				t.Fatal(err)
			}
			insns, err := compile(a, tb)
			if err != nil {
				t.Fatal(err)
			}
			v := newVM(t, encode(insns))
			nr := uint32(a.nums["read"])
			for _, x := range xs {
				args := [6]uint64{3: x}
				if got, want := v.run(a.audit, nr, args), evaluate(a, tb, a.audit, nr, args); got != want {
					t.Errorf("arg %#x: got %s, want %s", x, retName(got), retName(want))
				}
			}
		})
	}
}

// TestUnknownNames pins the names of Docker's list that this architecture
// lacks: were a call the sandbox needs among them, it would be refused.
func TestUnknownNames(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the list below is amd64's")
	}
	_, tb := hostTable(t)
	want := []string{
		"_llseek", "_newselect", "chown32", "clock_adjtime64", "clock_getres_time64", "clock_gettime64",
		"clock_nanosleep_time64", "fadvise64_64", "fchown32", "fcntl64", "fstat64", "fstatat64", "fstatfs64",
		"ftruncate64", "futex_time64", "getegid32", "geteuid32", "getgid32", "getgroups32", "getresgid32",
		"getresuid32", "getuid32", "io_pgetevents_time64", "ipc", "lchown32", "lstat64", "mmap2",
		"mq_timedreceive_time64", "mq_timedsend_time64", "ppoll_time64", "pselect6_time64", "recv",
		"recvmmsg_time64", "riscv_hwprobe", "rt_sigtimedwait_time64", "sched_rr_get_interval_time64",
		"semtimedop_time64", "send", "sendfile64", "setfsgid32", "setfsuid32", "setgid32", "setgroups32",
		"setregid32", "setresgid32", "setresuid32", "setreuid32", "setuid32", "sigprocmask", "sigreturn",
		"socketcall", "stat64", "statfs64", "timer_gettime64", "timer_settime64", "timerfd_gettime64",
		"timerfd_settime64", "truncate64", "ugetrlimit", "utimensat_time64", "waitpid",
	}
	if diff := cmp.Diff(want, tb.unknowns); diff != "" {
		t.Errorf("names missing from the amd64 table (-want +got):\n%s", diff)
	}
}

// TestResolveRejects covers profiles the compiler must not guess at.
func TestResolveRejects(t *testing.T) {
	a, err := archFor(runtime.GOARCH)
	if err != nil {
		t.Skip(err)
	}
	enosys := uint(unix.ENOSYS)
	tests := []struct {
		name  string
		calls []specs.LinuxSyscall
	}{
		{"conflicting actions", []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActAllow},
			{Names: []string{"read"}, Action: specs.ActErrno, ErrnoRet: &enosys},
		}},
		{"conditional against unconditional", []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActErrno},
			{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpEqualTo}}},
		}},
		{"two conditions on one argument", []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 1, Op: specs.OpGreaterThan}, {Index: 0, Value: 5, Op: specs.OpLessThan},
			}},
		}},
		{"argument out of range", []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}},
		}},
		{"unknown operator", []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_BOGUS"}}},
		}},
		{"unsupported action", []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActNotify},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: tt.calls}
			if _, err := resolve(a, p); err == nil {
				t.Error("got no error")
			}
		})
	}
}

// TestLongJumps compiles a profile whose search tree is too wide for
// conditional jumps, so compile must hop over unconditional ones.
func TestLongJumps(t *testing.T) {
	a, err := archFor(runtime.GOARCH)
	if err != nil {
		t.Skip(err)
	}
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	for name, n := range a.nums {
		if n%2 == 0 {
			p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
				Names:  []string{name},
				Action: specs.ActAllow,
				Args:   []specs.LinuxSeccompArg{{Index: 0, Value: uint64(n), Op: specs.OpEqualTo}},
			})
		}
	}
	tb, err := resolve(a, p)
	if err != nil {
		t.Fatal(err)
	}
	insns, err := compile(a, tb)
	if err != nil {
		t.Fatal(err)
	}
	long := 0
	for _, in := range insns {
		if in.Code == unix.BPF_JMP|unix.BPF_JA {
			long++
		}
	}
	if long == 0 {
		t.Fatalf("got no unconditional jump in %d instructions; the test no longer covers long jumps", len(insns))
	}
	v := newVM(t, encode(insns))
	for nr := uint32(0); nr <= a.max+1; nr++ {
		for _, args := range [][6]uint64{{}, {uint64(nr)}, {uint64(nr) | 1<<32}} {
			if got, want := v.run(a.audit, nr, args), evaluate(a, tb, a.audit, nr, args); got != want {
				t.Fatalf("system call %d, args %#x: got %s, want %s", nr, args, retName(got), retName(want))
			}
		}
	}
}
