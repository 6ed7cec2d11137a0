package llmtest

import (
	"fmt"
	"net/http"
	"testing"
)

// NewOpenAI starts a server speaking the OpenAI API: POST
// /v1/chat/completions (streamed chunks; the usage chunk only when the
// request sets stream_options.include_usage, as upstream does) and POST
// /v1/responses (typed SSE events). It accepts only "Bearer key". Point an
// SDK at URL+"/v1/".
func NewOpenAI(t testing.TB, key string) *Server {
	return newServer(t, key, serveOpenAI)
}

func openaiError(w http.ResponseWriter, status int, typ, code, msg, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-request-id", "req_test")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	w.Write(mustJSON(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}}))
}

func serveOpenAI(s *Server, w http.ResponseWriter, r *http.Request, rep Reply, body []byte) {
	if got := bearer(r); got != s.Key {
		openaiError(w, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: "+got+".", "")
		return
	}
	if rep.Status != 0 && rep.Status != 200 {
		typ := map[int]string{400: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}[rep.Status]
		openaiError(w, rep.Status, typ, typ, fmt.Sprintf("scripted %d", rep.Status), rep.RetryAfter)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		serveChat(s, w, r, rep, body)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/responses":
		serveResponses(s, w, r, rep, body)
	default:
		openaiError(w, 404, "invalid_request_error", "unknown_url", "Unknown request URL: "+r.URL.Path, "")
	}
}

func sseStart(w http.ResponseWriter) http.Flusher {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("x-request-id", "req_test")
	w.WriteHeader(200)
	return w.(http.Flusher)
}

func serveChat(s *Server, w http.ResponseWriter, r *http.Request, rep Reply, body []byte) {
	req := Captured{Body: body}.JSON()
	model, _ := req["model"].(string)
	so, _ := req["stream_options"].(map[string]any)
	includeUsage := so["include_usage"] == true
	f := sseStart(w)
	chunk := func(choices []any, usage any) {
		c := map[string]any{"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1764300000, "model": model,
			"system_fingerprint": "fp_test", "choices": choices}
		if includeUsage {
			c["usage"] = usage
		}
		fmt.Fprintf(w, "data: %s\n\n", mustJSON(c))
		f.Flush()
	}
	delta := func(d map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": d, "logprobs": nil, "finish_reason": finish}}
	}
	chunk(delta(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil), nil)
	for i, t := range rep.Text {
		chunk(delta(map[string]any{"content": t}, nil), nil)
		if i == 0 {
			switch {
			case rep.Hold:
				s.hold(r.Context())
				return
			case rep.Malformed:
				fmt.Fprint(w, "data: {\"id\":\"chatcmpl-test\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\n\n")
				f.Flush()
				return
			case rep.MidError:
				fmt.Fprint(w, "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n")
				f.Flush()
				return
			}
		}
	}
	for i, tc := range rep.ToolCalls {
		chunk(delta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": tc.ID, "type": "function",
			"function": map[string]any{"name": tc.Name, "arguments": ""}}}}, nil), nil)
		for _, frag := range fragments(toolInput(tc)) {
			chunk(delta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "function": map[string]any{"arguments": frag}}}}, nil), nil)
		}
	}
	finish := "stop"
	switch stopOf(rep) {
	case "tool_use":
		finish = "tool_calls"
	case "max_tokens":
		finish = "length"
	}
	chunk(delta(map[string]any{}, finish), nil)
	if includeUsage {
		u := rep.Usage
		chunk([]any{}, map[string]any{"prompt_tokens": u.InputTokens + u.CacheReadTokens, "completion_tokens": u.OutputTokens,
			"total_tokens":              u.InputTokens + u.CacheReadTokens + u.OutputTokens,
			"prompt_tokens_details":     map[string]any{"cached_tokens": u.CacheReadTokens, "audio_tokens": 0},
			"completion_tokens_details": map[string]any{"reasoning_tokens": 0, "audio_tokens": 0}})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	f.Flush()
}

func serveResponses(s *Server, w http.ResponseWriter, r *http.Request, rep Reply, body []byte) {
	model, _ := Captured{Body: body}.JSON()["model"].(string)
	f := sseStart(w)
	seq := 0
	ev := func(typ string, data map[string]any) {
		data["type"] = typ
		data["sequence_number"] = seq
		seq++
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ, mustJSON(data))
		f.Flush()
	}
	resp := func(status string, output []any, usage any) map[string]any {
		return map[string]any{"id": "resp_test", "object": "response", "created_at": 1764300000, "status": status,
			"error": nil, "incomplete_details": nil, "instructions": nil, "model": model, "output": output,
			"parallel_tool_calls": true, "tool_choice": "auto", "tools": []any{}, "usage": usage}
	}
	ev("response.created", map[string]any{"response": resp("in_progress", []any{}, nil)})
	ev("response.in_progress", map[string]any{"response": resp("in_progress", []any{}, nil)})
	var output []any
	idx := 0
	if len(rep.Text) > 0 {
		ev("response.output_item.added", map[string]any{"output_index": idx, "item": map[string]any{"id": "msg_test", "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}})
		ev("response.content_part.added", map[string]any{"item_id": "msg_test", "output_index": idx, "content_index": 0, "part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
		full := ""
		for i, t := range rep.Text {
			full += t
			ev("response.output_text.delta", map[string]any{"item_id": "msg_test", "output_index": idx, "content_index": 0, "delta": t, "logprobs": []any{}})
			if i == 0 {
				switch {
				case rep.Hold:
					s.hold(r.Context())
					return
				case rep.Malformed:
					fmt.Fprint(w, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"x\n\n")
					f.Flush()
					return
				case rep.MidError:
					ev("error", map[string]any{"code": "server_error", "message": "The server had an error", "param": nil})
					return
				}
			}
		}
		part := map[string]any{"type": "output_text", "text": full, "annotations": []any{}}
		ev("response.output_text.done", map[string]any{"item_id": "msg_test", "output_index": idx, "content_index": 0, "text": full, "logprobs": []any{}})
		ev("response.content_part.done", map[string]any{"item_id": "msg_test", "output_index": idx, "content_index": 0, "part": part})
		item := map[string]any{"id": "msg_test", "type": "message", "status": "completed", "role": "assistant", "content": []any{part}}
		ev("response.output_item.done", map[string]any{"output_index": idx, "item": item})
		output = append(output, item)
		idx++
	}
	for _, tc := range rep.ToolCalls {
		id := "fc_" + tc.ID
		ev("response.output_item.added", map[string]any{"output_index": idx, "item": map[string]any{"id": id, "type": "function_call", "status": "in_progress", "call_id": tc.ID, "name": tc.Name, "arguments": ""}})
		args := string(toolInput(tc))
		for _, frag := range fragments([]byte(args)) {
			ev("response.function_call_arguments.delta", map[string]any{"item_id": id, "output_index": idx, "delta": frag})
		}
		ev("response.function_call_arguments.done", map[string]any{"item_id": id, "output_index": idx, "arguments": args})
		item := map[string]any{"id": id, "type": "function_call", "status": "completed", "call_id": tc.ID, "name": tc.Name, "arguments": args}
		ev("response.output_item.done", map[string]any{"output_index": idx, "item": item})
		output = append(output, item)
		idx++
	}
	u := rep.Usage
	usage := map[string]any{"input_tokens": u.InputTokens + u.CacheReadTokens, "input_tokens_details": map[string]any{"cached_tokens": u.CacheReadTokens},
		"output_tokens": u.OutputTokens, "output_tokens_details": map[string]any{"reasoning_tokens": 0},
		"total_tokens": u.InputTokens + u.CacheReadTokens + u.OutputTokens}
	if stopOf(rep) == "max_tokens" {
		r := resp("incomplete", output, usage)
		r["incomplete_details"] = map[string]any{"reason": "max_output_tokens"}
		ev("response.incomplete", map[string]any{"response": r})
		return
	}
	ev("response.completed", map[string]any{"response": resp("completed", output, usage)})
}
