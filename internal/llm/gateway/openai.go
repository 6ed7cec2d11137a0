package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// OpenAIPrefix is where the OpenAI passthrough is mounted; OpenAI-protocol
// agents (the Codex CLI, the SDKs) use base URL <server>/llm/openai/v1.
const OpenAIPrefix = "/llm/openai"

// DefaultOpenAIURL is OpenAI's API root.
const DefaultOpenAIURL = "https://api.openai.com/v1"

// OpenAI passes /v1/chat/completions, /v1/responses and GET /v1/models
// through to an OpenAI-protocol upstream with the server's key. Answers
// reach the client byte for byte; usage is read from them on the side. It
// shares authentication, admission, pricing, recording and metrics with
// the Anthropic Gateway it is built from.
type OpenAI struct {
	g       *Gateway
	name    string
	baseURL string
	key     llm.Secret
	client  *http.Client
	maxBody int64
}

// NewOpenAI returns the OpenAI passthrough. baseURL "" is
// DefaultOpenAIURL; client nil uses the same streaming-friendly transport
// as NewAnthropic. name is the provider recorded with usage ("openai").
func NewOpenAI(g *Gateway, name, baseURL string, key llm.Secret, client *http.Client) *OpenAI {
	if baseURL == "" {
		baseURL = DefaultOpenAIURL
	}
	if name == "" {
		name = "openai"
	}
	if client == nil {
		client = NewAnthropic("", "", nil).client
	}
	return &OpenAI{g: g, name: name, baseURL: strings.TrimRight(baseURL, "/"), key: key, client: client, maxBody: g.cfg.MaxBodyBytes}
}

// ServeHTTP serves OpenAIPrefix + the passthrough paths.
func (o *OpenAI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, OpenAIPrefix)
	switch {
	case p == "/v1/chat/completions" || p == "/v1/responses":
		if r.Method != http.MethodPost {
			openaiError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method not allowed")
			return
		}
	case p == "/v1/models":
		if r.Method != http.MethodGet {
			openaiError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method not allowed")
			return
		}
	default:
		openaiError(w, http.StatusNotFound, "invalid_request_error", "no such endpoint on the gateway")
		return
	}
	o.proxy(w, r, p)
}

// openaiError writes an error in the OpenAI API's format.
func openaiError(w http.ResponseWriter, status int, typ, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (o *OpenAI) proxy(w http.ResponseWriter, r *http.Request, path string) {
	ctx := r.Context()
	pr, err := o.g.authenticate(ctx, credential(r))
	if err != nil {
		if errs.KindOf(err) == errs.Unauthenticated {
			openaiError(w, http.StatusUnauthorized, "invalid_request_error", "invalid API key")
			return
		}
		if unavailable(w, err) {
			openaiError(w, http.StatusServiceUnavailable, "server_error", "the server's database is unreachable; retry shortly")
			return
		}
		o.g.log.ErrorContext(ctx, "gateway authenticate", "err", err)
		openaiError(w, http.StatusInternalServerError, "server_error", "internal error")
		return
	}
	metered := r.Method == http.MethodPost
	if metered && o.g.cfg.Admit != nil {
		if err := o.g.admit(ctx, pr); err != nil {
			status, typ := http.StatusTooManyRequests, "rate_limit_exceeded"
			switch errs.KindOf(err) {
			case errs.PaymentRequired:
				status, typ = http.StatusPaymentRequired, "insufficient_quota"
			case errs.Unavailable:
				status, typ = http.StatusServiceUnavailable, "server_error"
			}
			msg := "request refused"
			if e, ok := errs.Public(err); ok {
				msg = e.Message
				if e.RetryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
				}
			}
			openaiError(w, status, typ, msg)
			return
		}
	}
	var body []byte
	if metered {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, o.maxBody))
		if err != nil {
			openaiError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request body too large")
			return
		}
	}
	var head struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	_ = json.Unmarshal(body, &head)
	if path == "/v1/chat/completions" && head.Stream {
		body = withIncludeUsage(body)
	}

	u := o.baseURL + strings.TrimPrefix(path, "/v1")
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	hr, err := http.NewRequestWithContext(ctx, r.Method, u, bytes.NewReader(body))
	if err != nil {
		openaiError(w, http.StatusBadRequest, "invalid_request_error", "bad request")
		return
	}
	for k, vs := range r.Header {
		ck := http.CanonicalHeaderKey(k)
		if !dropHeaders[ck] && ck != "Openai-Organization" && ck != "Openai-Project" {
			hr.Header[k] = vs
		}
	}
	if o.key != "" {
		hr.Header.Set("Authorization", "Bearer "+o.key.Reveal())
	}
	hr.Header.Set("Accept-Encoding", "identity")
	start := time.Now()
	resp, err := o.client.Do(hr)
	if err != nil {
		o.g.requests.WithLabelValues(o.name, "error").Inc()
		if ctx.Err() != nil {
			return // the client went away
		}
		o.g.log.WarnContext(ctx, "gateway upstream", "provider", o.name, "err", err)
		openaiError(w, http.StatusBadGateway, "server_error", unreachable(nil, o.name+" at "+endpoint(o.baseURL), err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// OpenAI quotes (part of) the key it rejected: never pass that on.
		o.g.requests.WithLabelValues(o.name, statusClass(resp.StatusCode)).Inc()
		o.g.log.WarnContext(ctx, "gateway upstream rejected the configured key", "provider", o.name, "status", resp.StatusCode)
		openaiError(w, http.StatusBadGateway, "upstream_auth_error", "upstream "+o.name+" rejected the configured key")
		if metered {
			o.record(ctx, pr, head.Model, agent.Usage{}, time.Since(start), resp.StatusCode)
		}
		return
	}
	for k, vs := range resp.Header {
		if !dropHeaders[http.CanonicalHeaderKey(k)] {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	m := &openaiMeter{tap: tap{sse: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}}
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if metered {
				m.Write(buf[:n])
			}
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
	o.g.requests.WithLabelValues(o.name, statusClass(resp.StatusCode)).Inc()
	o.g.duration.WithLabelValues(o.name).Observe(elapsed.Seconds())
	if !metered {
		return
	}
	usage, model := m.result()
	if model == "" {
		model = head.Model
	}
	o.record(ctx, pr, model, usage, elapsed, resp.StatusCode)
}

func (o *OpenAI) record(ctx context.Context, pr agent.Principal, model string, usage agent.Usage, elapsed time.Duration, status int) {
	if o.g.cfg.Recorder == nil {
		return
	}
	price, _ := o.g.cfg.Price(model)
	rec := agent.UsageRecord{
		UserID: pr.UserID, SandboxID: pr.SandboxID, RunID: pr.RunID, Provider: o.name, Model: model,
		Usage: usage, CostNanoUSD: CostNanoUSD(price, usage), Latency: elapsed, Status: status,
	}
	if err := o.g.cfg.Recorder.RecordUsage(context.WithoutCancel(ctx), rec); err != nil {
		o.g.log.ErrorContext(ctx, "record gateway usage", "err", err)
	}
}

// withIncludeUsage sets stream_options.include_usage on a streamed Chat
// Completions request unless the client chose otherwise, so the final
// chunk carries the usage the gateway meters. Any other field is kept.
func withIncludeUsage(body []byte) []byte {
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil {
		return body
	}
	var so map[string]json.RawMessage
	if raw, ok := req["stream_options"]; ok {
		if json.Unmarshal(raw, &so) != nil || so == nil {
			return body
		}
		if _, set := so["include_usage"]; set {
			return body
		}
	} else {
		so = map[string]json.RawMessage{}
	}
	so["include_usage"] = json.RawMessage("true")
	b, err := json.Marshal(so)
	if err != nil {
		return body
	}
	req["stream_options"] = b
	out, err := json.Marshal(req)
	if err != nil {
		return body
	}
	return out
}

// openaiMeter reads usage from Chat Completions chunks (the usage chunk),
// Responses events (response.completed / response.incomplete), or a JSON
// answer of either API.
type openaiMeter struct {
	tap
	usage agent.Usage
	model string
}

func (m *openaiMeter) Write(p []byte) { m.tap.write(p, 4<<20, m.sseLine) }

type openaiUsage struct {
	PromptTokens        *int64 `json:"prompt_tokens"`
	CompletionTokens    *int64 `json:"completion_tokens"`
	InputTokens         *int64 `json:"input_tokens"`
	OutputTokens        *int64 `json:"output_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
}

type openaiDoc struct {
	Type     string       `json:"type"`
	Model    string       `json:"model"`
	Usage    *openaiUsage `json:"usage"`
	Response *struct {
		Model string       `json:"model"`
		Usage *openaiUsage `json:"usage"`
	} `json:"response"`
}

func (m *openaiMeter) apply(d openaiDoc) {
	u, model := d.Usage, d.Model
	if d.Response != nil {
		u, model = d.Response.Usage, d.Response.Model
	}
	if model != "" {
		m.model = model
	}
	if u == nil {
		return
	}
	switch {
	case u.PromptTokens != nil: // Chat Completions
		cached := u.PromptTokensDetails.CachedTokens
		m.usage = agent.Usage{InputTokens: *u.PromptTokens - cached, CacheReadTokens: cached}
		if u.CompletionTokens != nil {
			m.usage.OutputTokens = *u.CompletionTokens
		}
	case u.InputTokens != nil: // Responses
		cached := u.InputTokensDetails.CachedTokens
		m.usage = agent.Usage{InputTokens: *u.InputTokens - cached, CacheReadTokens: cached}
		if u.OutputTokens != nil {
			m.usage.OutputTokens = *u.OutputTokens
		}
	}
}

func (m *openaiMeter) sseLine(l []byte) {
	data, ok := bytes.CutPrefix(bytes.TrimRight(l, "\r"), []byte("data:"))
	if !ok || !hasUsageObject(data) {
		return
	}
	var d openaiDoc
	if json.Unmarshal(bytes.TrimSpace(data), &d) != nil {
		return
	}
	if d.Response != nil && d.Type != "response.completed" && d.Type != "response.incomplete" && d.Type != "response.failed" {
		return // earlier snapshots of the response carry no final usage
	}
	m.apply(d)
}

// hasUsageObject reports whether an event carries a "usage" object, so
// the many chunks with "usage":null (include_usage) skip JSON decoding.
func hasUsageObject(data []byte) bool {
	for {
		i := bytes.Index(data, []byte(`"usage"`))
		if i < 0 {
			return false
		}
		rest := bytes.TrimLeft(data[i+len(`"usage"`):], " \t")
		if rest, ok := bytes.CutPrefix(rest, []byte(":")); ok && len(bytes.TrimLeft(rest, " \t")) > 0 && bytes.TrimLeft(rest, " \t")[0] == '{' {
			return true
		}
		data = data[i+len(`"usage"`):]
	}
}

func (m *openaiMeter) result() (agent.Usage, string) {
	if !m.sse {
		var d openaiDoc
		if json.Unmarshal(m.body.Bytes(), &d) == nil {
			m.apply(d)
		}
	} else if len(m.line) > 0 {
		m.sseLine(m.line)
	}
	return m.usage, m.model
}
