package forge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
)

// The GitLab stand-in speaks the merge-request call of the REST API v4
// that the official client makes, and records what it received.
func TestOpenGitLab(t *testing.T) {
	var got map[string]any
	var token, path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, token = r.URL.EscapedPath(), r.Header.Get("PRIVATE-TOKEN")
		if r.Method != "POST" || path != "/api/v4/projects/group%2Fsub%2Fapp/merge_requests" {
			http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
			return
		}
		json.NewDecoder(r.Body).Decode(&got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":99,"iid":7,"web_url":"https://gitlab.example/group/sub/app/-/merge_requests/7"}`))
	}))
	defer srv.Close()
	pr, err := Open(context.Background(), Request{Kind: "gitlab", APIURL: srv.URL, Project: "group/sub/app", Token: "glpat-x",
		Title: "Fix", Body: "b", Head: "agent/fix", Base: "main", HTTP: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Number != 7 || pr.URL != "https://gitlab.example/group/sub/app/-/merge_requests/7" || token != "glpat-x" ||
		got["source_branch"] != "agent/fix" || got["target_branch"] != "main" || got["title"] != "Fix" || got["description"] != "b" {
		t.Fatalf("pr %+v; the stand-in got %v at %s with token %q", pr, got, path, token)
	}
}

func TestOpenGitHubErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		w.Write([]byte(`{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for owner:agent/fix."}]}`))
	}))
	defer srv.Close()
	_, err := Open(context.Background(), Request{Kind: "github", APIURL: srv.URL + "/api/v3/", Project: "owner/app", Token: "t",
		Title: "Fix", Head: "agent/fix", Base: "main", HTTP: srv.Client()})
	if errs.KindOf(err) != errs.Conflict {
		t.Fatalf("got %v (kind %v), want a conflict", err, errs.KindOf(err))
	}
	if _, err := Open(context.Background(), Request{Kind: "github", Project: "owner/app"}); errs.KindOf(err) != errs.Invalid {
		t.Fatalf("no token: got %v", err)
	}
}
