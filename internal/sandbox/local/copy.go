package local

import "io"

// overlapBlocks is how many copyBuf blocks copyOverlapped keeps: one being
// written, one being read and one read ahead.
const overlapBlocks = 3

// copyOverlapped copies src to dst as io.Copy does, but reads the next
// block while the one before is being written. A file upload is two
// copies in the kernel (socket to memory, memory to page cache); done one
// after the other they left one of two cores idle and halved the rate.
// Blocks are read whole, so dst gets large writes.
//
// It returns when src ends (written, nil) or either side fails, and only
// after its reading goroutine has stopped: a failed write waits for the
// read in flight, if any, to return.
func copyOverlapped(dst io.Writer, src io.Reader) (written int64, err error) {
	type block struct {
		p   []byte
		err error // io.EOF after the last block
	}
	free := make(chan []byte, overlapBlocks)
	full := make(chan block, overlapBlocks) // never blocks: there are only overlapBlocks blocks
	for range overlapBlocks {
		free <- make([]byte, copyBuf)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var p []byte
			select {
			case p = <-free:
			case <-stop:
				return
			}
			n, err := fill(src, p)
			full <- block{p[:n], err}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		// Take the free blocks back so the reader can only see stop, then
		// wait for it (it may be inside a read).
	drain:
		for {
			select {
			case <-free:
			default:
				break drain
			}
		}
		close(stop)
		<-done
	}()
	for {
		b := <-full
		if len(b.p) > 0 {
			n, werr := dst.Write(b.p)
			written += int64(n)
			if werr == nil && n < len(b.p) {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return written, werr
			}
		}
		switch {
		case b.err == io.EOF:
			return written, nil
		case b.err != nil:
			return written, b.err
		}
		free <- b.p[:cap(b.p)]
	}
}

// fill reads into p until it is full or src fails; unlike io.ReadFull it
// passes src's error on as it is (a body cut short returns
// io.ErrUnexpectedEOF, which must not read as the end of the data).
func fill(src io.Reader, p []byte) (n int, err error) {
	for n < len(p) && err == nil {
		var k int
		k, err = src.Read(p[n:])
		n += k
	}
	if n == len(p) && err == nil {
		return n, nil
	}
	return n, err
}
