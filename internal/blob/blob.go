// Package blob is the object storage seam: a small Store interface with a
// filesystem implementation (internal/blob/fs, the embedded default) and an
// S3 implementation (internal/blob/s3). Keys are slash-separated paths; the
// same rules hold on every backend so a snapshot written to one can be read
// from another.
package blob

import (
	"context"
	"fmt"
	"io"
	"iter"
	"net"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/techbossai/techboss/internal/errs"
)

// Store is an object store. Every method is safe for concurrent use.
// A missing key is an error wrapping errs.ErrNotFound.
type Store interface {
	// Put stores the object at key, reading r until EOF. size is the exact
	// length when known, or -1. A reader that fails, or yields a length other
	// than size, leaves no object (and no partial object) behind: a
	// previous object at key stays as it was.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get streams the object at key. The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Head returns the object's metadata.
	Head(ctx context.Context, key string) (Info, error)
	// List yields every object whose key starts with prefix, in ascending
	// byte order of keys, fetching pages lazily. Iteration stops at the
	// first error, which is yielded once.
	List(ctx context.Context, prefix string) iter.Seq2[Info, error]
	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// Info describes one stored object.
type Info struct {
	Key     string    `json:"key"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
}

// Ranger is the optional ranged-read capability.
type Ranger interface {
	// GetRange streams length bytes starting at offset (length < 0: to the end).
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Syncer is the optional capability to make every completed Put durable at
// once (the fs store with NoSync); callers use it before a commit point
// such as a snapshot manifest.
type Syncer interface {
	Sync(ctx context.Context) error
}

// MaxKeyLen is the longest key accepted (S3's limit).
const MaxKeyLen = 1024

// ValidateKey checks a key against the rules every backend shares: 1 to
// 1024 bytes of UTF-8, no leading or trailing '/', no empty, "." or ".."
// segments, no control characters or backslashes, and no segment that the
// fs store reserves for its temporary files.
func ValidateKey(key string) error {
	if reason := keyProblem(key); reason != "" {
		return errs.E(errs.Invalid, "invalid blob key %q: %s", key, reason)
	}
	return nil
}

// TempPrefix starts the names of the fs store's in-progress files; keys may
// not contain a segment starting with it.
const TempPrefix = ".blobtmp-"

func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(key):
		return "not valid UTF-8"
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "contains a control character or backslash"
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return "empty path segment (leading, trailing or double '/')"
		case seg == "." || seg == "..":
			return "'.' or '..' segment"
		case strings.HasPrefix(seg, TempPrefix):
			return "reserved segment name"
		case len(seg) > 255:
			return "segment longer than 255 bytes"
		}
	}
	return ""
}

// ValidatePrefix checks a user-supplied key prefix (s3_key_prefix) and
// returns its normalised form (no trailing '/'). The empty prefix is valid.
// Errors are errs.Invalid naming field.
func ValidatePrefix(field, prefix string) (string, error) {
	p := strings.TrimSuffix(prefix, "/")
	if p == "" {
		if prefix != "" {
			return "", errs.Field(field, "must not be just '/'")
		}
		return "", nil
	}
	if strings.HasPrefix(p, "/") {
		return "", errs.Field(field, "must not start with '/'")
	}
	if len(p) > 512 {
		return "", errs.Field(field, "longer than 512 bytes")
	}
	if reason := keyProblem(p); reason != "" {
		return "", errs.Field(field, reason)
	}
	return p, nil
}

// ValidateBucket checks an S3 bucket name against the S3 naming rules
// (3-63 characters of lowercase letters, digits, '.' and '-', starting and
// ending with a letter or digit, not an IP address). Errors are errs.Invalid
// naming field.
func ValidateBucket(field, name string) error {
	if len(name) < 3 || len(name) > 63 {
		return errs.Field(field, "must be 3 to 63 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return errs.Field(field, "may contain only lowercase letters, digits, '.' and '-'")
		}
	}
	first, last := name[0], name[len(name)-1]
	if !isAlnum(first) || !isAlnum(last) {
		return errs.Field(field, "must start and end with a letter or digit")
	}
	if strings.Contains(name, "..") || strings.Contains(name, ".-") || strings.Contains(name, "-.") {
		return errs.Field(field, "must not contain '..', '.-' or '-.'")
	}
	if net.ParseIP(name) != nil {
		return errs.Field(field, "must not be an IP address")
	}
	if strings.HasPrefix(name, "xn--") || strings.HasSuffix(name, "-s3alias") || strings.HasSuffix(name, "--ol-s3") {
		return errs.Field(field, "uses a reserved prefix or suffix")
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Join joins a prefix (possibly empty) and a relative key.
func Join(prefix, rel string) string {
	if prefix == "" {
		return rel
	}
	return prefix + "/" + rel
}

// ExactReader wraps r so that reading yields an error, instead of io.EOF,
// when the stream ends before size bytes or runs past them. Backends use it
// to turn a short or long body into a failed Put. size < 0 disables checks.
func ExactReader(r io.Reader, size int64) io.Reader {
	if size < 0 {
		return r
	}
	return &exactReader{r: r, left: size}
}

type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		// Probe for extra bytes.
		var one [1]byte
		n, err := e.r.Read(one[:])
		if n > 0 {
			return 0, errs.E(errs.Invalid, "body longer than its declared size")
		}
		if err == nil {
			return 0, nil
		}
		return 0, err
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, errs.E(errs.Invalid, "body shorter than its declared size (%d bytes missing)", e.left)
	}
	if err == io.EOF && e.left == 0 {
		return n, nil
	}
	return n, err
}

// Counting wraps a Store and counts what passes through it. Tests assert on
// its Stats (objects and bytes put), and metrics read it too.
type Counting struct {
	Store
	putObjects, putBytes  atomic.Int64
	getObjects, getBytes  atomic.Int64
	heads, lists, deleted atomic.Int64
}

// Stats is a snapshot of a Counting store's counters.
type Stats struct {
	PutObjects, PutBytes int64
	GetObjects, GetBytes int64
	Heads, Lists         int64
	Deletes              int64
}

// NewCounting returns s wrapped with counters.
func NewCounting(s Store) *Counting { return &Counting{Store: s} }

// Stats returns the counters so far.
func (c *Counting) Stats() Stats {
	return Stats{
		PutObjects: c.putObjects.Load(), PutBytes: c.putBytes.Load(),
		GetObjects: c.getObjects.Load(), GetBytes: c.getBytes.Load(),
		Heads: c.heads.Load(), Lists: c.lists.Load(), Deletes: c.deleted.Load(),
	}
}

// Put counts the object and its bytes once it is stored.
func (c *Counting) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	cr := &countReader{r: r}
	if err := c.Store.Put(ctx, key, cr, size); err != nil {
		return err
	}
	c.putObjects.Add(1)
	c.putBytes.Add(cr.n)
	return nil
}

// Get counts the object and the bytes read from it.
func (c *Counting) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := c.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	c.getObjects.Add(1)
	return &countReadCloser{ReadCloser: rc, n: &c.getBytes}, nil
}

// Head counts the call.
func (c *Counting) Head(ctx context.Context, key string) (Info, error) {
	c.heads.Add(1)
	return c.Store.Head(ctx, key)
}

// List counts the call.
func (c *Counting) List(ctx context.Context, prefix string) iter.Seq2[Info, error] {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix)
}

// Delete counts the call.
func (c *Counting) Delete(ctx context.Context, key string) error {
	c.deleted.Add(1)
	return c.Store.Delete(ctx, key)
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type countReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Sync passes through to the wrapped store's Syncer, if any.
func (c *Counting) Sync(ctx context.Context) error {
	if s, ok := c.Store.(Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}
