package diskimg

import (
	"fmt"
	"os"
	"strings"
)

// MountPoint is one mount of this process's mount namespace.
type MountPoint struct {
	Point string // the mount point, unescaped
	// Propagation is the mount's optional fields ("shared:N", "master:N",
	// ...; empty for a private mount).
	Propagation []string
}

// Mounts lists the mounts of this process's mount namespace, in
// /proc/self/mountinfo's order (a later mount on a point covers an earlier).
func Mounts() ([]MountPoint, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return mountPoints(string(b)), nil
}

// mountPoints lists the mounts of a mountinfo text, in its order.
func mountPoints(mountinfo string) []MountPoint {
	var out []MountPoint
	for line := range strings.Lines(mountinfo) {
		if e, ok := parseMountinfoLine(strings.TrimSuffix(line, "\n")); ok {
			out = append(out, MountPoint{Point: e.point, Propagation: e.optional})
		}
	}
	return out
}

// mountEntry is the part of a /proc/self/mountinfo line Find and Mounts
// need.
type mountEntry struct {
	dev      string   // major:minor of the mounted device
	point    string   // mount point, unescaped
	optional []string // the optional fields (propagation), nil when none
	fstype   string
	source   string // unescaped
}

// mountAt returns the topmost mount on point in a mountinfo text (the last
// line naming it: later mounts cover earlier ones).
func mountAt(mountinfo, point string) (mountEntry, bool) {
	var found mountEntry
	ok := false
	for line := range strings.Lines(mountinfo) {
		e, valid := parseMountinfoLine(strings.TrimSuffix(line, "\n"))
		if valid && e.point == point {
			found, ok = e, true
		}
	}
	return found, ok
}

// parseMountinfoLine parses one line of proc(5) mountinfo:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// (ID, parent ID, major:minor, root, mount point, options, optional fields
// ended by "-", filesystem type, source, super options).
func parseMountinfoLine(line string) (mountEntry, bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return mountEntry{}, false
	}
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(f) {
		return mountEntry{}, false
	}
	var optional []string
	if sep > 6 {
		optional = f[6:sep]
	}
	return mountEntry{
		dev:      f[2],
		optional: optional,
		point:    unescapeOctal(f[4]),
		fstype:   unescapeOctal(f[sep+1]),
		source:   unescapeOctal(f[sep+2]),
	}, true
}

// unescapeOctal undoes the kernel's mangling of space, tab, newline and
// backslash in mountinfo fields (\040, \011, \012, \134).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
