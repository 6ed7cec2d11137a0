package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/agent"
	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// LLMDeps wires the unified chat API (POST /v1/chat, GET /v1/models).
type LLMDeps struct {
	Registry *llm.Registry
	// Budgets, if set, admits each call (monthly USD and rate limits).
	Budgets *llm.Budgets
	// Recorder stores one usage record per call (agent.Service implements
	// it); records arrive with ID and Time set.
	Recorder interface {
		RecordUsage(ctx context.Context, rec agent.UsageRecord) error
	}
}

// llmOps documents the unified chat routes.
var llmOps = []apiOp{
	{Method: "POST", Path: "/v1/chat", Summary: "Chat with a configured model: SSE `delta`/`tool_call`/`usage`/`done` (or `error`) events, or one JSON answer with \"stream\": false", Request: chatRequest{}, Response: chatResponse{}, Stream: true},
	{Method: "GET", Path: "/v1/models", Summary: "The providers and models this server offers, with prices (USD per million tokens)", Response: modelsResponse{}},
	{Method: "GET", Path: "/v1/budget", Summary: "Your LLM limits and this month's spend", Response: llm.BudgetStatus{}},
	{Method: "PUT", Path: "/v1/budgets/{user_id}", Summary: "Set a user's own LLM limits (admin; 0 = unlimited)", Request: llm.BudgetConfig{}, Response: llm.BudgetStatus{}},
	{Method: "DELETE", Path: "/v1/budgets/{user_id}", Summary: "Return a user to the default LLM limits (admin)", Response: llm.BudgetStatus{}},
}

type chatRequest struct {
	Provider    string        `json:"provider,omitempty"`
	Model       string        `json:"model"`
	System      string        `json:"system,omitempty"`
	Messages    []llm.Message `json:"messages"`
	Tools       []llm.Tool    `json:"tools,omitempty"`
	Temperature *float64      `json:"temperature,omitempty"`
	MaxTokens   int           `json:"max_tokens,omitempty"`
	// Stream defaults to true.
	Stream *bool `json:"stream,omitempty"`
}

type chatResponse struct {
	Provider   string         `json:"provider"`
	Model      string         `json:"model"`
	Text       string         `json:"text"`
	ToolCalls  []llm.ToolCall `json:"tool_calls,omitempty"`
	Usage      llm.Usage      `json:"usage"`
	CostUSD    float64        `json:"cost_usd"`
	StopReason llm.StopReason `json:"stop_reason"`
}

type modelsResponse struct {
	Providers []llm.ProviderInfo `json:"providers"`
	Models    []llm.ModelInfo    `json:"models"`
}

// SSE payloads.
type (
	chatDelta struct {
		Text string `json:"text"`
	}
	chatUsageEv struct {
		llm.Usage
		CostUSD float64 `json:"cost_usd"`
	}
	chatDoneEv struct {
		StopReason llm.StopReason `json:"stop_reason"`
	}
	chatErrorEv struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		RetryAfter int    `json:"retry_after,omitempty"`
	}
)

func (s *server) mountLLM(r chi.Router) {
	r.Post("/v1/chat", s.api(s.handleChat))
	r.Get("/v1/models", s.api(s.handleModels))
	r.Get("/v1/budget", s.api(s.handleMyBudget))
	r.Put("/v1/budgets/{user_id}", s.api(s.handleSetBudget))
	r.Delete("/v1/budgets/{user_id}", s.api(s.handleSetBudget))
}

func (s *server) budgets() (*llm.Budgets, error) {
	if s.deps.LLM == nil || s.deps.LLM.Budgets == nil {
		return nil, errs.E(errs.Unavailable, "LLM budgets are not configured on this server")
	}
	return s.deps.LLM.Budgets, nil
}

func (s *server) handleMyBudget(w http.ResponseWriter, r *http.Request) error {
	b, err := s.budgets()
	if err != nil {
		return err
	}
	st, err := b.Status(r.Context(), currentUser(r).ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

func (s *server) handleSetBudget(w http.ResponseWriter, r *http.Request) error {
	b, err := s.budgets()
	if err != nil {
		return err
	}
	if !currentUser(r).IsAdmin() {
		return errs.E(errs.Forbidden, "only admins set budgets")
	}
	uid := chi.URLParam(r, "user_id")
	if r.Method == http.MethodDelete {
		if err := s.deps.Store.DeleteUserLimits(r.Context(), uid); err != nil {
			return err
		}
	} else {
		var in llm.BudgetConfig
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
		var fs []errs.FieldError
		if in.MonthlyUSD < 0 {
			fs = append(fs, errs.FieldError{Field: "monthly_usd", Reason: "must not be negative"})
		}
		if in.RequestsPerMinute < 0 {
			fs = append(fs, errs.FieldError{Field: "requests_per_minute", Reason: "must not be negative"})
		}
		if err := errs.Fields(fs); err != nil {
			return err
		}
		if err := s.deps.Store.SetUserLimits(r.Context(), uid, in, s.now()); err != nil {
			return err
		}
	}
	st, err := b.Status(r.Context(), uid)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

func (s *server) llmReady() (*LLMDeps, error) {
	d := s.deps.LLM
	if d == nil || d.Registry == nil || d.Registry.Empty() {
		return nil, errs.E(errs.Unavailable, "no LLM provider is configured on this server")
	}
	return d, nil
}

func (s *server) handleModels(w http.ResponseWriter, r *http.Request) error {
	d := s.deps.LLM
	if d == nil || d.Registry == nil {
		return writeJSON(w, http.StatusOK, modelsResponse{Providers: []llm.ProviderInfo{}, Models: []llm.ModelInfo{}})
	}
	models, provs := d.Registry.Models()
	return writeJSON(w, http.StatusOK, modelsResponse{Providers: provs, Models: models})
}

func (s *server) handleChat(w http.ResponseWriter, r *http.Request) error {
	d, err := s.llmReady()
	if err != nil {
		return err
	}
	var in chatRequest
	if err := decodeJSONLimit(r, &in, max(s.deps.MaxJSONBody, 8<<20)); err != nil {
		return err
	}
	req := &llm.Request{Model: in.Model, System: in.System, Messages: in.Messages, Tools: in.Tools,
		Temperature: in.Temperature, MaxTokens: in.MaxTokens}
	if err := req.Validate(); err != nil {
		return err
	}
	route, err := d.Registry.Resolve(in.Provider, in.Model)
	if err != nil {
		return err
	}
	user := currentUser(r)
	if d.Budgets != nil {
		if err := d.Budgets.Check(r.Context(), user.ID); err != nil {
			return err
		}
	}
	req.Model = route.UpstreamModel
	start := s.now()
	rec := agent.UsageRecord{UserID: user.ID, Provider: route.Provider, Model: route.Model}
	upCtx, cancelUp := context.WithCancel(r.Context())
	defer cancelUp()
	st, err := route.P.Stream(upCtx, req)
	if err != nil {
		s.recordChat(r, d, rec, route, llm.Usage{}, start, err)
		return err
	}
	defer st.Close()

	if in.Stream != nil && !*in.Stream {
		resp, err := llm.Collect(st)
		if err != nil {
			s.recordChat(r, d, rec, route, llm.Usage{}, start, err)
			return err
		}
		cost := s.recordChat(r, d, rec, route, resp.Usage, start, nil)
		return writeJSON(w, http.StatusOK, chatResponse{Provider: route.Provider, Model: route.Model, Text: resp.Text,
			ToolCalls: resp.ToolCalls, Usage: resp.Usage, CostUSD: cost, StopReason: resp.StopReason})
	}

	if _, err := newSSE(w, r); err != nil {
		return err
	}
	// One goroutine pulls from the upstream so this loop can write a burst
	// of events with one flush, and ping while the model thinks. It ends
	// when the stream does or upCtx is cancelled (deferred below: that also
	// aborts the upstream request); the deferred drain waits for it.
	events := make(chan llm.Event, 64)
	go func() {
		defer close(events)
		for st.Next() {
			select {
			case events <- st.Event():
			case <-upCtx.Done():
				return
			}
		}
	}()
	defer func() {
		cancelUp()
		for range events {
		}
	}()

	rc := http.NewResponseController(w)
	tick := time.NewTicker(sseHeartbeat)
	defer tick.Stop()
	var (
		usage    llm.Usage
		recorded bool
		payload  any
		buf      []byte
	)
	write := func(b []byte, flush bool) error {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("sse write: %w", err)
		}
		if flush {
			if err := rc.Flush(); err != nil {
				return fmt.Errorf("sse flush: %w", err)
			}
		}
		return nil
	}
loop:
	for {
		select {
		case <-tick.C:
			if err := write([]byte(": ping\n\n"), true); err != nil {
				return err
			}
			continue
		case ev, ok := <-events:
			if !ok {
				break loop
			}
			switch ev.Type {
			case llm.EventDelta:
				payload = chatDelta{Text: ev.Text}
			case llm.EventToolCall:
				payload = ev.ToolCall
			case llm.EventUsage:
				usage = ev.Usage
				cost := s.recordChat(r, d, rec, route, usage, start, nil)
				recorded = true
				payload = chatUsageEv{Usage: usage, CostUSD: cost}
			case llm.EventDone:
				payload = chatDoneEv{StopReason: ev.StopReason}
			default:
				continue
			}
			b, err := json.Marshal(payload) // one line: JSON escapes newlines
			if err != nil {
				return err
			}
			buf, _ = appendSSEEvent(buf[:0], "", string(ev.Type), b) // our event types have no newline
			// Flush when the upstream has nothing more queued, so a burst
			// costs one write to the client and a lone token goes out at once.
			if err := write(buf, len(events) == 0); err != nil {
				if !recorded {
					s.recordChat(r, d, rec, route, usage, start, r.Context().Err())
				}
				return err
			}
		}
	}
	if err := st.Err(); err != nil {
		if !recorded {
			s.recordChat(r, d, rec, route, usage, start, err)
		}
		if r.Context().Err() != nil {
			return nil // the client went away; the upstream call was cancelled with it
		}
		ev := chatErrorEv{Code: errs.Internal.String(), Message: "internal error"}
		if e, ok := errs.Public(err); ok && e.Kind != errs.Internal {
			ev = chatErrorEv{Code: e.Kind.String(), Message: e.Message, RetryAfter: e.RetryAfter}
		}
		s.logger(r).WarnContext(r.Context(), "chat stream failed", "provider", route.Provider, "model", route.Model, "err", err)
		b, _ := json.Marshal(ev)
		frame, _ := appendSSEEvent(nil, "", "error", b)
		return write(frame, true)
	}
	return rc.Flush()
}

// recordChat stores the usage record of one call and returns its cost in
// USD. Status is the HTTP status the call's outcome maps to (499 when the
// client went away first).
func (s *server) recordChat(r *http.Request, d *LLMDeps, rec agent.UsageRecord, route llm.Route, u llm.Usage, start time.Time, callErr error) float64 {
	cost := route.Price.Cost(u)
	if d.Recorder == nil {
		return cost
	}
	rec.ID = "use_" + strings.ToLower(rand.Text()[:20])
	rec.Time = s.now().UTC()
	rec.Usage = agent.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CacheReadTokens: u.CacheReadTokens, CacheCreationTokens: u.CacheWriteTokens}
	rec.CostNanoUSD = int64(math.Round(cost * 1e9))
	rec.Latency = s.now().Sub(start)
	rec.Status = http.StatusOK
	if callErr != nil {
		rec.Status = http.StatusInternalServerError
		if e, ok := errs.Public(callErr); ok && e.Kind != errs.Internal {
			rec.Status = statusOf(e.Kind)
		} else if r.Context().Err() != nil {
			rec.Status = 499
		}
	}
	if err := d.Recorder.RecordUsage(context.WithoutCancel(r.Context()), rec); err != nil {
		s.logger(r).ErrorContext(r.Context(), "record chat usage", "err", err)
	}
	return cost
}
