package memtrim

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// mapFile maps path privately with prot and returns the mapping and its
// resident bytes as /proc/self/smaps reports them.
func mapFile(t *testing.T, path string, prot int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), prot, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(b) })
	return b
}

// resident is the Rss of the mappings of path.
func resident(t *testing.T, path string) (rss, anon int64) {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range parseSmaps(smaps) {
		if m.path == path {
			rss += m.rss
			anon += m.anon
		}
	}
	return rss, anon
}

// sink keeps the reads of mapped pages from being optimised away.
var sink byte

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// A read-only private mapping's pages leave the process's resident set,
// and reading them again gives the file's bytes.
func TestReleaseDropsReadOnlyPages(t *testing.T) {
	const size = 4 << 20
	path := filepath.Join(t.TempDir(), "ro")
	want := pattern(size)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	b := mapFile(t, path, unix.PROT_READ)
	for i := 0; i < size; i += 4096 {
		sink += b[i]
	}
	if rss, _ := resident(t, path); rss < size/2 {
		t.Fatalf("after touching every page the mapping holds %d KiB, want most of %d", rss>>10, size>>10)
	}
	st, err := releaseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ranges != 1 || st.Released < size/2 {
		t.Errorf("released %+v, want the one mapping with its pages", st)
	}
	if rss, _ := resident(t, path); rss > 64<<10 {
		t.Errorf("after release the mapping holds %d KiB, want (almost) none", rss>>10)
	}
	// One page touched is one page back: no window of neighbours.
	sink += b[size/2]
	if rss, _ := resident(t, path); rss > 4<<10 {
		t.Errorf("one page read after release brought %d KiB back, want 4", rss>>10)
	}
	if !bytes.Equal(b, want) {
		t.Fatal("the mapping's bytes changed across release")
	}
}

// A mapping with a written (copy-on-write) page is left alone: releasing
// it would put the file's bytes back in place of what was written.
func TestReleaseKeepsWrittenPages(t *testing.T) {
	const size = 64 << 10
	path := filepath.Join(t.TempDir(), "cow")
	if err := os.WriteFile(path, pattern(size), 0o644); err != nil {
		t.Fatal(err)
	}
	b := mapFile(t, path, unix.PROT_READ|unix.PROT_WRITE)
	b[3*4096+5] ^= 0xff
	written := b[3*4096+5]
	// Read-only now, as a relocated read-only segment would be.
	if err := unix.Mprotect(b, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	if _, anon := resident(t, path); anon == 0 {
		t.Fatal("the written page is not counted as anonymous; the test cannot tell")
	}
	st, err := releaseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ranges != 0 || st.Kept == 0 {
		t.Errorf("released %+v, want the written mapping kept", st)
	}
	if b[3*4096+5] != written {
		t.Fatal("the written byte was lost: a mapping with written pages was released")
	}
}

// The test binary releases its own code and tables and goes on running.
func TestReleaseSelf(t *testing.T) {
	st, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if st.Ranges < 2 || st.Released == 0 {
		t.Errorf("released %+v, want the binary's code and read-only data", st)
	}
	if got := filepath.Base(filepath.Join("a", "b")); got != "b" {
		t.Fatalf("after release the code misbehaves: %q", got)
	}
}
