// Package gateway is the server's LLM passthrough for agents: the
// Anthropic Messages API at /llm/anthropic/v1/messages. It authenticates a
// run-scoped token (or a user API token), forwards the request to the
// configured upstream with the server's own key (which never leaves the
// server), streams the answer back unchanged, and meters the usage it
// reads from the stream on the side (tokens and cost per run, sandbox and
// user).
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// Prefix is where the Anthropic passthrough is mounted; clients use
// ANTHROPIC_BASE_URL=<server>/llm/anthropic.
const Prefix = "/llm/anthropic"

// RunTokens resolves run-scoped tokens (agent.Service implements it).
type RunTokens interface {
	AuthenticateRunToken(ctx context.Context, token string) (agent.Principal, error)
}

// Recorder stores metered calls (agent.Service implements it).
type Recorder interface {
	RecordUsage(ctx context.Context, rec agent.UsageRecord) error
}

// UserAuth resolves a user API token to a user ID (an adapter over
// auth.Service.Authenticate). A bad token is an errs.Unauthenticated error.
type UserAuth func(ctx context.Context, token string) (userID string, err error)

// UpstreamRequest is one request to send upstream, already authenticated.
type UpstreamRequest struct {
	Method   string
	Path     string // e.g. /v1/messages
	RawQuery string
	Header   http.Header // client headers minus credentials and hop-by-hop ones
	Body     []byte
}

// Upstream sends Anthropic Messages API requests to a provider and
// answers in the Anthropic wire format (other providers translate).
type Upstream interface {
	// Name is the provider name recorded with usage (e.g. "anthropic").
	Name() string
	Do(ctx context.Context, req UpstreamRequest) (*http.Response, error)
}

// Config configures the gateway.
type Config struct {
	Upstream  Upstream
	RunTokens RunTokens
	Users     UserAuth // nil: only run tokens are accepted
	Recorder  Recorder // nil: usage is not recorded
	// Price returns the price of a model; nil uses DefaultPrice.
	Price func(model string) (llm.Price, bool)
	// Admit, if set, is asked before each call (budgets, rate limits).
	Admit func(ctx context.Context, userID string) error
	// AdmitSandbox, if set, is asked too (after Admit) for a call from a
	// sandbox's run (the team budget); it is asked only when Admit is set.
	AdmitSandbox func(ctx context.Context, sandboxID string) error
	MaxBodyBytes int64 // default 32 MiB
	Logger       *slog.Logger
	Metrics      prometheus.Registerer
}

// Gateway is the passthrough handler.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Upstream == nil || cfg.RunTokens == nil {
		return nil, errors.New("gateway: upstream and run tokens are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.Price == nil {
		cfg.Price = DefaultPrice
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger}
	g.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "techboss_llm_gateway_requests_total", Help: "Gateway calls by provider and upstream status class.",
	}, []string{"provider", "status"})
	g.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "techboss_llm_gateway_request_seconds", Help: "Duration of gateway calls until the answer ended.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600},
	}, []string{"provider"})
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{g.requests, g.duration} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: register metrics: %w", err)
			}
		}
	}
	return g, nil
}

// DefaultPrices are USD per million tokens by model-name prefix. The
// family prefixes ("claude-opus-", …) price a model newer than the
// versions listed (e.g. the default model of a newer Claude Code) like
// its family's latest listed one, so it is never metered as free;
// configure exact prices in the model registry.
var DefaultPrices = map[string]llm.Price{
	"claude-opus-4":   {InputPerMTok: 5, OutputPerMTok: 25, CacheReadPerMTok: 0.5, CacheWritePerMTok: 6.25},
	"claude-sonnet-4": {InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75},
	"claude-haiku-4":  {InputPerMTok: 1, OutputPerMTok: 5, CacheReadPerMTok: 0.1, CacheWritePerMTok: 1.25},
	"claude-opus-":    {InputPerMTok: 5, OutputPerMTok: 25, CacheReadPerMTok: 0.5, CacheWritePerMTok: 6.25},
	"claude-sonnet-":  {InputPerMTok: 3, OutputPerMTok: 15, CacheReadPerMTok: 0.3, CacheWritePerMTok: 3.75},
	"claude-haiku-":   {InputPerMTok: 1, OutputPerMTok: 5, CacheReadPerMTok: 0.1, CacheWritePerMTok: 1.25},
}

// PriceTable returns a price lookup over table: an exact model name
// first, then the longest matching prefix.
func PriceTable(table map[string]llm.Price) func(string) (llm.Price, bool) {
	return func(model string) (llm.Price, bool) {
		if p, ok := table[model]; ok {
			return p, true
		}
		best, n := llm.Price{}, 0
		for k, p := range table {
			if strings.HasPrefix(model, k) && len(k) > n {
				best, n = p, len(k)
			}
		}
		return best, n > 0
	}
}

// DefaultPrice looks models up in DefaultPrices.
var DefaultPrice = PriceTable(DefaultPrices)

// CostNanoUSD is the cost of u at price p in billionths of a USD.
func CostNanoUSD(p llm.Price, u agent.Usage) int64 {
	usd := p.Cost(llm.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CacheReadTokens: u.CacheReadTokens, CacheWriteTokens: u.CacheCreationTokens})
	return int64(math.Round(usd * 1e9))
}

// ServeHTTP serves Prefix + "/v1/messages" (streaming and not),
// "/v1/messages/count_tokens", and HEAD/GET of the base URL (the CLI
// probes it once).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, Prefix)
	switch {
	case p == "" || p == "/":
		if r.Method == http.MethodHead || r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK)
			return
		}
		apiError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method not allowed")
	case p == "/v1/messages" || p == "/v1/messages/count_tokens":
		if r.Method != http.MethodPost {
			apiError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method not allowed")
			return
		}
		g.proxy(w, r, p)
	default:
		apiError(w, http.StatusNotFound, "not_found_error", "no such endpoint on the gateway")
	}
}

// credential reads the client's key from x-api-key or a Bearer header.
func credential(r *http.Request) string {
	if k := r.Header.Get("x-api-key"); k != "" {
		return k
	}
	if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(a)
	}
	return ""
}

func (g *Gateway) authenticate(ctx context.Context, tok string) (agent.Principal, error) {
	deny := errs.E(errs.Unauthenticated, "invalid API key")
	switch {
	case tok == "":
		return agent.Principal{}, deny
	case strings.HasPrefix(tok, "tbr_"):
		return g.cfg.RunTokens.AuthenticateRunToken(ctx, tok)
	case g.cfg.Users != nil:
		if _, bound := agent.BoundSandbox(ctx); bound {
			// A sandbox's own listener serves only its runs.
			return agent.Principal{}, deny
		}
		uid, err := g.cfg.Users(ctx, tok)
		if err != nil {
			return agent.Principal{}, err
		}
		return agent.Principal{UserID: uid}, nil
	}
	return agent.Principal{}, deny
}

// admit asks Config.Admit. A run already under way, whose token was
// checked in memory, keeps reaching the model while the database is
// unreachable (its budget is checked again once it answers): a run ends
// failed only for its own reasons, never because the database blinked.
func (g *Gateway) admit(ctx context.Context, pr agent.Principal) error {
	err := g.cfg.Admit(ctx, pr.UserID)
	if err == nil && pr.SandboxID != "" && g.cfg.AdmitSandbox != nil {
		err = g.cfg.AdmitSandbox(ctx, pr.SandboxID)
	}
	if err != nil && pr.RunID != "" && errs.KindOf(err) == errs.Unavailable {
		g.log.WarnContext(ctx, "budget check skipped for a running run: the database is unreachable", "run_id", pr.RunID, "err", err)
		return nil
	}
	return err
}

// unavailable reports an error that means the database cannot answer now
// and sets its Retry-After on w.
func unavailable(w http.ResponseWriter, err error) bool {
	e, ok := errs.Public(err)
	if !ok || e.Kind != errs.Unavailable {
		return false
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	return true
}

// hop-by-hop and credential headers are never forwarded.
var dropHeaders = map[string]bool{
	"Authorization": true, "X-Api-Key": true, "Cookie": true, "Host": true, "Content-Length": true,
	"Connection": true, "Keep-Alive": true, "Proxy-Authorization": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Accept-Encoding": true, "Forwarded": true,
	"X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request, path string) {
	ctx := r.Context()
	pr, err := g.authenticate(ctx, credential(r))
	if err != nil {
		if errs.KindOf(err) == errs.Unauthenticated {
			apiError(w, http.StatusUnauthorized, "authentication_error", "invalid API key")
			return
		}
		if unavailable(w, err) {
			apiError(w, http.StatusServiceUnavailable, "api_error", "the server's database is unreachable; retry shortly")
			return
		}
		g.log.ErrorContext(ctx, "gateway authenticate", "err", err)
		apiError(w, http.StatusInternalServerError, "api_error", "internal error")
		return
	}
	if g.cfg.Admit != nil {
		if err := g.admit(ctx, pr); err != nil {
			status, typ := http.StatusTooManyRequests, "rate_limit_error"
			switch errs.KindOf(err) {
			case errs.PaymentRequired:
				status, typ = http.StatusPaymentRequired, "billing_error"
			case errs.Unavailable:
				status, typ = http.StatusServiceUnavailable, "api_error"
			}
			msg := "request refused"
			if e, ok := errs.Public(err); ok {
				msg = e.Message
				if e.RetryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
				}
			}
			apiError(w, status, typ, msg)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		apiError(w, http.StatusRequestEntityTooLarge, "request_too_large", "request body too large")
		return
	}
	var head struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &head)

	hdr := http.Header{}
	for k, vs := range r.Header {
		if !dropHeaders[http.CanonicalHeaderKey(k)] {
			hdr[k] = vs
		}
	}
	start := time.Now()
	provider := g.cfg.Upstream.Name()
	resp, err := g.cfg.Upstream.Do(ctx, UpstreamRequest{Method: r.Method, Path: path, RawQuery: r.URL.RawQuery, Header: hdr, Body: body})
	if err != nil {
		g.requests.WithLabelValues(provider, "error").Inc()
		if ctx.Err() != nil {
			return // the client went away
		}
		g.log.WarnContext(ctx, "gateway upstream", "provider", provider, "err", err)
		apiError(w, http.StatusBadGateway, "api_error", unreachable(g.cfg.Upstream, provider, err))
		return
	}
	defer resp.Body.Close()

	for k, vs := range resp.Header {
		if !dropHeaders[http.CanonicalHeaderKey(k)] {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	meter := newMeter(strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"))
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			meter.Write(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
			if ferr := rc.Flush(); ferr != nil {
				break
			}
		}
		if rerr != nil {
			break
		}
	}
	elapsed := time.Since(start)
	g.requests.WithLabelValues(provider, statusClass(resp.StatusCode)).Inc()
	g.duration.WithLabelValues(provider).Observe(elapsed.Seconds())
	if path != "/v1/messages" || g.cfg.Recorder == nil {
		return
	}
	u, model := meter.result()
	if model == "" {
		model = head.Model
	}
	price, _ := g.cfg.Price(model)
	rec := agent.UsageRecord{
		UserID: pr.UserID, SandboxID: pr.SandboxID, RunID: pr.RunID, Provider: provider, Model: model,
		Usage: u, CostNanoUSD: CostNanoUSD(price, u), Latency: elapsed, Status: resp.StatusCode,
	}
	if err := g.cfg.Recorder.RecordUsage(context.WithoutCancel(ctx), rec); err != nil {
		g.log.ErrorContext(ctx, "record gateway usage", "err", err)
	}
}

func statusClass(code int) string { return strconv.Itoa(code/100) + "xx" }

// apiError writes an error in the Anthropic API's format, which the CLI
// and SDKs understand.
func apiError(w http.ResponseWriter, status int, typ, msg string) {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// meter reads usage from an answer as it streams by: for SSE, the
// message_start usage, overridden field by field by message_delta usage;
// for JSON, the body's usage.
type meter struct {
	tap
	usage agent.Usage
	model string
}

const maxMeteredJSON = 8 << 20

func newMeter(sse bool) *meter { return &meter{tap: tap{sse: sse}} }

func (m *meter) Write(p []byte) { m.tap.write(p, 1<<20, m.sseLine) }

// tap collects what a metered answer carried on the side of the
// passthrough: complete SSE lines, handed to onLine as they end (a line
// longer than maxLine is cut, never buffered without bound), or a plain
// JSON body up to maxMeteredJSON.
type tap struct {
	sse  bool
	line []byte // partial SSE line
	body bytes.Buffer
}

func (t *tap) write(p []byte, maxLine int, onLine func([]byte)) {
	if !t.sse {
		if t.body.Len()+len(p) <= maxMeteredJSON {
			t.body.Write(p)
		}
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(t.line)+len(p) <= maxLine {
				t.line = append(t.line, p...)
			}
			return
		}
		t.line = append(t.line, p[:i]...)
		onLine(t.line)
		t.line = t.line[:0]
		p = p[i+1:]
	}
}

type wireUsage struct {
	InputTokens         *int64 `json:"input_tokens"`
	OutputTokens        *int64 `json:"output_tokens"`
	CacheReadTokens     *int64 `json:"cache_read_input_tokens"`
	CacheCreationTokens *int64 `json:"cache_creation_input_tokens"`
}

func (m *meter) apply(u *wireUsage) {
	if u == nil {
		return
	}
	set := func(dst *int64, v *int64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&m.usage.InputTokens, u.InputTokens)
	set(&m.usage.OutputTokens, u.OutputTokens)
	set(&m.usage.CacheReadTokens, u.CacheReadTokens)
	set(&m.usage.CacheCreationTokens, u.CacheCreationTokens)
}

func (m *meter) sseLine(l []byte) {
	data, ok := bytes.CutPrefix(bytes.TrimRight(l, "\r"), []byte("data:"))
	if !ok || !(bytes.Contains(data, []byte("message_start")) || bytes.Contains(data, []byte("message_delta"))) {
		return
	}
	var ev struct {
		Type    string `json:"type"`
		Message struct {
			Model string     `json:"model"`
			Usage *wireUsage `json:"usage"`
		} `json:"message"`
		Usage *wireUsage `json:"usage"`
	}
	if json.Unmarshal(bytes.TrimSpace(data), &ev) != nil {
		return
	}
	switch ev.Type {
	case "message_start":
		m.model = ev.Message.Model
		m.apply(ev.Message.Usage)
	case "message_delta":
		m.apply(ev.Usage)
	}
}

func (m *meter) result() (agent.Usage, string) {
	if !m.sse {
		var msg struct {
			Model string     `json:"model"`
			Usage *wireUsage `json:"usage"`
		}
		if json.Unmarshal(m.body.Bytes(), &msg) == nil {
			m.model = msg.Model
			m.apply(msg.Usage)
		}
	} else if len(m.line) > 0 {
		m.sseLine(m.line)
	}
	return m.usage, m.model
}

// Endpointer is an upstream that can say where it is (scheme and host of
// its configured base URL, no credentials), for errors.
type Endpointer interface{ Endpoint() string }

// unreachable is the error a client gets when the upstream cannot be
// reached: the upstream the operator configured and the network error,
// so a run's failure names the real cause and not the gateway in front
// of it. It never holds the key (sent in a header, not in the URL).
func unreachable(up any, provider string, err error) string {
	where := provider
	if e, ok := up.(Endpointer); ok && e.Endpoint() != "" {
		where += " at " + e.Endpoint()
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	return fmt.Sprintf("the upstream model API (%s) is unreachable: %v", where, cause)
}

// endpoint is scheme://host of a base URL (no user info, path or query).
func endpoint(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
