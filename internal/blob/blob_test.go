package blob_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
)

func TestValidateBucket(t *testing.T) {
	for _, ok := range []string{"abc", "my-bucket.2", "a" + string(bytes.Repeat([]byte("b"), 62))} {
		if err := blob.ValidateBucket("s3_bucket_name", ok); err != nil {
			t.Errorf("ValidateBucket(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "ab", "Upper", "under_score", "-start", "end-", "a..b", "192.168.1.1", "xn--abc", "x-s3alias", "a b c", string(bytes.Repeat([]byte("b"), 64)), "../etc"} {
		err := blob.ValidateBucket("s3_bucket_name", bad)
		var e *errs.Error
		if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Field != "s3_bucket_name" {
			t.Errorf("ValidateBucket(%q) = %v, want Invalid naming s3_bucket_name", bad, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for in, want := range map[string]string{"": "", "docs/my-project/": "docs/my-project", "a": "a", "ü b/c": "ü b/c"} {
		got, err := blob.ValidatePrefix("s3_key_prefix", in)
		if err != nil || got != want {
			t.Errorf("ValidatePrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/", "/abs", "a/../b", "..", "a//b", "a/./b", "nul\x00", string(bytes.Repeat([]byte("a/"), 300))} {
		_, err := blob.ValidatePrefix("s3_key_prefix", bad)
		var e *errs.Error
		if !errors.As(err, &e) || e.Kind != errs.Invalid || e.Fields[0].Field != "s3_key_prefix" {
			t.Errorf("ValidatePrefix(%q) = %v, want Invalid naming s3_key_prefix", bad, err)
		}
	}
}

func TestExactReader(t *testing.T) {
	for _, c := range []struct {
		data string
		size int64
		ok   bool
	}{{"abc", 3, true}, {"abc", 2, false}, {"abc", 4, false}, {"", 0, true}, {"abc", -1, true}} {
		_, err := io.ReadAll(blob.ExactReader(bytes.NewReader([]byte(c.data)), c.size))
		if (err == nil) != c.ok {
			t.Errorf("ExactReader(%q, %d) error = %v, want ok=%v", c.data, c.size, err, c.ok)
		}
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../x", "a//b", "/a", "a/", ".blobtmp-1", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if blob.ValidateKey(key) != nil {
			return
		}
		for _, bad := range []string{"", ".", ".."} {
			for _, seg := range bytes.Split([]byte(key), []byte("/")) {
				if string(seg) == bad {
					t.Fatalf("accepted key %q with segment %q", key, bad)
				}
			}
		}
	})
}
