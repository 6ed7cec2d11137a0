package s3_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/techbossai/techboss/internal/blob/blobtest"
	"github.com/techbossai/techboss/internal/blob/s3"
)

// hookReader yields size bytes and calls hook once, when more than at
// bytes have been read: after the upload manager has started the
// multipart upload and is reading its second part.
type hookReader struct {
	size, at, n int64
	once        sync.Once
	hook        func()
}

func (r *hookReader) Read(p []byte) (int, error) {
	if r.n >= r.size {
		return 0, io.EOF
	}
	if r.n > r.at {
		r.once.Do(r.hook)
	}
	p = p[:min(int64(len(p)), r.size-r.n, 256<<10)]
	clear(p)
	r.n += int64(len(p))
	return len(p), nil
}

// multipartUploads lists the unfinished multipart uploads in bucket.
func multipartUploads(t *testing.T, o *s3.Opener, bucket string) []string {
	t.Helper()
	out, err := o.Client().ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

func newBucket(t *testing.T, o *s3.Opener, bucket string) *s3.Store {
	t.Helper()
	if err := o.CreateBucket(context.Background(), bucket); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	st, err := o.Open(bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A Put whose context is cancelled mid-multipart leaves no upload behind:
// the abort runs on a context of its own.
func TestPutCancelledAbortsMultipart(t *testing.T) {
	v := blobtest.StartVersity(t)
	o := newOpener(t, v, v.Secret)
	st := newBucket(t, o, "cancel")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &hookReader{size: 12 << 20, at: 6 << 20, hook: cancel}
	if err := st.Put(ctx, "sb/.techboss/big", r, -1); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	if r.n <= r.at {
		t.Fatalf("read %d bytes: the upload never reached its second part", r.n)
	}
	if got := multipartUploads(t, o, "cancel"); len(got) != 0 {
		t.Fatalf("multipart uploads left after a cancelled Put: %v, want none", got)
	}
}

// versitygw killed mid-multipart: the Put fails, its abort cannot reach the
// server and is kept; once the server is back, one sweep aborts it and no
// upload of ours is left.
func TestS3KilledMidMultipartLeavesNothingAfterSweep(t *testing.T) {
	v := blobtest.StartVersity(t)
	o := newOpener(t, v, v.Secret)
	st := newBucket(t, o, "killed")
	r := &hookReader{size: 12 << 20, at: 6 << 20, hook: v.Stop}
	err := st.Put(context.Background(), "sb/.techboss/big", r, -1)
	if err == nil {
		t.Fatal("Put with the server killed succeeded")
	}
	if !containsAll(err.Error(), `"killed"`) {
		t.Errorf("error %q does not name the bucket", err)
	}
	if n := o.PendingAborts(); n != 1 {
		t.Fatalf("pending aborts = %d, want 1", n)
	}
	v.Start(t)
	if got := multipartUploads(t, o, "killed"); len(got) != 1 {
		t.Fatalf("after restart: uploads %v, want the one left by the killed Put", got)
	}
	sw := s3.NewSweeper(o, s3.SweeperConfig{})
	n, err := sw.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1, nil", n, err)
	}
	if got := multipartUploads(t, o, "killed"); len(got) != 0 {
		t.Fatalf("multipart uploads left after the sweep: %v, want none", got)
	}
}

// The sweeper aborts uploads under our prefixes older than MaxAge, and
// leaves younger ones and other prefixes alone (also a sibling that only
// shares the prefix's leading characters).
func TestSweeperAbortsOldUploadsUnderOurPrefixes(t *testing.T) {
	v := blobtest.StartVersity(t)
	o := newOpener(t, v, v.Secret)
	newBucket(t, o, "sweep")
	ctx := context.Background()
	for _, key := range []string{"ours/a", "ours/b", "oursides/d", "theirs/c"} {
		if _, err := o.Client().CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("sweep"), Key: aws.String(key)}); err != nil {
			t.Fatalf("create multipart upload %s: %v", key, err)
		}
	}
	now := time.Now()
	scopes := func(context.Context) ([]s3.Scope, error) { return []s3.Scope{{Bucket: "sweep", Prefix: "ours"}}, nil }
	young := s3.NewSweeper(o, s3.SweeperConfig{Scopes: scopes, Clock: func() time.Time { return now }})
	if n, err := young.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep of fresh uploads = %d, %v; want 0, nil", n, err)
	}
	later := s3.NewSweeper(o, s3.SweeperConfig{Scopes: scopes, Clock: func() time.Time { return now.Add(2 * time.Hour) }})
	if n, err := later.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("sweep two hours later = %d, %v; want 2, nil", n, err)
	}
	got := multipartUploads(t, o, "sweep")
	if len(got) != 2 || got[0] != "oursides/d" || got[1] != "theirs/c" {
		t.Fatalf("uploads left = %v, want [oursides/d theirs/c]", got)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
