package llmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// NewAnthropic starts a server speaking the Anthropic Messages API
// (POST /v1/messages, streaming SSE). It accepts only key in x-api-key.
func NewAnthropic(t testing.TB, key string) *Server {
	return newServer(t, key, serveAnthropic)
}

func anthropicError(w http.ResponseWriter, status int, typ, msg, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("request-id", "req_test")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	w.Write(mustJSON(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}, "request_id": "req_test"}))
}

func serveAnthropic(s *Server, w http.ResponseWriter, r *http.Request, rep Reply, body []byte) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		anthropicError(w, 404, "not_found_error", "no route "+r.URL.Path, "")
		return
	}
	if got := r.Header.Get("x-api-key"); got != s.Key {
		// The real API does not echo keys; this one does, so tests prove
		// the server never passes upstream error text on.
		anthropicError(w, 401, "authentication_error", "invalid x-api-key "+got, "")
		return
	}
	if rep.Status != 0 && rep.Status != 200 {
		typ := map[int]string{400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[rep.Status]
		if typ == "" {
			typ = "api_error"
		}
		anthropicError(w, rep.Status, typ, fmt.Sprintf("scripted %d", rep.Status), rep.RetryAfter)
		return
	}
	model, _ := Captured{Body: body}.JSON()["model"].(string)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("request-id", "req_test")
	w.WriteHeader(200)
	f := w.(http.Flusher)
	events, brk := anthropicScript(rep, model)
	for i, e := range events {
		if i == brk {
			switch {
			case rep.Hold:
				s.hold(r.Context())
				return
			case rep.Malformed:
				fmt.Fprint(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_de\n\n")
				f.Flush()
				return
			case rep.MidError:
				fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}}))
				f.Flush()
				return
			}
		}
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, e.data)
		if e.name == "content_block_start" && i == 1 && len(rep.Text) > 0 {
			fmt.Fprint(w, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
		}
		f.Flush()
	}
}

type namedEvent struct {
	name string
	data []byte
}

// anthropicScript renders a reply as Messages API stream events. brk is
// the index right after the first text delta, where Hold, Malformed and
// MidError replies break off (-1 when there is no text).
func anthropicScript(rep Reply, model string) (events []namedEvent, brk int) {
	brk = -1
	ev := func(name string, data any) { events = append(events, namedEvent{name, mustJSON(data)}) }
	ev("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": rep.Usage.InputTokens, "output_tokens": 1,
			"cache_read_input_tokens": rep.Usage.CacheReadTokens, "cache_creation_input_tokens": rep.Usage.CacheWriteTokens},
	}})
	idx := 0
	if len(rep.Text) > 0 {
		ev("content_block_start", map[string]any{"type": "content_block_start", "index": idx, "content_block": map[string]any{"type": "text", "text": ""}})
		for i, t := range rep.Text {
			ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": idx, "delta": map[string]any{"type": "text_delta", "text": t}})
			if i == 0 {
				brk = len(events)
			}
		}
		ev("content_block_stop", map[string]any{"type": "content_block_stop", "index": idx})
		idx++
	}
	for _, tc := range rep.ToolCalls {
		ev("content_block_start", map[string]any{"type": "content_block_start", "index": idx,
			"content_block": map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Name, "input": map[string]any{}}})
		ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": idx, "delta": map[string]any{"type": "input_json_delta", "partial_json": ""}})
		for _, frag := range fragments(toolInput(tc)) {
			ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": idx, "delta": map[string]any{"type": "input_json_delta", "partial_json": frag}})
		}
		ev("content_block_stop", map[string]any{"type": "content_block_stop", "index": idx})
		idx++
	}
	ev("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": string(stopOf(rep)), "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": rep.Usage.OutputTokens}})
	ev("message_stop", map[string]any{"type": "message_stop"})
	return events, brk
}

// anthropicMessage renders a reply as one Messages API JSON answer.
func anthropicMessage(rep Reply, model string) []byte {
	var content []any
	text := ""
	for _, t := range rep.Text {
		text += t
	}
	if text != "" {
		content = append(content, map[string]any{"type": "text", "text": text})
	}
	for _, tc := range rep.ToolCalls {
		content = append(content, map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Name, "input": json.RawMessage(toolInput(tc))})
	}
	return mustJSON(map[string]any{"id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": content,
		"stop_reason": string(stopOf(rep)), "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": rep.Usage.InputTokens, "output_tokens": rep.Usage.OutputTokens,
			"cache_read_input_tokens": rep.Usage.CacheReadTokens, "cache_creation_input_tokens": rep.Usage.CacheWriteTokens}})
}
