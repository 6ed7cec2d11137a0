// Package seccomp builds the seccomp filter the local driver installs in every
// sandbox, through bubblewrap's --seccomp FD, right before the sandbox's first
// program runs.
//
// The code in a sandbox is hostile, and the kernel is the boundary: the filter
// shrinks the kernel surface it can reach to what ordinary programs use. The
// allow-list is Docker's default profile (github.com/moby/profiles/seccomp),
// evaluated for this host's architecture, the running kernel, and processes
// with no capabilities (the sandbox's bounding set is empty; the agent's
// CAP_SETUID, CAP_SETGID and CAP_SETPCAP gate no rule of the profile). So the
// filter refuses, among others:
//
//   - namespaces: unshare, setns, clone with any CLONE_NEW* flag, and clone3
//     (ENOSYS, so C libraries fall back to clone, whose flags a filter can
//     read). A user namespace would hand the sandbox a full capability set
//     over fresh namespaces, the door to most kernel privilege escalations;
//   - mounts: mount, umount2, pivot_root, chroot, and the new mount API
//     (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick,
//     mount_setattr);
//   - kernel code and state: bpf, perf_event_open, init_module, finit_module,
//     delete_module, kexec_load, kexec_file_load, reboot, swapon, swapoff,
//     acct, quotactl, syslog, clock setting, iopl and ioperm;
//   - the kernel keyring (add_key, request_key, keyctl), which is not
//     namespaced; userfaultfd and io_uring, the raw material of many exploits;
//     open_by_handle_at, which opens files by handle around bind mounts;
//   - socket families a workload has no use for: AF_VSOCK (host/guest
//     sockets, global across network namespaces) and AF_ALG (the kernel
//     crypto API);
//   - personality values other than the usual ones (no READ_IMPLIES_EXEC,
//     no ADDR_NO_RANDOMIZE).
//
// ptrace, process_vm_readv and process_vm_writev stay allowed, as in Docker
// on kernels from 4.8 on (where seccomp also filters a tracee's rewritten
// calls): the sandbox's PID namespace holds only its own processes, the
// agent's capabilities put it out of reach of capability-less tracers, and
// debuggers (gdb, strace, delve) need them.
//
// Stricter than Docker: system calls of another ABI (i386 through int 0x80
// on amd64, AArch32 on arm64, and x32) kill the process, where Docker admits
// the 32-bit ABIs; a second syscall table is a second attack surface that no
// workload here needs. As in runc, a number above every system call this
// package knows of (one newer than its table) fails with ENOSYS, so C
// libraries fall back to an older call rather than give up on EPERM. Any
// other system call outside the list fails with EPERM.
//
// No new privileges is set by bubblewrap, which lets an unprivileged process
// install the filter; the filter is inherited by every descendant and cannot
// be removed.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"

	elasticarch "github.com/elastic/go-seccomp-bpf/arch"
	dockerprofile "github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Program returns the filter for this host's architecture and running kernel,
// as bubblewrap's --seccomp reads it: a raw array of struct sock_filter (8
// bytes each: u16 code, u8 jt, u8 jf, u32 k, in native byte order). The
// result depends only on the host, so callers compute it once.
//
// bubblewrap reads the fd to its end, so each sandbox start needs its own
// fd (a pipe written before the start, or a fresh memfd): a shared one would
// share its file offset between concurrent starts.
func Program() ([]byte, error) {
	a, err := archFor(runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	prof, err := hostProfile()
	if err != nil {
		return nil, err
	}
	t, err := resolve(a, prof)
	if err != nil {
		return nil, err
	}
	insns, err := compile(a, t)
	if err != nil {
		return nil, err
	}
	return encode(insns), nil
}

// hostProfile evaluates Docker's default profile for this architecture, the
// running kernel, and an empty capability set.
func hostProfile() (*specs.LinuxSeccomp, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	p, err := dockerprofile.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("evaluate docker's default seccomp profile: %w", err)
	}
	if p == nil {
		return nil, errors.New("evaluate docker's default seccomp profile: empty profile")
	}
	return p, nil
}

// arch is what the filter needs to know of an architecture.
type arch struct {
	goarch string
	audit  uint32         // AUDIT_ARCH_* the kernel reports in seccomp_data.arch
	x32    bool           // numbers with __X32_SYSCALL_BIT come from the x32 ABI
	nums   map[string]int // system call numbers by name
	max    uint32         // highest number in nums
}

// x32Bit marks x32 system calls, which share AUDIT_ARCH_X86_64 with amd64.
const x32Bit = 0x40000000

func archFor(goarch string) (*arch, error) {
	var a *arch
	switch goarch {
	case "amd64":
		a = &arch{goarch: goarch, audit: unix.AUDIT_ARCH_X86_64, x32: true, nums: elasticarch.X86_64.SyscallNames}
	case "arm64":
		a = &arch{goarch: goarch, audit: unix.AUDIT_ARCH_AARCH64, nums: elasticarch.AARCH64.SyscallNames}
	default:
		return nil, fmt.Errorf("seccomp filter: unsupported architecture %s", goarch)
	}
	for _, n := range a.nums {
		if n < 0 || n >= x32Bit {
			return nil, fmt.Errorf("seccomp filter: %s: system call number %d out of range", goarch, n)
		}
		a.max = max(a.max, uint32(n))
	}
	return a, nil
}

// Return values of the filter (SECCOMP_RET_*).
const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
	retErrno  = unix.SECCOMP_RET_ERRNO
	retEPERM  = retErrno | uint32(unix.EPERM)
	retENOSYS = retErrno | uint32(unix.ENOSYS)
)

// table is a resolved profile: a verdict per system call number, and the
// return of every number it does not list.
type table struct {
	def      uint32
	calls    map[uint32]verdict
	unknowns []string // names the profile lists that this architecture lacks
}

// verdict is what the filter does with one system call: return ret, or, when
// rules is not empty, the return of the first rule whose conditions all hold,
// and def otherwise.
type verdict struct {
	ret   uint32
	rules []rule
}

type rule struct {
	conds []specs.LinuxSeccompArg
	ret   uint32
}

// resolve turns a profile into a table. As libseccomp does, names the
// architecture lacks are skipped (Docker lists the 32-bit and other
// architectures' calls in the same list); rules for one call are alternatives
// (any may allow it), and the arguments of one rule must all match.
func resolve(a *arch, p *specs.LinuxSeccomp) (*table, error) {
	def, err := ret(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("default action: %w", err)
	}
	t := &table{def: def, calls: map[uint32]verdict{}}
	type acc struct {
		uncond []uint32
		rules  []rule
	}
	accs := map[uint32]*acc{}
	for _, s := range p.Syscalls {
		r, err := ret(s.Action, s.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("rule for %v: %w", s.Names, err)
		}
		seen := map[uint]bool{}
		for _, c := range s.Args {
			if c.Index > 5 {
				return nil, fmt.Errorf("rule for %v: argument %d out of range", s.Names, c.Index)
			}
			// runc turns two conditions on one argument into alternatives;
			// this filter would require both. Docker's profile has none.
			if seen[c.Index] {
				return nil, fmt.Errorf("rule for %v: two conditions on argument %d", s.Names, c.Index)
			}
			seen[c.Index] = true
			if !supported(c.Op) {
				return nil, fmt.Errorf("rule for %v: unsupported operator %s", s.Names, c.Op)
			}
		}
		for _, name := range s.Names {
			n, ok := a.nums[name]
			if !ok {
				t.unknowns = append(t.unknowns, name)
				continue
			}
			ac := accs[uint32(n)]
			if ac == nil {
				ac = &acc{}
				accs[uint32(n)] = ac
			}
			if len(s.Args) == 0 {
				ac.uncond = append(ac.uncond, r)
			} else {
				ac.rules = append(ac.rules, rule{conds: s.Args, ret: r})
			}
		}
	}
	for n, ac := range accs {
		var v verdict
		switch {
		case len(ac.uncond) > 0:
			// An unconditional rule decides, unless another rule for the
			// same call disagrees: then the profile is ambiguous.
			for _, r := range ac.uncond {
				if r != ac.uncond[0] {
					return nil, fmt.Errorf("system call %d: conflicting rules", n)
				}
			}
			for _, r := range ac.rules {
				if r.ret != ac.uncond[0] {
					return nil, fmt.Errorf("system call %d: conditional and unconditional rules conflict", n)
				}
			}
			v.ret = ac.uncond[0]
		default:
			v.ret, v.rules = def, ac.rules
		}
		t.calls[n] = v
	}
	slices.Sort(t.unknowns)
	t.unknowns = slices.Compact(t.unknowns)
	return t, nil
}

// ret maps a profile action to the filter's return value.
func ret(a specs.LinuxSeccompAction, errno *uint) (uint32, error) {
	switch a {
	case specs.ActAllow:
		return retAllow, nil
	case specs.ActErrno:
		e := uint(unix.EPERM)
		if errno != nil {
			e = *errno
		}
		if e > unix.SECCOMP_RET_DATA {
			return 0, fmt.Errorf("errno %d out of range", e)
		}
		return retErrno | uint32(e), nil
	case specs.ActKillProcess:
		return retKill, nil
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	}
	return 0, fmt.Errorf("unsupported action %s", a)
}

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// maxJump is the longest conditional jump of classic BPF.
const maxJump = math.MaxUint8

// compile assembles t into classic BPF:
//
//  1. a foreign architecture (audit arch) or an x32 number kills the process;
//  2. a number above a.max returns ENOSYS;
//  3. a binary search over ranges of numbers with one verdict reaches that
//     verdict in about log2(ranges) comparisons, so the common calls cost the
//     same as the rare ones.
func compile(a *arch, t *table) ([]unix.SockFilter, error) {
	if !littleEndian() {
		// Argument words are laid out for little-endian hosts below.
		return nil, errors.New("seccomp filter: big-endian hosts are not supported")
	}
	p := []unix.SockFilter{
		ld(offArch),
		jump(unix.BPF_JEQ, a.audit, 1, 0),
		retK(retKill),
		ld(offNr),
	}
	if a.x32 {
		p = append(p, jump(unix.BPF_JGE, x32Bit, 0, 1), retK(retKill))
	}
	p = append(p, jump(unix.BPF_JGT, a.max, 0, 1), retK(retENOSYS))
	tree, err := search(segments(a, t), t.def)
	if err != nil {
		return nil, err
	}
	p = append(p, tree...)
	if len(p) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp filter: %d instructions, the kernel takes at most %d", len(p), unix.BPF_MAXINSNS)
	}
	return p, nil
}

// segment is a range of system call numbers with one verdict.
type segment struct {
	lo, hi uint32
	v      verdict
}

// segments splits 0..a.max into ranges, merging neighbours that return the
// same constant. A call with argument rules stays a range of its own.
func segments(a *arch, t *table) []segment {
	var segs []segment
	for n := uint32(0); n <= a.max; n++ {
		v, ok := t.calls[n]
		if !ok {
			v = verdict{ret: t.def}
		}
		if l := len(segs) - 1; l >= 0 && len(v.rules) == 0 && len(segs[l].v.rules) == 0 && segs[l].v.ret == v.ret {
			segs[l].hi = n
			continue
		}
		segs = append(segs, segment{lo: n, hi: n, v: v})
	}
	return segs
}

// search emits a binary search over segs (sorted, contiguous), with the
// system call number in A.
func search(segs []segment, def uint32) ([]unix.SockFilter, error) {
	if len(segs) == 1 {
		return leaf(segs[0].v, def)
	}
	mid := len(segs) / 2
	left, err := search(segs[:mid], def)
	if err != nil {
		return nil, err
	}
	right, err := search(segs[mid:], def)
	if err != nil {
		return nil, err
	}
	var p []unix.SockFilter
	if len(left) <= maxJump {
		p = append(p, jump(unix.BPF_JGE, segs[mid].lo, uint8(len(left)), 0))
	} else {
		// Too far for a conditional jump: hop over an unconditional one.
		p = append(p, jump(unix.BPF_JGE, segs[mid].lo, 0, 1), unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(len(left))})
	}
	p = append(p, left...)
	return append(p, right...), nil
}

// leaf emits one verdict: each rule in turn returns its action when all its
// conditions hold, and falls through to the next otherwise.
func leaf(v verdict, def uint32) ([]unix.SockFilter, error) {
	if len(v.rules) == 0 {
		return []unix.SockFilter{retK(v.ret)}, nil
	}
	var p []unix.SockFilter
	for _, r := range v.rules {
		code, err := ruleCode(r)
		if err != nil {
			return nil, err
		}
		p = append(p, code...)
	}
	return append(p, retK(def)), nil
}

// fail stands for "to the end of this rule" in a jump offset until ruleCode
// resolves it.
const fail = 0xff

// ruleCode emits the conditions of r, 64-bit comparisons made of two 32-bit
// ones, then return r.ret; a failed condition jumps past that return.
func ruleCode(r rule) ([]unix.SockFilter, error) {
	type insn struct {
		f            unix.SockFilter
		failT, failF bool
	}
	var code []insn
	emit := func(f unix.SockFilter) { code = append(code, insn{f: f}) }
	// j emits a jump; fail in jt or jf means to the end of the rule.
	j := func(op uint16, k uint32, jt, jf uint8) {
		in := insn{f: jump(op, k, jt, jf), failT: jt == fail, failF: jf == fail}
		code = append(code, in)
	}
	for _, c := range r.conds {
		lo, hi := offArgs+8*uint32(c.Index), offArgs+8*uint32(c.Index)+4
		vlo, vhi := uint32(c.Value), uint32(c.Value>>32)
		switch c.Op {
		case specs.OpEqualTo:
			emit(ld(hi))
			j(unix.BPF_JEQ, vhi, 0, fail)
			emit(ld(lo))
			j(unix.BPF_JEQ, vlo, 0, fail)
		case specs.OpNotEqual:
			emit(ld(hi))
			j(unix.BPF_JEQ, vhi, 0, 2)
			emit(ld(lo))
			j(unix.BPF_JEQ, vlo, fail, 0)
		case specs.OpMaskedEqual:
			// (arg & Value) == ValueTwo
			wlo, whi := uint32(c.ValueTwo), uint32(c.ValueTwo>>32)
			emit(ld(hi))
			emit(and(vhi))
			j(unix.BPF_JEQ, whi, 0, fail)
			emit(ld(lo))
			emit(and(vlo))
			j(unix.BPF_JEQ, wlo, 0, fail)
		case specs.OpLessThan, specs.OpLessEqual:
			last := uint16(unix.BPF_JGE)
			if c.Op == specs.OpLessEqual {
				last = unix.BPF_JGT
			}
			emit(ld(hi))
			j(unix.BPF_JGT, vhi, fail, 0)
			j(unix.BPF_JEQ, vhi, 0, 2) // high word below: holds
			emit(ld(lo))
			j(last, vlo, fail, 0)
		case specs.OpGreaterThan, specs.OpGreaterEqual:
			last := uint16(unix.BPF_JGT)
			if c.Op == specs.OpGreaterEqual {
				last = unix.BPF_JGE
			}
			emit(ld(hi))
			j(unix.BPF_JGT, vhi, 3, 0) // high word above: holds
			j(unix.BPF_JEQ, vhi, 0, fail)
			emit(ld(lo))
			j(last, vlo, 0, fail)
		default:
			return nil, fmt.Errorf("unsupported operator %s", c.Op)
		}
	}
	emit(retK(r.ret))
	out := make([]unix.SockFilter, len(code))
	for i, in := range code {
		skip := len(code) - (i + 1)
		if (in.failT || in.failF) && skip > maxJump {
			return nil, fmt.Errorf("rule with %d conditions too long", len(r.conds))
		}
		if in.failT {
			in.f.Jt = uint8(skip)
		}
		if in.failF {
			in.f.Jf = uint8(skip)
		}
		out[i] = in.f
	}
	return out, nil
}

// supported reports whether ruleCode compiles op.
func supported(op specs.LinuxSeccompOperator) bool {
	switch op {
	case specs.OpEqualTo, specs.OpNotEqual, specs.OpMaskedEqual,
		specs.OpLessThan, specs.OpLessEqual, specs.OpGreaterThan, specs.OpGreaterEqual:
		return true
	}
	return false
}

func ld(off uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
}

func jump(op uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

func and(k uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: k}
}

func retK(k uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k}
}

// encode lays p out as the kernel's struct sock_filter array.
func encode(p []unix.SockFilter) []byte {
	b := make([]byte, 0, 8*len(p))
	for _, f := range p {
		b = binary.NativeEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.NativeEndian.AppendUint32(b, f.K)
	}
	return b
}

func littleEndian() bool {
	return binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}
