package outring

import (
	"bytes"
	"testing"
)

// TestRing: a follower resumes from any offset and is told how many bytes
// the ring overwrote before it read them; the ring keeps its size bound
// however the output was cut into chunks.
func TestRing(t *testing.T) {
	const max = 4 * (1024 + ChunkOverhead)
	r := New(max)
	var all []byte
	for i := range 10 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 1024)
		all = append(all, b...)
		r.Append("stdout", b)
	}
	r.Append("stderr", []byte("x"))
	all = append(all, 'x')
	total := int64(len(all))

	out, gap, exited, _, _ := r.Since(0)
	if exited {
		t.Fatal("exited before Exit")
	}
	var kept int64
	for _, c := range out {
		if !bytes.Equal(c.Data, all[c.Off:c.Off+int64(len(c.Data))]) {
			t.Fatalf("chunk at %d does not hold the output's bytes there", c.Off)
		}
		kept += int64(len(c.Data))
	}
	if gap+kept != total || kept+int64(len(out))*ChunkOverhead > max+1+ChunkOverhead {
		t.Fatalf("gap %d + kept %d, want %d in all, at most %d held", gap, kept, total, max)
	}
	if last := out[len(out)-1]; last.Stream != "stderr" || string(last.Data) != "x" {
		t.Fatalf("last chunk %+v, want stderr x", last)
	}

	// Inside a kept chunk: no gap, the rest of that chunk first.
	mid := total - 1 - 512
	out, gap, _, _, _ = r.Since(mid)
	if gap != 0 || out[0].Off != mid || len(out[0].Data) != 512 {
		t.Fatalf("from %d: gap %d, first chunk at %d of %d bytes", mid, gap, out[0].Off, len(out[0].Data))
	}
	// At the end: nothing, and a change wakes the follower.
	out, gap, _, _, changed := r.Since(total)
	if len(out) != 0 || gap != 0 {
		t.Fatalf("at the end: %d chunks, gap %d", len(out), gap)
	}
	r.Exit(3)
	select {
	case <-changed:
	default:
		t.Fatal("Exit did not wake the follower")
	}
	if exited, code := r.Exited(); !exited || code != 3 {
		t.Fatalf("Exited() = %v, %d", exited, code)
	}
	if got := r.Clamp(-5); got != 0 {
		t.Errorf("Clamp(-5) = %d", got)
	}
	if got := r.Clamp(total + 100); got != total {
		t.Errorf("Clamp past the end = %d, want %d", got, total)
	}
}

// TestRingByteWrites: a writer of one byte at a time cannot make the ring
// hold more chunks than its size allows.
func TestRingByteWrites(t *testing.T) {
	r := New(1 << 16)
	for range 100000 {
		r.Append("stdout", []byte{'.'})
	}
	out, gap, _, _, _ := r.Since(0)
	if n := len(out); n > (1<<16)/(1+ChunkOverhead)+1 {
		t.Fatalf("%d chunks held", n)
	}
	if gap+int64(len(out)) != 100000 {
		t.Fatalf("gap %d + %d bytes, want 100000", gap, len(out))
	}
}
