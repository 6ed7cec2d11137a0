package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Secret is an API key. It redacts itself in logs and fmt output so a key
// can be passed around in config structs without leaking.
type Secret string

// String returns a redacted placeholder.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts %#v output too.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts the key in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON never writes the key.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Reveal returns the key itself, for the SDK client only.
func (s Secret) Reveal() string { return string(s) }

// Provider types understood by the factories wired in cmd/server.
const (
	TypeAnthropic = "anthropic"
	TypeOpenAI    = "openai"
	TypeBedrock   = "bedrock"
)

// Config is the LLM section of the server configuration: which providers
// exist, which models each offers at what price, and the default budget.
// It is read from the JSON file named by TECHBOSS_LLM_CONFIG, or inline
// JSON in TECHBOSS_LLM_PROVIDERS, or derived from ANTHROPIC_API_KEY /
// OPENAI_API_KEY when neither is set.
type Config struct {
	Providers []ProviderConfig `json:"providers"`
	// DefaultProvider serves requests that name neither a provider nor a
	// model listed anywhere (only when it accepts any model).
	DefaultProvider string `json:"default_provider,omitempty"`
	// Prices adds prices for models reached without a ModelConfig (e.g.
	// through the gateway), keyed by model ID or ID prefix.
	Prices map[string]Price `json:"prices,omitempty"`
	Budget BudgetConfig     `json:"budget"`
	// Gateway configures the passthrough upstreams (/llm/anthropic, /llm/openai).
	Gateway GatewayConfig `json:"gateway"`
	// FallbackPrice, if set, prices models nothing above prices (e.g. the
	// gateway's list prices by model family), so budgets count them.
	FallbackPrice func(model string) (Price, bool) `json:"-"`
}

// GatewayConfig chooses the gateway's upstreams. TECHBOSS_GATEWAY_UPSTREAM
// overrides AnthropicUpstream.
type GatewayConfig struct {
	// AnthropicUpstream serves /llm/anthropic: "anthropic" (default) or
	// "bedrock" (Anthropic models on Bedrock, credentials from the AWS chain).
	AnthropicUpstream string `json:"anthropic_upstream,omitempty"`
	AnthropicBaseURL  string `json:"anthropic_base_url,omitempty"`
	BedrockRegion     string `json:"bedrock_region,omitempty"`
	BedrockBaseURL    string `json:"bedrock_base_url,omitempty"`
	// BedrockModels maps client model names (exact or prefix) to Bedrock
	// model IDs or inference profiles.
	BedrockModels map[string]string `json:"bedrock_models,omitempty"`
	OpenAIBaseURL string            `json:"openai_base_url,omitempty"`
	// OpenAIKeyEnv names the variable with the OpenAI passthrough's key
	// (default OPENAI_API_KEY).
	OpenAIKeyEnv string `json:"openai_key_env,omitempty"`

	AnthropicKey Secret `json:"-"` // from ANTHROPIC_API_KEY
	OpenAIKey    Secret `json:"-"` // from OpenAIKeyEnv
}

// ProviderConfig configures one named provider.
type ProviderConfig struct {
	Name string `json:"name"`
	Type string `json:"type"` // anthropic | openai | bedrock
	// BaseURL points an SDK at another endpoint: an OpenAI-compatible
	// server (Ollama, vLLM, llama.cpp, OpenRouter), a proxy, or a test server.
	BaseURL string `json:"base_url,omitempty"`
	// APIKeyEnv names the environment variable holding the key; keys never
	// live in the config file. Defaults: ANTHROPIC_API_KEY for anthropic,
	// OPENAI_API_KEY for openai without a base_url.
	APIKeyEnv string `json:"api_key_env,omitempty"`
	// API selects the OpenAI API: "chat" (Chat Completions, default) or "responses".
	API string `json:"api,omitempty"`
	// Region is the AWS region for bedrock (default: from the AWS chain).
	Region string `json:"region,omitempty"`
	// TimeoutS bounds one whole upstream call (default 600).
	TimeoutS int `json:"timeout_s,omitempty"`
	// MaxRetries is how often the SDK retries a failed call before any
	// byte is streamed (default 2; 0 passes 429/5xx straight on).
	MaxRetries *int `json:"max_retries,omitempty"`
	// Models offered through this provider; AnyModel also accepts unlisted IDs.
	Models   []ModelConfig `json:"models,omitempty"`
	AnyModel bool          `json:"any_model,omitempty"`

	// APIKey is filled from APIKeyEnv by LoadConfig.
	APIKey Secret `json:"-"`
}

// Timeout returns the per-call timeout.
func (p ProviderConfig) Timeout() time.Duration {
	if p.TimeoutS > 0 {
		return time.Duration(p.TimeoutS) * time.Second
	}
	return 10 * time.Minute
}

// Retries returns the configured retry count.
func (p ProviderConfig) Retries() int {
	if p.MaxRetries != nil && *p.MaxRetries >= 0 {
		return *p.MaxRetries
	}
	return 2
}

// ModelConfig is one offered model.
type ModelConfig struct {
	ID string `json:"id"` // what clients ask for
	// UpstreamID is sent to the provider when it differs (a Bedrock
	// inference profile, a dated snapshot).
	UpstreamID string `json:"upstream_id,omitempty"`
	Price
}

// Upstream returns the model ID to send upstream.
func (m ModelConfig) Upstream() string {
	if m.UpstreamID != "" {
		return m.UpstreamID
	}
	return m.ID
}

// Price is USD per million tokens.
type Price struct {
	InputPerMTok      float64 `json:"input_per_mtok,omitempty"`
	OutputPerMTok     float64 `json:"output_per_mtok,omitempty"`
	CacheReadPerMTok  float64 `json:"cache_read_per_mtok,omitempty"`
	CacheWritePerMTok float64 `json:"cache_write_per_mtok,omitempty"`
}

// Cost returns the USD cost of u at price p.
func (p Price) Cost(u Usage) float64 {
	return (float64(u.InputTokens)*p.InputPerMTok +
		float64(u.OutputTokens)*p.OutputPerMTok +
		float64(u.CacheReadTokens)*p.CacheReadPerMTok +
		float64(u.CacheWriteTokens)*p.CacheWritePerMTok) / 1e6
}

// BudgetConfig is the default per-user budget; a per-user row in the
// database overrides it. Zero means unlimited.
type BudgetConfig struct {
	MonthlyUSD        float64 `json:"monthly_usd,omitempty"`
	RequestsPerMinute int     `json:"requests_per_minute,omitempty"`
}

// LoadConfig reads the configuration from the environment (see Config)
// and fills each provider's key from its APIKeyEnv. An invalid setting
// returns one error naming it.
func LoadConfig(getenv func(string) string) (Config, error) {
	var cfg Config
	switch {
	case getenv("TECHBOSS_LLM_CONFIG") != "":
		path := getenv("TECHBOSS_LLM_CONFIG")
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("TECHBOSS_LLM_CONFIG: %w", err)
		}
		if err := decodeConfig(b, &cfg); err != nil {
			return cfg, fmt.Errorf("TECHBOSS_LLM_CONFIG %s: %w", path, err)
		}
	case getenv("TECHBOSS_LLM_PROVIDERS") != "":
		if err := decodeConfig([]byte(getenv("TECHBOSS_LLM_PROVIDERS")), &cfg); err != nil {
			return cfg, fmt.Errorf("TECHBOSS_LLM_PROVIDERS: %w", err)
		}
	default:
		if getenv("ANTHROPIC_API_KEY") != "" {
			cfg.Providers = append(cfg.Providers, ProviderConfig{Name: "anthropic", Type: TypeAnthropic, AnyModel: true})
		}
		if getenv("OPENAI_API_KEY") != "" {
			cfg.Providers = append(cfg.Providers, ProviderConfig{Name: "openai", Type: TypeOpenAI, AnyModel: true})
		}
		if len(cfg.Providers) > 0 {
			cfg.DefaultProvider = cfg.Providers[0].Name
		}
	}
	if v := getenv("TECHBOSS_GATEWAY_UPSTREAM"); v != "" {
		cfg.Gateway.AnthropicUpstream = v
	}
	cfg.Gateway.AnthropicKey = Secret(getenv("ANTHROPIC_API_KEY"))
	if cfg.Gateway.OpenAIKeyEnv == "" {
		cfg.Gateway.OpenAIKeyEnv = "OPENAI_API_KEY"
	}
	cfg.Gateway.OpenAIKey = Secret(getenv(cfg.Gateway.OpenAIKeyEnv))
	for i := range cfg.Providers {
		p := &cfg.Providers[i]
		if p.APIKeyEnv == "" {
			switch {
			case p.Type == TypeAnthropic:
				p.APIKeyEnv = "ANTHROPIC_API_KEY"
			case p.Type == TypeOpenAI && p.BaseURL == "":
				p.APIKeyEnv = "OPENAI_API_KEY"
			}
		}
		if p.APIKeyEnv != "" {
			p.APIKey = Secret(getenv(p.APIKeyEnv))
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func decodeConfig(b []byte, cfg *Config) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// Validate checks names, types and references.
func (c *Config) Validate() error {
	seen := map[string]bool{}
	for i, p := range c.Providers {
		where := fmt.Sprintf("llm providers[%d]", i)
		if p.Name == "" || strings.ContainsAny(p.Name, " /") {
			return fmt.Errorf("%s: name %q must be non-empty without spaces or slashes", where, p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("%s: duplicate provider name %q", where, p.Name)
		}
		seen[p.Name] = true
		switch p.Type {
		case TypeAnthropic, TypeOpenAI, TypeBedrock:
		default:
			return fmt.Errorf("%s (%s): type %q must be anthropic, openai or bedrock", where, p.Name, p.Type)
		}
		if p.API != "" && p.API != "chat" && p.API != "responses" {
			return fmt.Errorf("%s (%s): api %q must be chat or responses", where, p.Name, p.API)
		}
		if len(p.Models) == 0 && !p.AnyModel {
			return fmt.Errorf("%s (%s): list models or set any_model", where, p.Name)
		}
		ids := map[string]bool{}
		for j, m := range p.Models {
			if m.ID == "" {
				return fmt.Errorf("%s (%s): models[%d].id is required", where, p.Name, j)
			}
			if ids[m.ID] {
				return fmt.Errorf("%s (%s): duplicate model %q", where, p.Name, m.ID)
			}
			ids[m.ID] = true
		}
	}
	if c.DefaultProvider != "" && !seen[c.DefaultProvider] {
		return fmt.Errorf("llm default_provider %q is not a configured provider", c.DefaultProvider)
	}
	switch c.Gateway.AnthropicUpstream {
	case "", "anthropic", "bedrock":
	default:
		return fmt.Errorf("TECHBOSS_GATEWAY_UPSTREAM / llm gateway.anthropic_upstream %q must be anthropic or bedrock", c.Gateway.AnthropicUpstream)
	}
	if c.Budget.MonthlyUSD < 0 || c.Budget.RequestsPerMinute < 0 {
		return fmt.Errorf("llm budget: limits must not be negative")
	}
	return nil
}
