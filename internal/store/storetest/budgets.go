package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/store"
)

// Budgets exercises per-user LLM limits on a migrated, empty DB.
func Budgets(t *testing.T, db *store.DB) {
	ctx := context.Background()
	at := time.Date(2027, 1, 2, 10, 0, 0, 0, time.UTC)
	if err := db.CreateUser(ctx, auth.User{ID: "usr_budget", Email: "budget@example.com", Role: auth.RoleMember, CreatedAt: at}, "x"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.UserLimits(ctx, "usr_budget"); err != nil || ok {
		t.Fatalf("UserLimits before set = %v, %v; want none", ok, err)
	}
	want := llm.BudgetConfig{MonthlyUSD: 12.345678901, RequestsPerMinute: 30}
	if err := db.SetUserLimits(ctx, "usr_budget", want, at); err != nil {
		t.Fatal(err)
	}
	got, ok, err := db.UserLimits(ctx, "usr_budget")
	if err != nil || !ok || got != want {
		t.Fatalf("UserLimits = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	// Upsert replaces; zero means unlimited and is still an override.
	if err := db.SetUserLimits(ctx, "usr_budget", llm.BudgetConfig{}, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := db.UserLimits(ctx, "usr_budget"); !ok || got != (llm.BudgetConfig{}) {
		t.Fatalf("after update UserLimits = %+v, %v", got, ok)
	}
	if err := db.SetUserLimits(ctx, "usr_nobody", want, at); errs.KindOf(err) != errs.NotFound {
		t.Errorf("SetUserLimits(unknown user) = %v, want not found", err)
	}
	if err := db.SetUserLimits(ctx, "usr_budget", llm.BudgetConfig{MonthlyUSD: -1}, at); errs.KindOf(err) != errs.Invalid {
		t.Errorf("SetUserLimits(negative) = %v, want invalid", err)
	}
	for range 2 {
		if err := db.DeleteUserLimits(ctx, "usr_budget"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := db.UserLimits(ctx, "usr_budget"); ok {
		t.Error("limits still there after delete")
	}
}
