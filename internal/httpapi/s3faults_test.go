package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/snapshot"
)

// TestS3Unreachable kills versitygw under a server whose sandbox keeps its
// snapshots in a bucket, and calls every route that touches S3: each
// answers 424 failed_dependency naming the bucket (never the endpoint or
// the credentials). Routes that need only the database and the sandbox go
// on working, and once S3 is back everything works again.
func TestS3Unreachable(t *testing.T) {
	h := newSnapshotHarness(t)
	ctx := context.Background()
	const bucket = "fault-bucket"
	if err := h.s3.CreateBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	s3Spec := func(extra map[string]any) map[string]any {
		spec := map[string]any{"image_base": "host", "s3_bucket_name": bucket, "s3_key_prefix": "proj"}
		for k, v := range extra {
			spec[k] = v
		}
		return spec
	}
	sb := h.newSandbox(h.alice, s3Spec(nil))
	h.sh(h.alice, sb, `echo one > /workspace/a.txt`)
	var first, second snapshot.Taken
	r := h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	r.data(t, &first)
	h.sh(h.alice, sb, `echo two > /workspace/a.txt`)
	r = h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil)
	wantStatus(t, r, http.StatusCreated)
	r.data(t, &second)

	doomed := h.newSandbox(h.alice, s3Spec(nil)) // terminating snapshots it into the bucket first
	h.v.Stop()
	// Terminate is not refused: it ends the sandbox and says the final
	// snapshot failed.
	r = h.do(h.alice, "DELETE", "/sandbox/"+doomed, nil)
	var gone struct {
		State  string `json:"status"`
		Reason string `json:"reason"`
	}
	r.data(t, &gone)
	if r.status != http.StatusOK || gone.State != "terminated" || !strings.Contains(gone.Reason, "snapshot") {
		t.Errorf("terminate with S3 down = %d %s, want terminated with the failed snapshot as its reason", r.status, r.body)
	}
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/sandbox/" + sb + "/snapshots", nil},
		{"GET", "/snapshots/" + first.ID, nil},
		{"GET", "/snapshots/" + first.ID + "/diff/" + second.ID, nil},
		{"POST", "/sandbox/" + sb + "/restore", map[string]any{"snapshot_id": first.ID}},
		{"POST", "/sandbox", s3Spec(map[string]any{"init_from_s3": true})},
		{"POST", "/sandbox", map[string]any{"image_base": "host", "from_snapshot": second.ID}},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := h.do(h.alice, c.method, c.path, c.body)
			e := r.errBody(t)
			if r.status != http.StatusFailedDependency || e.Code != "failed_dependency" || !strings.Contains(e.Message, `"`+bucket+`"`) {
				t.Errorf("got %d %s, want 424 failed_dependency naming bucket %q", r.status, r.body, bucket)
			}
			if u := strings.TrimPrefix(h.v.Endpoint, "http://"); strings.Contains(string(r.body), u) || strings.Contains(string(r.body), h.v.Secret) {
				t.Errorf("the error names the endpoint or the secret: %s", r.body)
			}
		})
	}
	// What needs no S3 goes on.
	wantStatus(t, h.do(h.alice, "GET", "/sandbox/"+sb+"/snapshots", nil), http.StatusOK)
	if got := h.sh(h.alice, sb, `cat /workspace/a.txt`); got != "two\n" {
		t.Errorf("sandbox with S3 down: %q", got)
	}

	h.v.Start(t)
	wantStatus(t, h.do(h.alice, "GET", "/snapshots/"+first.ID, nil), http.StatusOK)
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/restore", map[string]any{"snapshot_id": first.ID}), http.StatusOK)
	if got := h.sh(h.alice, sb, `cat /workspace/a.txt`); got != "one\n" {
		t.Errorf("after restore: %q, want the first snapshot's", got)
	}
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil), http.StatusCreated)
}

// TestS3Full puts versitygw's storage on a small tmpfs and fills it: a
// snapshot into the bucket answers 507 insufficient_storage naming the
// bucket (versitygw reports ENOSPC as 507 InsufficientStorage), and works
// again once there is room.
func TestS3Full(t *testing.T) {
	h := newSnapshotHarness(t)
	ctx := context.Background()
	h.v.Stop()
	dir := h.v.Dir
	data := mountTmpfsAt(t, dir, 16)
	h.v.Start(t)
	const bucket = "full-bucket"
	if err := h.s3.CreateBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	sb := h.newSandbox(h.alice, map[string]any{"s3_bucket_name": bucket})
	h.sh(h.alice, sb, `head -c 300000 /dev/urandom > /workspace/big.bin`)
	filler := fillDisk(t, data)
	want507(t, "POST /sandbox/{id}/snapshots", h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil), `s3 bucket "`+bucket+`" is full`, dir)
	if err := removeFile(filler); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.do(h.alice, "POST", "/sandbox/"+sb+"/snapshots", nil), http.StatusCreated)
}
