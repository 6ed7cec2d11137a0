package local

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where the driver's groups live: /sys/fs/cgroup/<ctrl>/techboss/<id>
// on v1, /sys/fs/cgroup/techboss/<id> on the unified (v2) hierarchy.
const cgroupParent = "techboss"

// pidsOverhead is added to pids_limit for the sandbox's own tasks:
// bubblewrap's two processes and the agent's threads, about 20 however many
// commands run (see agent.WarmThreads; TestAgentThreadsBounded holds it to
// this). The agent makes its threads at start, so a command that takes
// every PID it may have cannot starve it.
const pidsOverhead = 32

type cgroupMode int

const (
	cgroupNone cgroupMode = iota
	cgroupV1
	cgroupV2
)

// cgroups is the per-sandbox cgroup set.
type cgroups struct {
	Mode cgroupMode `json:"mode"`
	// Dirs are the group directories (one per v1 controller, one on v2).
	Dirs []string `json:"dirs"`
}

var v1Controllers = []string{"memory", "pids", "cpu", "freezer"}

func detectCgroups(root string) cgroupMode {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return cgroupV2
	}
	if _, err := os.Stat(filepath.Join(root, "memory", "memory.limit_in_bytes")); err == nil {
		return cgroupV1
	}
	return cgroupNone
}

type limits struct {
	memoryMB int
	pids     int
	cpu      float64
}

func writeFile(path, val string) error {
	if err := os.WriteFile(path, []byte(val), 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// newCgroups creates the sandbox's groups and applies its limits.
func newCgroups(root string, mode cgroupMode, id string, l limits) (cgroups, error) {
	cg := cgroups{Mode: mode}
	switch mode {
	case cgroupV1:
		for _, ctrl := range v1Controllers {
			// Joining a v1 group costs a migration per controller on the
			// create path: join memory and cpu only when they limit.
			if (ctrl == "memory" && l.memoryMB <= 0) || (ctrl == "cpu" && l.cpu <= 0) {
				continue
			}
			base := filepath.Join(root, ctrl)
			if _, err := os.Stat(base); err != nil {
				continue
			}
			if err := os.MkdirAll(filepath.Join(base, cgroupParent), 0o755); err != nil {
				return cg, fmt.Errorf("create cgroup: %w", err)
			}
			dir := filepath.Join(base, cgroupParent, id)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return cg, fmt.Errorf("create cgroup: %w", err)
			}
			cg.Dirs = append(cg.Dirs, dir)
			switch ctrl {
			case "memory":
				if l.memoryMB > 0 {
					b := strconv.FormatInt(int64(l.memoryMB)<<20, 10)
					if err := writeFile(filepath.Join(dir, "memory.limit_in_bytes"), b); err != nil {
						return cg, err
					}
					// No swap beyond the limit, where the kernel accounts it.
					_ = writeFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), b)
					_ = writeFile(filepath.Join(dir, "memory.swappiness"), "0")
				}
			case "pids":
				if l.pids > 0 {
					if err := writeFile(filepath.Join(dir, "pids.max"), strconv.Itoa(l.pids+pidsOverhead)); err != nil {
						return cg, err
					}
				}
			case "cpu":
				if l.cpu > 0 {
					if err := writeFile(filepath.Join(dir, "cpu.cfs_period_us"), "100000"); err != nil {
						return cg, err
					}
					if err := writeFile(filepath.Join(dir, "cpu.cfs_quota_us"), strconv.Itoa(int(l.cpu*100000))); err != nil {
						return cg, err
					}
				}
			}
		}
	case cgroupV2:
		parent := filepath.Join(root, cgroupParent)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return cg, fmt.Errorf("create cgroup: %w", err)
		}
		// Delegate the controllers we use down to our groups (best effort:
		// a controller the root does not offer simply stays unlimited).
		for _, c := range []string{"+memory", "+pids", "+cpu"} {
			_ = writeFile(filepath.Join(root, "cgroup.subtree_control"), c)
			_ = writeFile(filepath.Join(parent, "cgroup.subtree_control"), c)
		}
		dir := filepath.Join(parent, id)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return cg, fmt.Errorf("create cgroup: %w", err)
		}
		cg.Dirs = []string{dir}
		if l.memoryMB > 0 {
			b := strconv.FormatInt(int64(l.memoryMB)<<20, 10)
			if err := writeFile(filepath.Join(dir, "memory.max"), b); err != nil {
				return cg, err
			}
			_ = writeFile(filepath.Join(dir, "memory.swap.max"), "0")
		}
		if l.pids > 0 {
			if err := writeFile(filepath.Join(dir, "pids.max"), strconv.Itoa(l.pids+pidsOverhead)); err != nil {
				return cg, err
			}
		}
		if l.cpu > 0 {
			if err := writeFile(filepath.Join(dir, "cpu.max"), fmt.Sprintf("%d 100000", int(l.cpu*100000))); err != nil {
				return cg, err
			}
		}
	}
	return cg, nil
}

// procsFiles are the files the launcher writes its PID into.
func (cg cgroups) procsFiles() []string {
	out := make([]string, 0, len(cg.Dirs))
	for _, d := range cg.Dirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}

func (cg cgroups) dir(ctrl string) string {
	if cg.Mode == cgroupV2 {
		if len(cg.Dirs) > 0 {
			return cg.Dirs[0]
		}
		return ""
	}
	for _, d := range cg.Dirs {
		if filepath.Base(filepath.Dir(filepath.Dir(d))) == ctrl {
			return d
		}
	}
	return ""
}

// pids lists the host PIDs in the group.
func (cg cgroups) pids() ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, d := range cg.Dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read cgroup.procs: %w", err)
		}
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil && !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// oomKills reads the group's OOM-kill counter (0 if unknown).
func (cg cgroups) oomKills() int64 {
	var file, key string
	switch cg.Mode {
	case cgroupV1:
		file, key = filepath.Join(cg.dir("memory"), "memory.oom_control"), "oom_kill"
	case cgroupV2:
		file, key = filepath.Join(cg.dir(""), "memory.events"), "oom_kill"
	default:
		return 0
	}
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// killAll kills every process in the group until it is empty. On v1 it
// freezes the group first so nothing forks between listing and killing.
func (cg cgroups) killAll(deadline time.Time) error {
	freezer := ""
	switch cg.Mode {
	case cgroupV1:
		if d := cg.dir("freezer"); d != "" {
			freezer = filepath.Join(d, "freezer.state")
		}
	case cgroupV2:
		if d := cg.dir(""); d != "" {
			if err := writeFile(filepath.Join(d, "cgroup.kill"), "1"); err == nil {
				freezer = ""
			}
		}
	}
	wait := time.Millisecond
	for {
		pids, err := cg.pids()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL", pids)
		}
		if freezer != "" {
			_ = writeFile(freezer, "FROZEN")
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		if freezer != "" {
			_ = writeFile(freezer, "THAWED")
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// remove deletes the group directories (retrying while exiting tasks drain).
func (cg cgroups) remove(deadline time.Time) error {
	var errOut error
	for _, d := range cg.Dirs {
		wait := time.Millisecond
		for {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				errOut = errors.Join(errOut, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(wait)
			if wait < 50*time.Millisecond {
				wait *= 2
			}
		}
	}
	return errOut
}
