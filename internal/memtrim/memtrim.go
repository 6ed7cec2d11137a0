// Package memtrim gives back the memory an idle server does not use: the
// heap's garbage, and the pages of the server's own binary that start-up
// brought in and an idle server does not touch again.
package memtrim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stats says what Release did to the binary's mappings.
type Stats struct {
	Ranges   int   // read-only mappings of the binary released
	Released int64 // their resident bytes just before
	Kept     int64 // resident bytes of the binary's mappings left alone (written pages)
}

// Release collects the heap and returns its free pages to the OS, then
// releases the resident pages of the process's own executable.
//
// Start-up maps in tens of MiB of a large Go binary: some 350 package
// initialisers spread over its code, the type descriptors and function
// table they and the collector read, and with each page the kernel maps its
// cached neighbours (64 KiB around every fault). An idle server touches a
// few MiB of that. Release tells the kernel, for each read-only private
// mapping of the executable (code, read-only data, the function table):
//   - MADV_RANDOM: later faults read the page they need, not a window of
//     neighbours, so what comes back is what the server uses;
//   - MADV_PAGEOUT: reclaim the pages now (clean copies of the file once
//     it is written back, which Release makes sure of: a binary just built
//     may not be yet; pages another process maps too are left to it);
//   - MADV_DONTNEED: unmap whatever is still mapped (PAGEOUT leaves file
//     pages alone for a process that may not write the file).
//
// The cost is a read of the file for each page the server needs again
// (a major fault, about a tenth of a millisecond from a local disk). A
// mapping that holds any written (copy-on-write) page is left alone:
// releasing it would lose what was written.
func Release() (Stats, error) {
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return Stats{}, err
	}
	return releaseFile(exe)
}

// releaseFile releases the read-only private mappings of path in this
// process (see Release).
func releaseFile(path string) (Stats, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	var errsSeen []error
	// Pages not yet written back (a binary just built) cannot be
	// reclaimed: write them now, which costs nothing when they are clean.
	if f, err := os.Open(path); err == nil {
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			errsSeen = append(errsSeen, fmt.Errorf("write back %s: %w", path, err))
		}
		f.Close()
	}
	for _, m := range parseSmaps(smaps) {
		if m.path != path || m.rss == 0 {
			continue
		}
		if m.perms[1] == 'w' || m.perms[3] != 'p' || m.anon != 0 {
			st.Kept += m.rss
			continue
		}
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT, unix.MADV_DONTNEED} {
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, uintptr(advice)); e != 0 {
				// MADV_PAGEOUT is Linux 5.4 and later; the others still help.
				errsSeen = append(errsSeen, fmt.Errorf("madvise(%d) %x-%x %s: %w", advice, m.start, m.end, m.perms, e))
			}
		}
		st.Ranges++
		st.Released += m.rss
	}
	return st, errors.Join(errsSeen...)
}

// mapping is one entry of /proc/<pid>/smaps.
type mapping struct {
	start, end uintptr
	perms      string // e.g. "r-xp"
	path       string
	rss, anon  int64 // resident and anonymous (written private) bytes
}

// parseSmaps reads /proc/<pid>/smaps: each mapping's range, permissions,
// path, and its Rss and Anonymous sizes.
func parseSmaps(b []byte) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil || len(f) < 5 || len(f[1]) != 4 {
				continue
			}
			m := mapping{start: uintptr(s), end: uintptr(e), perms: f[1]}
			if len(f) >= 6 {
				m.path = strings.Join(f[5:], " ")
			}
			out = append(out, m)
			continue
		}
		if len(out) == 0 || len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			out[len(out)-1].rss = n << 10
		case "Anonymous:":
			out[len(out)-1].anon = n << 10
		}
	}
	return out
}
