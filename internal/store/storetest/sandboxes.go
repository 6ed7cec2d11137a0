package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/store"
)

// testSandboxes exercises the sandbox and volume queries on a migrated, empty DB.
func testSandboxes(t *testing.T, db *store.DB) {
	ctx := context.Background()
	base := time.UnixMilli(1_800_000_000_000).UTC()
	mk := func(id, owner string, st sandbox.State, at time.Time, labels map[string]string, vol string) *sandbox.Sandbox {
		return &sandbox.Sandbox{
			ID: id, OwnerID: owner, State: st, Driver: "local",
			Spec:      sandbox.Spec{ImageBase: "host", Labels: labels, VolumeName: vol, Env: map[string]string{"A": "***"}, CPU: 1.5},
			CreatedAt: at, UpdatedAt: at, LastActiveAt: at,
		}
	}

	a1 := mk("sb_a1", "alice", sandbox.Running, base, map[string]string{"team": "x", "env": "dev"}, "vol1")
	a2 := mk("sb_a2", "alice", sandbox.Creating, base.Add(time.Second), map[string]string{"team": "y"}, "")
	a3 := mk("sb_a3", "alice", sandbox.Terminated, base.Add(time.Second), nil, "vol1") // same created_at as a2: id breaks the tie
	b1 := mk("sb_b1", "bob", sandbox.Running, base.Add(2*time.Second), map[string]string{"team": "x"}, "vol1")
	for _, sb := range []*sandbox.Sandbox{a1, a2, a3, b1} {
		if err := db.CreateSandbox(ctx, sb); err != nil {
			t.Fatalf("CreateSandbox(%s): %v", sb.ID, err)
		}
	}
	if err := db.CreateSandbox(ctx, a1); errs.KindOf(err) != errs.Conflict {
		t.Errorf("CreateSandbox(duplicate) = %v, want conflict", err)
	}

	got, err := db.GetSandbox(ctx, "sb_a1")
	if err != nil {
		t.Fatalf("GetSandbox: %v", err)
	}
	// A spec's empty lists are stored as [] (Spec.MarshalJSON): nil and
	// empty are the same spec.
	if diff := cmp.Diff(a1, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("GetSandbox round trip (-want +got):\n%s", diff)
	}
	if _, err := db.GetSandbox(ctx, "nope"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("GetSandbox(missing) = %v, want not found", err)
	}

	// Update lifecycle fields.
	term := base.Add(time.Minute)
	a1.State, a1.Reason, a1.Ref, a1.UpdatedAt, a1.TerminatedAt = sandbox.Terminated, "idle timeout", "ref-1", term, &term
	if err := db.UpdateSandbox(ctx, a1); err != nil {
		t.Fatalf("UpdateSandbox: %v", err)
	}
	got, _ = db.GetSandbox(ctx, "sb_a1")
	if diff := cmp.Diff(a1, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("after UpdateSandbox (-want +got):\n%s", diff)
	}
	if err := db.UpdateSandbox(ctx, &sandbox.Sandbox{ID: "nope", State: sandbox.Running}); errs.KindOf(err) != errs.NotFound {
		t.Errorf("UpdateSandbox(missing) = %v, want not found", err)
	}
	a1.State, a1.TerminatedAt = sandbox.Running, nil
	if err := db.UpdateSandbox(ctx, a1); err != nil {
		t.Fatalf("UpdateSandbox: %v", err)
	}

	// Touch raises, never lowers.
	if err := db.TouchSandbox(ctx, "sb_b1", base.Add(time.Hour)); err != nil {
		t.Fatalf("TouchSandbox: %v", err)
	}
	if err := db.TouchSandbox(ctx, "sb_b1", base); err != nil {
		t.Fatalf("TouchSandbox: %v", err)
	}
	got, _ = db.GetSandbox(ctx, "sb_b1")
	if want := base.Add(time.Hour); !got.LastActiveAt.Equal(want) {
		t.Errorf("LastActiveAt = %v, want %v", got.LastActiveAt, want)
	}

	ids := func(f sandbox.ListFilter) string {
		t.Helper()
		l, err := db.ListSandboxes(ctx, f)
		if err != nil {
			t.Fatalf("ListSandboxes(%+v): %v", f, err)
		}
		s := ""
		for _, sb := range l {
			s += sb.ID + " "
		}
		return s
	}
	for _, tc := range []struct {
		name string
		f    sandbox.ListFilter
		want string
	}{
		{"all", sandbox.ListFilter{}, "sb_b1 sb_a3 sb_a2 sb_a1 "},
		{"owner", sandbox.ListFilter{OwnerID: "alice"}, "sb_a3 sb_a2 sb_a1 "},
		{"states", sandbox.ListFilter{OwnerID: "alice", States: []sandbox.State{sandbox.Running, sandbox.Creating}}, "sb_a2 sb_a1 "},
		{"label", sandbox.ListFilter{Labels: map[string]string{"team": "x"}}, "sb_b1 sb_a1 "},
		{"two labels", sandbox.ListFilter{Labels: map[string]string{"team": "x", "env": "dev"}}, "sb_a1 "},
		{"label miss", sandbox.ListFilter{Labels: map[string]string{"team": "z"}}, ""},
		{"volume", sandbox.ListFilter{OwnerID: "alice", VolumeName: "vol1"}, "sb_a3 sb_a1 "},
		{"limit", sandbox.ListFilter{OwnerID: "alice", Limit: 2}, "sb_a3 sb_a2 "},
		{"after tie", sandbox.ListFilter{OwnerID: "alice", After: &sandbox.Cursor{CreatedAt: base.Add(time.Second), ID: "sb_a3"}}, "sb_a2 sb_a1 "},
		{"after", sandbox.ListFilter{OwnerID: "alice", After: &sandbox.Cursor{CreatedAt: base.Add(time.Second), ID: "sb_a2"}}, "sb_a1 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(tc.f); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if tc.f.Limit > 0 || tc.f.After != nil {
				return // CountSandboxes ignores both
			}
			if n, err := db.CountSandboxes(ctx, tc.f); err != nil || n != len(strings.Fields(tc.want)) {
				t.Errorf("CountSandboxes = %d, %v; want %d", n, err, len(strings.Fields(tc.want)))
			}
		})
	}

	counts, err := db.CountSandboxesByState(ctx)
	if err != nil {
		t.Fatalf("CountSandboxesByState: %v", err)
	}
	if diff := cmp.Diff(map[sandbox.State]int{sandbox.Running: 2, sandbox.Creating: 1, sandbox.Terminated: 1}, counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}

	// Volumes.
	for i := range 2 { // the second is a no-op
		if err := db.EnsureVolume(ctx, sandbox.VolumeRecord{OwnerID: "alice", Name: "vol1", Driver: "local", CreatedAt: base.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatalf("EnsureVolume: %v", err)
		}
	}
	if err := db.EnsureVolume(ctx, sandbox.VolumeRecord{OwnerID: "alice", Name: "a-vol", Driver: "local", CreatedAt: base}); err != nil {
		t.Fatalf("EnsureVolume: %v", err)
	}
	if err := db.EnsureVolume(ctx, sandbox.VolumeRecord{OwnerID: "bob", Name: "vol1", Driver: "local", CreatedAt: base}); err != nil {
		t.Fatalf("EnsureVolume: %v", err)
	}
	vols, err := db.ListVolumes(ctx, "alice")
	if err != nil {
		t.Fatalf("ListVolumes: %v", err)
	}
	want := []sandbox.VolumeRecord{
		{OwnerID: "alice", Name: "a-vol", Driver: "local", CreatedAt: base},
		{OwnerID: "alice", Name: "vol1", Driver: "local", CreatedAt: base},
	}
	if diff := cmp.Diff(want, vols); diff != "" {
		t.Errorf("ListVolumes (-want +got):\n%s", diff)
	}
	if err := db.DeleteVolume(ctx, "alice", "vol1"); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if err := db.DeleteVolume(ctx, "alice", "vol1"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("DeleteVolume(again) = %v, want not found", err)
	}
	if vols, _ := db.ListVolumes(ctx, "bob"); len(vols) != 1 {
		t.Errorf("bob's volumes = %v, want his vol1 untouched", vols)
	}

	// Many rows page through without gaps or repeats.
	for i := range 25 {
		sb := mk(fmt.Sprintf("sb_p%02d", i), "carol", sandbox.Running, base.Add(time.Duration(i/3)*time.Second), nil, "")
		if err := db.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	var after *sandbox.Cursor
	for range 10 {
		page, err := db.ListSandboxes(ctx, sandbox.ListFilter{OwnerID: "carol", Limit: 4, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, sb := range page {
			if seen[sb.ID] {
				t.Errorf("page repeats %s", sb.ID)
			}
			seen[sb.ID] = true
		}
		last := page[len(page)-1]
		after = &sandbox.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if len(seen) != 25 {
		t.Errorf("paged through %d sandboxes, want 25", len(seen))
	}
}
