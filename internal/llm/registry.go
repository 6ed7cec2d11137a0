package llm

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/techbossai/techboss/internal/errs"
)

// Factory builds a Provider from its configuration. cmd/server wires one
// per provider type in a map literal.
type Factory func(ctx context.Context, cfg ProviderConfig) (Provider, error)

// Registry holds the configured providers and answers which one serves a
// model, at what price. It is immutable after NewRegistry and safe for
// concurrent use.
type Registry struct {
	order     []string
	providers map[string]*entry
	def       string
	prices    map[string]Price
	fallback  func(string) (Price, bool)
	budget    BudgetConfig
}

type entry struct {
	cfg    ProviderConfig
	p      Provider
	models map[string]ModelConfig
}

// Route is a resolved request target.
type Route struct {
	Provider      string   // configured provider name
	Type          string   // anthropic | openai | bedrock
	Model         string   // model ID as the client named it
	UpstreamModel string   // model ID sent upstream
	Price         Price    // zero when unknown
	Priced        bool     // whether Price came from configuration
	P             Provider `json:"-"`
}

// NewRegistry builds every configured provider with the factory for its type.
func NewRegistry(ctx context.Context, cfg Config, factories map[string]Factory) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{providers: map[string]*entry{}, def: cfg.DefaultProvider, prices: cfg.Prices, fallback: cfg.FallbackPrice, budget: cfg.Budget}
	for _, pc := range cfg.Providers {
		f, ok := factories[pc.Type]
		if !ok {
			return nil, fmt.Errorf("llm provider %s: no factory for type %q", pc.Name, pc.Type)
		}
		p, err := f(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("llm provider %s: %w", pc.Name, err)
		}
		e := &entry{cfg: pc, p: p, models: map[string]ModelConfig{}}
		for _, m := range pc.Models {
			e.models[m.ID] = m
		}
		r.providers[pc.Name] = e
		r.order = append(r.order, pc.Name)
	}
	return r, nil
}

// Budget returns the configured default budget.
func (r *Registry) Budget() BudgetConfig { return r.budget }

// Empty reports whether no provider is configured.
func (r *Registry) Empty() bool { return len(r.order) == 0 }

// Resolve picks the provider for a request. An empty provider selects the
// first provider listing the model, else the default provider if it takes
// any model. Unknown names are errs.Invalid naming the field.
func (r *Registry) Resolve(provider, model string) (Route, error) {
	if model == "" {
		return Route{}, errs.Field("model", "is required")
	}
	if len(r.order) == 0 {
		return Route{}, errs.E(errs.Unavailable, "no LLM provider is configured on this server")
	}
	if provider != "" {
		e, ok := r.providers[provider]
		if !ok {
			return Route{}, errs.Field("provider", fmt.Sprintf("unknown provider %q; configured: %s", provider, strings.Join(r.order, ", ")))
		}
		return r.route(e, model)
	}
	for _, name := range r.order {
		if _, ok := r.providers[name].models[model]; ok {
			return r.route(r.providers[name], model)
		}
	}
	if e, ok := r.providers[r.def]; ok && e.cfg.AnyModel {
		return r.route(e, model)
	}
	return Route{}, errs.Field("model", fmt.Sprintf("model %q is not offered by this server; see GET /v1/models", model))
}

func (r *Registry) route(e *entry, model string) (Route, error) {
	rt := Route{Provider: e.cfg.Name, Type: e.cfg.Type, Model: model, UpstreamModel: model, P: e.p}
	if m, ok := e.models[model]; ok {
		rt.UpstreamModel = m.Upstream()
		rt.Price, rt.Priced = m.Price, m.Price != (Price{})
	} else if !e.cfg.AnyModel {
		return Route{}, errs.Field("model", fmt.Sprintf("model %q is not offered by provider %s; see GET /v1/models", model, e.cfg.Name))
	} else {
		rt.Price, rt.Priced = r.PriceOf(model)
	}
	return rt, nil
}

// PriceOf looks a model up in the global price table: exact ID first, then
// the longest configured prefix (so "claude-sonnet-4-5" prices
// "claude-sonnet-4-5-20250929"), then every provider's model list, then
// Config.FallbackPrice.
func (r *Registry) PriceOf(model string) (Price, bool) {
	if p, ok := r.prices[model]; ok {
		return p, true
	}
	best, bestLen := Price{}, 0
	for k, p := range r.prices {
		if strings.HasPrefix(model, k) && len(k) > bestLen {
			best, bestLen = p, len(k)
		}
	}
	if bestLen > 0 {
		return best, true
	}
	for _, name := range r.order {
		for _, m := range r.providers[name].models {
			if (m.ID == model || m.Upstream() == model) && m.Price != (Price{}) {
				return m.Price, true
			}
		}
	}
	if r.fallback != nil {
		return r.fallback(model)
	}
	return Price{}, false
}

// Cost prices usage for a model reached outside Resolve (the gateway).
func (r *Registry) Cost(model string, u Usage) float64 {
	p, _ := r.PriceOf(model)
	return p.Cost(u)
}

// ModelInfo is one entry of GET /v1/models.
type ModelInfo struct {
	Provider string `json:"provider"`
	Type     string `json:"type"`
	ID       string `json:"id"`
	Price    *Price `json:"price_per_mtok_usd,omitempty"`
}

// ProviderInfo describes a provider for GET /v1/models.
type ProviderInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	AnyModel bool   `json:"any_model"`
	Default  bool   `json:"default,omitempty"`
}

// Models lists what this server offers, in configuration order.
func (r *Registry) Models() ([]ModelInfo, []ProviderInfo) {
	models := []ModelInfo{}
	provs := []ProviderInfo{}
	for _, name := range r.order {
		e := r.providers[name]
		provs = append(provs, ProviderInfo{Name: name, Type: e.cfg.Type, AnyModel: e.cfg.AnyModel, Default: name == r.def})
		ids := make([]string, 0, len(e.models))
		for id := range e.models {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			mi := ModelInfo{Provider: name, Type: e.cfg.Type, ID: id}
			if p := e.models[id].Price; p != (Price{}) {
				mi.Price = &p
			}
			models = append(models, mi)
		}
	}
	return models, provs
}
