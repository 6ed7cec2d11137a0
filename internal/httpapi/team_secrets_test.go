package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/secrets"
	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/teams"
)

// TestTeamSecrets: on both databases, a team owner stores a team secret;
// members list and read its name and dates, viewers get 403, strangers
// 404, only owners write and delete; the value is in no answer, no log
// line and no database row in plain text, is sealed under the team (a
// member's own secrets are apart), and goes with the team.
func TestTeamSecrets(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			var sec *secrets.Store
			h := newTeamsHarness(t, d, func(deps *Deps) {
				var err error
				if sec, err = secrets.New(deps.Store, bytes.Repeat([]byte{7}, 32)); err != nil {
					t.Fatal(err)
				}
				deps.Secrets = sec
			})
			for _, n := range []string{"ann", "ben", "vic", "dan"} {
				h.createUser(n+"@example.com", auth.RoleMember)
			}
			ann, ben, vic, dan := h.mustLogin("ann@example.com"), h.mustLogin("ben@example.com"), h.mustLogin("vic@example.com"), h.mustLogin("dan@example.com")
			var tm teams.Team
			h.do(ann, "POST", "/teams", map[string]any{"name": "Vault"}).data(t, &tm)
			team := "/teams/" + tm.ID
			wantStatus(t, h.do(ann, "POST", team+"/members", map[string]any{"email": "ben@example.com", "role": "member"}), http.StatusOK)
			wantStatus(t, h.do(ann, "POST", team+"/members", map[string]any{"email": "vic@example.com", "role": "viewer"}), http.StatusOK)

			const value = "ghp_team-secret-value-0123456789abcdef"
			body := map[string]string{"value": value}
			wantStatus(t, h.do(ben, "PUT", team+"/secrets/deploy_token", body), http.StatusForbidden)
			wantStatus(t, h.do(vic, "PUT", team+"/secrets/deploy_token", body), http.StatusForbidden)
			wantStatus(t, h.do(dan, "PUT", team+"/secrets/deploy_token", body), http.StatusNotFound)
			wantField(t, h.do(ann, "PUT", team+"/secrets/bad%20name", body), http.StatusUnprocessableEntity, "name")
			wantStatus(t, h.do(ann, "PUT", team+"/secrets/deploy_token", body), http.StatusNoContent)

			var answers []string
			for _, c := range []*http.Client{ann, ben} {
				r := h.do(c, "GET", team+"/secrets", nil)
				wantStatus(t, r, http.StatusOK)
				if !strings.Contains(string(r.body), `"name":"deploy_token"`) {
					t.Errorf("team secret list: %s", r.body)
				}
				r2 := h.do(c, "GET", team+"/secrets/deploy_token", nil)
				wantStatus(t, r2, http.StatusOK)
				answers = append(answers, string(r.body), string(r2.body))
			}
			wantStatus(t, h.do(ben, "GET", team+"/secrets/nope", nil), http.StatusNotFound)
			wantStatus(t, h.do(vic, "GET", team+"/secrets", nil), http.StatusForbidden)
			wantStatus(t, h.do(vic, "GET", team+"/secrets/deploy_token", nil), http.StatusForbidden)
			wantStatus(t, h.do(dan, "GET", team+"/secrets", nil), http.StatusNotFound)
			// A member's own secrets are apart from the team's.
			if r := h.do(ben, "GET", "/secrets", nil); strings.TrimSpace(string(r.body)) != `{"data":[]}` {
				t.Errorf("ben's own secrets: %s", r.body)
			}
			for _, a := range answers {
				if strings.Contains(a, value) {
					t.Fatalf("an answer holds the value: %s", a)
				}
			}
			if strings.Contains(h.logs.String(), value) {
				t.Error("the team secret is in the logs")
			}
			if dump := dumpTable(t, h, "team_secrets") + dumpTable(t, h, "user_secrets"); strings.Contains(dump, value) || !strings.Contains(dump, "v1:") {
				t.Error("the team secret is stored in plain text (or not sealed)")
			}
			ctx := context.Background()
			if v, err := sec.Reveal(ctx, secrets.TeamOwner(tm.ID), "deploy_token"); err != nil || v != value {
				t.Errorf("Reveal(team) = %q, %v", v, err)
			}

			wantStatus(t, h.do(ben, "DELETE", team+"/secrets/deploy_token", nil), http.StatusForbidden)
			wantStatus(t, h.do(ann, "PUT", team+"/secrets/other", body), http.StatusNoContent)
			wantStatus(t, h.do(ann, "DELETE", team+"/secrets/deploy_token", nil), http.StatusNoContent)
			wantStatus(t, h.do(ann, "DELETE", team+"/secrets/deploy_token", nil), http.StatusNotFound)
			// Deleting the team deletes its secrets.
			wantStatus(t, h.do(ann, "DELETE", team, nil), http.StatusNoContent)
			if list, err := sec.List(ctx, secrets.TeamOwner(tm.ID)); err != nil || len(list) != 0 {
				t.Errorf("team secrets after the team's delete: %+v, %v", list, err)
			}
		})
	}
}
