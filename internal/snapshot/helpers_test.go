package snapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/blob/blobtest"
	blobfs "github.com/techbossai/techboss/internal/blob/fs"
	"github.com/techbossai/techboss/internal/blob/s3"
)

func TestMain(m *testing.M) {
	code := m.Run()
	benchFixture.cleanup()
	if racerBuild.dir != "" {
		os.RemoveAll(racerBuild.dir)
	}
	if code == 0 {
		// The AWS SDK's HTTP transport keeps idle connections alive.
		if err := goleak.Find(
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// backend opens fresh stores of one kind.
type backend struct {
	name string
	open func(t *testing.T) blob.Store
	v    *blobtest.Versity // S3 only
	o    *s3.Opener
}

func fsBackend() backend {
	return backend{name: "fs", open: func(t *testing.T) blob.Store {
		s, err := blobfs.New(t.TempDir(), blobfs.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}
}

var bucketSeq atomic.Int64

func s3Backend(t *testing.T) backend {
	v := blobtest.StartVersity(t)
	o := s3Opener(t, v)
	return backend{name: "s3", v: v, o: o, open: func(t *testing.T) blob.Store {
		bucket := fmt.Sprintf("snap-%d", bucketSeq.Add(1))
		if err := o.CreateBucket(context.Background(), bucket); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
		s, err := o.Open(bucket)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}
}

func s3Opener(t testing.TB, v *blobtest.Versity) *s3.Opener {
	o, err := s3.NewOpener(context.Background(), s3.Config{
		Endpoint: v.Endpoint, Region: "us-east-1", ForcePathStyle: true,
		AccessKeyID: v.Access, SecretAccessKey: v.Secret,
		PartSize: 5 << 20, MaxAttempts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// backends returns fs, plus S3 when versitygw is available (skipped with a
// reason otherwise, failing under TECHBOSS_REQUIRE_ALL=1).
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("fs", func(t *testing.T) { fn(t, fsBackend()) })
	t.Run("s3", func(t *testing.T) { fn(t, s3Backend(t)) })
}

// node is what a tree comparison looks at for one path.
type node struct {
	Type   string
	Mode   fs.FileMode
	Size   int64
	SHA256 string
	Target string
	UID    uint32
	GID    uint32
}

// describe reads a tree without following symlinks.
func describe(t *testing.T, dir string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		n := node{Mode: info.Mode()}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n.UID, n.GID = st.Uid, st.Gid
		}
		switch {
		case info.IsDir():
			n.Type = "dir"
		case info.Mode()&fs.ModeSymlink != 0:
			n.Type = "symlink"
			n.Mode = 0
			n.Target, err = os.Readlink(p)
		case info.Mode().IsRegular():
			n.Type, n.Size = "file", info.Size()
			n.SHA256, err = fileSHA(p)
		default:
			n.Type = "other"
		}
		out[filepath.ToSlash(rel)] = n
		return err
	})
	if err != nil {
		t.Fatalf("describe %s: %v", dir, err)
	}
	return out
}

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sameTree(t *testing.T, want map[string]node, dir string) {
	t.Helper()
	if diff := cmp.Diff(want, describe(t, dir)); diff != "" {
		t.Errorf("tree %s differs (-want +got):\n%s", dir, diff)
	}
}

func write(t *testing.T, dir, rel string, data []byte, mode fs.FileMode) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pseudoRandom(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
