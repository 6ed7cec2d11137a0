package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/teams"
)

// TestTeamVolumes: a team sandbox's named volume is the team's. A member
// writes to it in one team sandbox; another member's new team sandbox with
// the same volume_name sees the file, a personal sandbox with that name
// does not. Members list the team's volumes with X-Team, only owners
// delete them, strangers do neither, and the in-use rule is the team's.
func TestTeamVolumes(t *testing.T) {
	t.Parallel()
	h := newSandboxHarness(t, nil)
	h.createUser("sam@example.com", auth.RoleMember)
	alice, bob, sam := h.alice, h.bob, h.mustLogin("sam@example.com")
	var tm teams.Team
	h.do(alice, "POST", "/teams", map[string]any{"name": "Shared"}).data(t, &tm)
	wantStatus(t, h.do(alice, "POST", "/teams/"+tm.ID+"/members", map[string]any{"email": "bob@example.com", "role": "member"}), http.StatusOK)

	run := func(c *http.Client, id, cmd string) string {
		t.Helper()
		var out execWaitResponse
		r := h.do(c, "POST", "/sandbox/"+id+"/exec?wait=true", map[string]any{"command": []string{"sh", "-c", cmd}})
		wantStatus(t, r, http.StatusOK)
		r.data(t, &out)
		return strings.TrimSpace(out.Stdout)
	}
	createIn := func(c *http.Client, team string) string {
		t.Helper()
		r := h.do(c, "POST", "/sandbox", map[string]any{"volume_name": "proj"}, "X-Team", team)
		wantStatus(t, r, http.StatusOK)
		var out createSandboxResponse
		r.data(t, &out)
		return out.SandboxID
	}
	volumes := func(c *http.Client, hdr ...string) []string {
		t.Helper()
		r := h.do(c, "GET", "/volumes", nil, hdr...)
		wantStatus(t, r, http.StatusOK)
		var l listVolumesResponse
		r.data(t, &l)
		names := []string{}
		for _, v := range l.Volumes {
			names = append(names, v.Name)
		}
		return names
	}

	// bob writes in his team sandbox; alice's personal "proj" is apart.
	a := createIn(bob, tm.ID)
	run(bob, a, "echo team-data > /workspace/note")
	wantStatus(t, h.do(alice, "DELETE", "/volumes/proj", nil, "X-Team", tm.ID), http.StatusConflict)
	wantStatus(t, h.do(bob, "DELETE", "/sandbox/"+a, nil), http.StatusOK)

	b := createIn(alice, tm.ID)
	if got := run(alice, b, "cat /workspace/note"); got != "team-data" {
		t.Fatalf("alice's team sandbox reads %q, want the team volume's note", got)
	}
	personal := h.createSandbox(bob, map[string]any{"volume_name": "proj"})
	if got := run(bob, personal, "cat /workspace/note 2>/dev/null || echo none"); got != "none" {
		t.Fatalf("bob's personal volume proj reads %q, want no note (the team's volume is apart)", got)
	}

	if got := volumes(bob, "X-Team", tm.ID); len(got) != 1 || got[0] != "proj" {
		t.Errorf("team volumes for a member = %v, want [proj]", got)
	}
	if got := volumes(alice); len(got) != 0 {
		t.Errorf("alice's own volumes = %v, want none (proj is the team's)", got)
	}
	wantField(t, h.do(sam, "GET", "/volumes?team="+tm.ID, nil), http.StatusUnprocessableEntity, "team")
	wantField(t, h.do(sam, "DELETE", "/volumes/proj", nil, "X-Team", tm.ID), http.StatusUnprocessableEntity, "team")
	wantStatus(t, h.do(bob, "DELETE", "/volumes/proj", nil, "X-Team", tm.ID), http.StatusForbidden)
	// Mounted by alice's team sandbox: 409 for the owner; bob's personal
	// sandbox does not hold the team's volume, nor alice's the personal one.
	wantStatus(t, h.do(alice, "DELETE", "/volumes/proj", nil, "X-Team", tm.ID), http.StatusConflict)
	wantStatus(t, h.do(alice, "DELETE", "/sandbox/"+b, nil), http.StatusOK)
	// The team cannot be deleted while it owns a volume: that would leave
	// the data behind with no one able to reach or delete it.
	if r := h.do(alice, "DELETE", "/teams/"+tm.ID, nil); r.status != http.StatusConflict || !strings.Contains(string(r.body), "volume") {
		t.Fatalf("delete a team that owns a volume: %d %s, want 409 naming the volumes", r.status, r.body)
	}
	wantStatus(t, h.do(alice, "DELETE", "/volumes/proj", nil, "X-Team", tm.ID), http.StatusOK)
	if got := volumes(bob, "X-Team", tm.ID); len(got) != 0 {
		t.Errorf("team volumes after delete = %v", got)
	}
	if got := volumes(bob); len(got) != 1 || got[0] != "proj" {
		t.Errorf("bob's own volumes = %v, want [proj] (untouched)", got)
	}
	if got := run(bob, personal, "ls /workspace"); got != "" {
		t.Errorf("bob's personal volume holds %q", got)
	}
	wantStatus(t, h.do(alice, "DELETE", "/teams/"+tm.ID, nil), http.StatusNoContent)
}
