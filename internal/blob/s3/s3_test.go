package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/blob/blobtest"
	"github.com/techbossai/techboss/internal/blob/s3"
	"github.com/techbossai/techboss/internal/errs"
)

func newOpener(t *testing.T, v *blobtest.Versity, secret string) *s3.Opener {
	t.Helper()
	o, err := s3.NewOpener(context.Background(), s3.Config{
		Endpoint: v.Endpoint, Region: "us-east-1", ForcePathStyle: true,
		AccessKeyID: v.Access, SecretAccessKey: secret,
		PartSize: 5 << 20, ListPageSize: 7, MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestStore(t *testing.T) {
	v := blobtest.StartVersity(t)
	o := newOpener(t, v, v.Secret)
	var n atomic.Int64
	blobtest.Exercise(t, func(t *testing.T) blob.Store {
		bucket := fmt.Sprintf("test-%d", n.Add(1))
		if err := o.CreateBucket(context.Background(), bucket); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
		s, err := o.Open(bucket)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, blobtest.Options{LargeSize: 11 << 20})
}

func TestDependencyErrors(t *testing.T) {
	v := blobtest.StartVersity(t)
	ctx := context.Background()
	good := newOpener(t, v, v.Secret)
	if err := good.CreateBucket(ctx, "exists"); err != nil {
		t.Fatal(err)
	}
	if err := good.Check(ctx, "exists"); err != nil {
		t.Fatalf("Check(exists) = %v, want nil", err)
	}

	bad := newOpener(t, v, "wrong-secret")
	st, err := bad.Open("exists")
	if err != nil {
		t.Fatal(err)
	}
	missing, err := good.Open("no-such-bucket")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"check missing bucket", good.Check(ctx, "no-such-bucket"), `"no-such-bucket" does not exist`},
		{"put missing bucket", missing.Put(ctx, "k", bytes.NewReader([]byte("x")), 1), `"no-such-bucket"`},
		{"check bad credentials", bad.Check(ctx, "exists"), `"exists"`},
		{"put bad credentials", st.Put(ctx, "k", bytes.NewReader([]byte("x")), 1), `"exists"`},
	}
	for _, c := range cases {
		pe, ok := errs.Public(c.err)
		if !ok || pe.Kind != errs.Dependency || !strings.Contains(pe.Message, c.want) {
			t.Errorf("%s: error = %v, want errs.Dependency mentioning %s", c.name, c.err, c.want)
		}
		if ok && strings.Contains(pe.Message, "wrong-secret") {
			t.Errorf("%s: message leaks the secret: %q", c.name, pe.Message)
		}
	}

	v.Stop()
	err = good.Check(ctx, "exists")
	if pe, ok := errs.Public(err); !ok || pe.Kind != errs.Dependency || !strings.Contains(pe.Message, "unreachable") {
		t.Errorf("server down: error = %v, want errs.Dependency 'endpoint unreachable'", err)
	}
	if _, err := good.Open("Bad_Bucket"); errs.KindOf(err) != errs.Invalid {
		t.Errorf("Open(Bad_Bucket) = %v, want Invalid", err)
	}
	var fe *errs.Error
	if _, err := good.Open("ab"); !errors.As(err, &fe) || len(fe.Fields) != 1 || fe.Fields[0].Field != "s3_bucket_name" {
		t.Errorf("Open(ab) = %#v, want a field error naming s3_bucket_name", err)
	}
}
