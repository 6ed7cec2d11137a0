// Package blobtest is the conformance suite every blob.Store passes, and a
// helper that runs a real S3 server (versitygw) for tests.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
)

// Options tunes the suite for a backend.
type Options struct {
	// LargeSize is the size of the "large" object; set it above the
	// backend's multipart threshold. Default 12 MiB.
	LargeSize int64
}

// Exercise runs the suite. newStore returns an empty store for one subtest.
func Exercise(t *testing.T, newStore func(t *testing.T) blob.Store, opts Options) {
	if opts.LargeSize == 0 {
		opts.LargeSize = 12 << 20
	}
	ctx := context.Background()

	t.Run("PutGetHead", func(t *testing.T) {
		s := newStore(t)
		for _, key := range []string{"a.txt", "dir/sub/b.bin", "ünï cödé/файл with space.txt", "x/.hidden"} {
			want := []byte("content of " + key)
			put(t, s, key, want)
			if got := get(t, s, key); !bytes.Equal(got, want) {
				t.Errorf("Get(%q) = %q, want %q", key, got, want)
			}
			in, err := s.Head(ctx, key)
			if err != nil {
				t.Fatalf("Head(%q): %v", key, err)
			}
			if in.Key != key || in.Size != int64(len(want)) || in.ModTime.IsZero() {
				t.Errorf("Head(%q) = %+v, want key, size %d and a time", key, in, len(want))
			}
		}
	})

	t.Run("Empty", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "empty", nil)
		if got := get(t, s, "empty"); len(got) != 0 {
			t.Errorf("got %d bytes, want 0", len(got))
		}
		if err := s.Put(ctx, "empty2", bytes.NewReader(nil), -1); err != nil {
			t.Fatalf("Put unknown-size empty: %v", err)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "k", []byte("one"))
		put(t, s, "k", []byte("two, longer"))
		if got := string(get(t, s, "k")); got != "two, longer" {
			t.Errorf("got %q, want the second write", got)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "dir/present", []byte("x"))
		for _, key := range []string{"missing", "dir/missing", "dir", "dir/present/deeper"} {
			if _, err := s.Get(ctx, key); !errors.Is(err, errs.ErrNotFound) {
				t.Errorf("Get(%q) error = %v, want ErrNotFound", key, err)
			}
			if _, err := s.Head(ctx, key); !errors.Is(err, errs.ErrNotFound) {
				t.Errorf("Head(%q) error = %v, want ErrNotFound", key, err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Errorf("Delete(%q) missing = %v, want nil", key, err)
			}
		}
		if got := string(get(t, s, "dir/present")); got != "x" {
			t.Errorf("Delete of a non-object changed dir/present: %q", got)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		s := newStore(t)
		for _, key := range []string{"", "/abs", "a/../b", "a//b", "trail/", "./a", "a/.", "nul\x00", `back\slash`, "dir/" + blob.TempPrefix + "x"} {
			err := s.Put(ctx, key, bytes.NewReader([]byte("x")), 1)
			if errs.KindOf(err) != errs.Invalid {
				t.Errorf("Put(%q) error = %v, want Invalid", key, err)
			}
			if _, err := s.Get(ctx, key); errs.KindOf(err) != errs.Invalid {
				t.Errorf("Get(%q) error = %v, want Invalid", key, err)
			}
		}
	})

	t.Run("Large", func(t *testing.T) {
		s := newStore(t)
		data := randBytes(t, int(opts.LargeSize)+12345)
		want := sha256.Sum256(data)
		// Non-seekable reader with known size, then unknown size, then seekable.
		if err := s.Put(ctx, "large/stream", onlyReader{bytes.NewReader(data)}, int64(len(data))); err != nil {
			t.Fatalf("Put stream: %v", err)
		}
		if err := s.Put(ctx, "large/unknown", onlyReader{bytes.NewReader(data)}, -1); err != nil {
			t.Fatalf("Put unknown size: %v", err)
		}
		if err := s.Put(ctx, "large/seek", bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put seekable: %v", err)
		}
		for _, key := range []string{"large/stream", "large/unknown", "large/seek"} {
			rc, err := s.Get(ctx, key)
			if err != nil {
				t.Fatalf("Get %s: %v", key, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, rc)
			rc.Close()
			if err != nil {
				t.Fatalf("read %s: %v", key, err)
			}
			if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Errorf("%s: got %d bytes (hash differs: %v), want %d", key, n, !bytes.Equal(h.Sum(nil), want[:]), len(data))
			}
		}
	})

	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "keep", []byte("old"))
		cases := []struct {
			name string
			r    io.Reader
			size int64
		}{
			{"short small", onlyReader{bytes.NewReader([]byte("abc"))}, 10},
			{"long small", onlyReader{bytes.NewReader([]byte("abcdefghijkl"))}, 10},
			{"short seekable", bytes.NewReader([]byte("abc")), 10},
			{"reader error small", io.MultiReader(bytes.NewReader([]byte("abc")), errReader{}), -1},
			{"reader error large", io.MultiReader(bytes.NewReader(make([]byte, opts.LargeSize+1)), errReader{}), -1},
			{"short large", onlyReader{bytes.NewReader(make([]byte, opts.LargeSize+1))}, opts.LargeSize + 100},
		}
		for _, c := range cases {
			for _, key := range []string{"fresh", "keep"} {
				if err := s.Put(ctx, key, c.r, c.size); err == nil {
					t.Errorf("%s: Put(%q) succeeded, want an error", c.name, key)
				}
				c.r = rewind(c.r)
			}
			if _, err := s.Head(ctx, "fresh"); !errors.Is(err, errs.ErrNotFound) {
				t.Errorf("%s: failed Put left an object: Head = %v", c.name, err)
			}
			if got := string(get(t, s, "keep")); got != "old" {
				t.Errorf("%s: failed Put changed an existing object to %d bytes", c.name, len(got))
			}
		}
		keys := listKeys(t, s, "")
		if diff := cmp.Diff([]string{"keep"}, keys); diff != "" {
			t.Errorf("List after failed Puts (-want +got):\n%s", diff)
		}
	})

	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		keys := []string{"p/a", "p/b/c", "p/b/d", "p-x", "pz", "q/a", "p/ä", "p/b.txt"}
		for i := range 25 {
			keys = append(keys, fmt.Sprintf("p/many/%03d", i))
		}
		for _, k := range keys {
			put(t, s, k, []byte(k))
		}
		sorted := slices.Clone(keys)
		slices.Sort(sorted)
		filter := func(prefix string) []string {
			var out []string
			for _, k := range sorted {
				if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
					out = append(out, k)
				}
			}
			return out
		}
		for _, prefix := range []string{"", "p", "p/", "p/b", "p/b/", "p/many/", "p/many/01", "none/", "q"} {
			got := listKeys(t, s, prefix)
			if diff := cmp.Diff(filter(prefix), got); diff != "" {
				t.Errorf("List(%q) (-want +got):\n%s", prefix, diff)
			}
		}
		for in, err := range s.List(ctx, "p/a") {
			if err != nil || in.Size != 3 || in.ModTime.IsZero() {
				t.Errorf("List info = %+v, %v; want size 3 and a time", in, err)
			}
		}
		n := 0
		for range s.List(ctx, "p/many/") {
			n++
			if n == 3 {
				break
			}
		}
		if n != 3 {
			t.Errorf("early break: got %d, want 3", n)
		}
		for _, k := range keys {
			if err := s.Delete(ctx, k); err != nil {
				t.Fatalf("Delete %q: %v", k, err)
			}
		}
		if got := listKeys(t, s, ""); len(got) != 0 {
			t.Errorf("after deleting everything List = %v", got)
		}
	})

	t.Run("ConcurrentPutsSameKey", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		bodies := make([][]byte, 6)
		for i := range bodies {
			bodies[i] = bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
		}
		errc := make(chan error, len(bodies))
		for _, b := range bodies {
			wg.Go(func() { errc <- s.Put(ctx, "same/key", bytes.NewReader(b), int64(len(b))) })
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
		}
		got := get(t, s, "same/key")
		if !slices.ContainsFunc(bodies, func(b []byte) bool { return bytes.Equal(b, got) }) {
			t.Errorf("object is a mix of concurrent writes (%d bytes)", len(got))
		}
	})

	t.Run("Range", func(t *testing.T) {
		s := newStore(t)
		r, ok := s.(blob.Ranger)
		if !ok {
			t.Skip("why: store has no ranged reads")
		}
		put(t, s, "r", []byte("0123456789"))
		for _, c := range []struct {
			off, n int64
			want   string
		}{{0, -1, "0123456789"}, {3, 4, "3456"}, {7, -1, "789"}, {0, 1, "0"}} {
			rc, err := r.GetRange(ctx, "r", c.off, c.n)
			if err != nil {
				t.Fatalf("GetRange(%d,%d): %v", c.off, c.n, err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(b) != c.want {
				t.Errorf("GetRange(%d,%d) = %q, %v; want %q", c.off, c.n, b, err, c.want)
			}
		}
	})
}

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// rewind rebuilds a test reader so each key gets a fresh one.
func rewind(r io.Reader) io.Reader {
	switch r := r.(type) {
	case onlyReader:
		if br, ok := r.r.(*bytes.Reader); ok {
			br.Seek(0, io.SeekStart)
		}
	case *bytes.Reader:
		r.Seek(0, io.SeekStart)
	default:
		// MultiReaders with an error tail: a fresh error tail suffices.
		return io.MultiReader(bytes.NewReader([]byte("abc")), errReader{})
	}
	return r
}

func put(t *testing.T, s blob.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func listKeys(t *testing.T, s blob.Store, prefix string) []string {
	t.Helper()
	var keys []string
	for in, err := range s.List(context.Background(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		keys = append(keys, in.Key)
	}
	return keys
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
