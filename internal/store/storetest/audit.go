package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/audit"
	"github.com/techbossai/techboss/internal/store"
)

func testAudit(t *testing.T, db *store.DB) {
	ctx := context.Background()
	base := time.UnixMilli(1_800_000_000_000).UTC()
	mk := func(id string, sec int, user, action, resource string) audit.Entry {
		return audit.Entry{ID: id, At: base.Add(time.Duration(sec) * time.Second), UserID: user, Email: user + "@example.com",
			Auth: "token", TokenID: "tok-" + user, IP: "192.0.2.1", Action: action, Method: "POST", Route: "/x",
			Resource: resource, Status: 201, ErrorCode: "", RequestID: "req-" + id}
	}
	es := []audit.Entry{
		mk("au_1", 0, "alice", "sandbox.create", "sandbox:sb_1"),
		mk("au_2", 1, "alice", "exec", "sandbox:sb_1"),
		mk("au_3", 1, "bob", "run.start", "sandbox:sb_1/run:run_1"),
		mk("au_4", 2, "bob", "sandbox.create", "sandbox:sb_10"),
		mk("au_5", 3, "alice", "secret.put", "secret:a_b"),
	}
	es[4].Status, es[4].ErrorCode = 422, "invalid"
	if err := db.AppendAudit(ctx, es[:3]); err != nil {
		t.Fatal(err)
	}
	// A retried batch (same IDs) is not doubled.
	if err := db.AppendAudit(ctx, es); err != nil {
		t.Fatalf("AppendAudit again: %v", err)
	}
	ids := func(f audit.Filter) []string {
		t.Helper()
		got, err := db.ListAudit(ctx, f)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", f, err)
		}
		out := []string{}
		for _, e := range got {
			out = append(out, e.ID)
		}
		return out
	}
	all, err := db.ListAudit(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	want := []audit.Entry{es[4], es[3], es[2], es[1], es[0]}
	if d := cmp.Diff(want, all); d != "" {
		t.Errorf("ListAudit (-want +got):\n%s", d)
	}
	for _, c := range []struct {
		name string
		f    audit.Filter
		want []string
	}{
		{"user", audit.Filter{User: "bob"}, []string{"au_4", "au_3"}},
		{"email", audit.Filter{User: "bob@example.com"}, []string{"au_4", "au_3"}},
		{"action", audit.Filter{Action: "sandbox.create"}, []string{"au_4", "au_1"}},
		// A resource matches itself and what is under it, not a longer ID.
		{"resource", audit.Filter{Resource: "sandbox:sb_1"}, []string{"au_3", "au_2", "au_1"}},
		{"resource wildcard is literal", audit.Filter{Resource: "secret:a%"}, []string{}},
		{"from to", audit.Filter{From: base.Add(time.Second), To: base.Add(3 * time.Second)}, []string{"au_4", "au_3", "au_2"}},
		{"limit", audit.Filter{Limit: 2}, []string{"au_5", "au_4"}},
		{"after (same time, smaller id)", audit.Filter{After: &audit.Cursor{At: es[2].At, ID: "au_3"}}, []string{"au_2", "au_1"}},
	} {
		if d := cmp.Diff(c.want, ids(c.f)); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, d)
		}
	}
	n, err := db.DeleteAuditBefore(ctx, base.Add(2*time.Second))
	if err != nil || n != 3 {
		t.Fatalf("DeleteAuditBefore: %d, %v; want 3", n, err)
	}
	if d := cmp.Diff([]string{"au_5", "au_4"}, ids(audit.Filter{})); d != "" {
		t.Errorf("after sweep (-want +got):\n%s", d)
	}
}
