package local

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

func TestCopyOverlappedCopiesExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, copyBuf - 1, copyBuf, copyBuf + 1, overlapBlocks*copyBuf + 7, 5 << 20} {
		src := make([]byte, size)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		for name, r := range map[string]io.Reader{
			"whole": bytes.NewReader(src),
			"half":  iotest.HalfReader(bytes.NewReader(src)), // short reads
			"eof":   iotest.DataErrReader(bytes.NewReader(src)),
		} {
			var dst bytes.Buffer
			n, err := copyOverlapped(&dst, r)
			if err != nil || n != int64(size) || !bytes.Equal(dst.Bytes(), src) {
				t.Errorf("%d bytes, %s reads: copied %d, err %v, equal %v", size, name, n, err, bytes.Equal(dst.Bytes(), src))
			}
		}
	}
}

func TestCopyOverlappedReadError(t *testing.T) {
	// io.ErrUnexpectedEOF is what a request body cut short returns: it
	// must come back as an error, not pass for the end of the data.
	for _, boom := range []error{errors.New("connection reset"), io.ErrUnexpectedEOF} {
		src := io.MultiReader(bytes.NewReader(make([]byte, copyBuf+10)), iotest.ErrReader(boom))
		var dst bytes.Buffer
		n, err := copyOverlapped(&dst, src)
		if !errors.Is(err, boom) || n != copyBuf+10 || dst.Len() != copyBuf+10 {
			t.Fatalf("copied %d (dst %d), err %v; want %d and %v", n, dst.Len(), err, copyBuf+10, boom)
		}
	}
}

// failingWriter accepts ok bytes, then fails (or writes short).
type failingWriter struct {
	ok    int
	short bool
	n     int
}

var errDiskFull = errors.New("no space left on device")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n+len(p) <= w.ok {
		w.n += len(p)
		return len(p), nil
	}
	k := w.ok - w.n
	w.n = w.ok
	if w.short {
		return k, nil
	}
	return k, errDiskFull
}

// countingReader is an endless source that counts the bytes read.
type countingReader struct{ n atomic.Int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	r.n.Add(int64(len(p)))
	return len(p), nil
}

func TestCopyOverlappedWriteErrorStopsReading(t *testing.T) {
	for _, short := range []bool{false, true} {
		src := &countingReader{}
		w := &failingWriter{ok: copyBuf + 100, short: short}
		n, err := copyOverlapped(w, src)
		want := errDiskFull
		if short {
			want = io.ErrShortWrite
		}
		if !errors.Is(err, want) || n != copyBuf+100 {
			t.Fatalf("short=%v: copied %d, err %v; want %d and %v", short, n, err, copyBuf+100, want)
		}
		// The reader stopped before returning (the package's TestMain
		// checks for leaked goroutines) and read ahead by at most the
		// blocks it holds.
		read := src.n.Load()
		time.Sleep(10 * time.Millisecond)
		if src.n.Load() != read || read > int64(overlapBlocks+2)*copyBuf {
			t.Fatalf("short=%v: %d bytes read at return, %d later; at most %d", short, read, src.n.Load(), (overlapBlocks+2)*copyBuf)
		}
	}
}

// blockedReader gives one block, then blocks until release is closed.
type blockedReader struct {
	first   bool
	release chan struct{}
	reading chan struct{}
}

func (r *blockedReader) Read(p []byte) (int, error) {
	if !r.first {
		r.first = true
		return len(p), nil
	}
	close(r.reading)
	<-r.release
	return 0, io.EOF
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestCopyOverlappedWaitsForReadInFlight(t *testing.T) {
	src := &blockedReader{release: make(chan struct{}), reading: make(chan struct{})}
	// The first write fails once the second read has begun.
	dst := writerFunc(func([]byte) (int, error) {
		<-src.reading
		return 0, errDiskFull
	})
	returned := make(chan error, 1)
	go func() {
		_, err := copyOverlapped(dst, src)
		returned <- err
	}()
	<-src.reading
	select {
	case err := <-returned:
		t.Fatalf("returned (%v) while its reader was still inside Read", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(src.release)
	if err := <-returned; !errors.Is(err, errDiskFull) {
		t.Fatalf("err %v, want %v", err, errDiskFull)
	}
}
