package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"syscall"
)

// procInfo is what killTree needs of a process: its parent, process group
// and session.
type procInfo struct{ ppid, pgid, sid int }

// readProcs reads every process's parent, group and session from /proc.
func readProcs() map[int]procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	_ = d.Close()
	out := make(map[int]procInfo, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + n + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp session ...; comm may hold anything, so
		// parse after its last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 4 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		pgid, _ := strconv.Atoi(string(f[2]))
		sid, _ := strconv.Atoi(string(f[3]))
		out[pid] = procInfo{ppid: ppid, pgid: pgid, sid: sid}
	}
	return out
}

// family returns root and the processes that belong to it: its
// descendants, the members of its process group, and the members of any
// process group or session one of those leads. A tool a command starts in
// a session of its own (as Claude Code's Bash tool does) is a descendant
// while its starter lives, and a job it left behind is still in the
// session or group that tool leads.
func family(procs map[int]procInfo, root int) map[int]bool {
	in := map[int]bool{root: true}
	for grew := true; grew; {
		grew = false
		for pid, p := range procs {
			if in[pid] {
				continue
			}
			if in[p.ppid] || p.pgid == root || (in[p.pgid] && procs[p.pgid].pgid == p.pgid) || (in[p.sid] && procs[p.sid].sid == p.sid) {
				in[pid] = true
				grew = true
			}
		}
	}
	return in
}

// execTagVar is set in every exec's environment to a value of its own, so
// that the processes it started can be found after they left its process
// tree (a job sent to the background by a shell that exited since).
const execTagVar = "TECHBOSS_EXEC_ID"

// newExecTag returns a fresh exec tag ("" if no randomness is at hand).
func newExecTag() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return ""
	}
	return hex.EncodeToString(b[:])
}

// tagged reports whether process pid's environment (as it was exec'd)
// holds the exec tag. Processes of other users than the agent's are not
// readable (no CAP_SYS_PTRACE): those count as untagged.
func tagged(pid int, tag string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	want := []byte(execTagVar + "=" + tag)
	for _, kv := range bytes.Split(b, []byte{0}) {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// killTree kills root and everything it started (see family, and the
// processes carrying its tag, if not ""), however the processes regrouped. It stops them first, round after round until no
// new one appears, so that none can fork a process that escapes the walk,
// then kills them all. The agent itself is never among them.
func killTree(root int, tag string) {
	self := os.Getpid()
	// The command's group first, at once: a fork bomb in it cannot outrun
	// a group signal. root 0: the command has exited and was reaped (its
	// pid may be another's now); only what carries the tag is killed.
	if root > 0 {
		_ = syscall.Kill(-root, syscall.SIGSTOP)
	}
	stopped := map[int]bool{}
	for range 50 {
		procs := readProcs()
		fam := map[int]bool{}
		if root > 0 {
			fam = family(procs, root)
		}
		if tag != "" {
			// Those that left the family (their parents and the leader of
			// their session died) but still carry the exec's tag.
			for pid := range procs {
				if !fam[pid] && pid != self && pid > 1 && tagged(pid, tag) {
					fam[pid] = true
				}
			}
		}
		grew := false
		for pid := range fam {
			if pid == self || pid <= 1 || stopped[pid] {
				continue
			}
			_ = syscall.Kill(-pid, syscall.SIGSTOP) // its group, if it leads one
			_ = syscall.Kill(pid, syscall.SIGSTOP)
			stopped[pid] = true
			grew = true
		}
		if !grew {
			break
		}
	}
	// root last: its exit, which the driver waits for, comes after every
	// other one was sent its kill.
	for pid := range stopped {
		if pid != root {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if root > 0 {
		_ = syscall.Kill(-root, syscall.SIGKILL)
		_ = syscall.Kill(root, syscall.SIGKILL)
	}
}
