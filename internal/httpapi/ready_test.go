package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/blob/blobtest"
	blobs3 "github.com/techbossai/techboss/internal/blob/s3"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// /readyz names the dependency that is down: here a real versitygw, killed.
func TestReadyNamesTheDependencyThatIsDown(t *testing.T) {
	v := blobtest.StartVersity(t)
	ctx := context.Background()
	op, err := blobs3.NewOpener(ctx, blobs3.Config{Endpoint: v.Endpoint, Region: "us-east-1", ForcePathStyle: true,
		AccessKeyID: v.Access, SecretAccessKey: v.Secret, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.CreateBucket(ctx, "ready-bucket"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Store: storetest.OpenSQLite(t), Ready: []ReadyCheck{{
		Name: "blob_store", Check: func(ctx context.Context) error { return op.Check(ctx, "ready-bucket") },
	}}}))
	defer srv.Close()
	get := func() (int, string, string) {
		resp, err := srv.Client().Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
	}
	if code, _, body := get(); code != http.StatusOK || !strings.Contains(body, `"blob_store"`) {
		t.Fatalf("readyz with everything up = %d %s, want 200 listing blob_store", code, body)
	}
	v.Stop()
	code, retry, body := get()
	var got struct {
		Error  errorBody          `json:"error"`
		Checks []readyCheckResult `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("readyz body %q: %v", body, err)
	}
	want := []readyCheckResult{{Name: "database", Status: "ok"}, {Name: "blob_store", Status: "down"}}
	if code != http.StatusServiceUnavailable || retry == "" || got.Error.Code != "unavailable" ||
		!strings.Contains(got.Error.Message, "blob_store") || len(got.Checks) != 2 ||
		got.Checks[0] != want[0] || got.Checks[1].Name != "blob_store" || got.Checks[1].Status != "down" ||
		!strings.Contains(got.Checks[1].Error, `"ready-bucket"`) {
		t.Fatalf("readyz with S3 down = %d (Retry-After %q) %s; want 503 naming blob_store and the bucket", code, retry, body)
	}
	if strings.Contains(body, v.Endpoint) {
		t.Errorf("readyz body names the S3 endpoint: %s", body)
	}
}
