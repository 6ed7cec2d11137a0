package llmtest

import (
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
	ev := func(name string, data any) {
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, mustJSON(data))
		f.Flush()
	}
	ev("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": rep.Usage.InputTokens, "output_tokens": 1,
			"cache_read_input_tokens": rep.Usage.CacheReadTokens, "cache_creation_input_tokens": rep.Usage.CacheWriteTokens},
	}})
	idx := 0
	if len(rep.Text) > 0 {
		ev("content_block_start", map[string]any{"type": "content_block_start", "index": idx, "content_block": map[string]any{"type": "text", "text": ""}})
		fmt.Fprint(w, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
		for i, t := range rep.Text {
			ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": idx, "delta": map[string]any{"type": "text_delta", "text": t}})
			if i == 0 {
				switch {
				case rep.Hold:
					s.hold(r.Context())
					return
				case rep.Malformed:
					fmt.Fprint(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_de\n\n")
					f.Flush()
					return
				case rep.MidError:
					ev("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}})
					return
				}
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
}
