package llm_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/techbossai/techboss/internal/llm"
	"github.com/techbossai/techboss/internal/llm/anthropic"
	"github.com/techbossai/techboss/internal/llm/bedrock"
	"github.com/techbossai/techboss/internal/llm/openai"
)

// Example_wiring shows how cmd/server builds the LLM graph: configuration
// from the environment, one factory per provider type in a map literal,
// budgets over the usage store (which implements Ledger and LimitStore).
func Example_wiring() {
	ctx := context.Background()
	cfg, err := llm.LoadConfig(os.Getenv)
	if err != nil {
		log.Fatal(err) // names the bad setting
	}
	reg, err := llm.NewRegistry(ctx, cfg, map[string]llm.Factory{
		llm.TypeAnthropic: anthropic.Factory(nil),
		llm.TypeOpenAI:    openai.Factory(nil),
		llm.TypeBedrock:   bedrock.Factory(),
	})
	if err != nil {
		log.Fatal(err)
	}
	var db interface {
		llm.Ledger
		llm.LimitStore
	} // *store.DB
	if db != nil {
		budgets := llm.NewBudgets(cfg.Budget, db, db, time.Now)
		_ = budgets // httpapi.LLMDeps{Registry: reg, Budgets: budgets, Recorder: runs}; gateway.Config{Admit: budgets.Check, Price: reg.PriceOf}
	}
	_ = reg
}
