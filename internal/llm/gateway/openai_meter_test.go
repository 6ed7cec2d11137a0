package gateway

import (
	"testing"

	"github.com/techbossai/techboss/internal/agent"
)

func TestOpenAIMeter(t *testing.T) {
	cases := []struct {
		name  string
		sse   bool
		parts []string
		want  agent.Usage
		model string
	}{
		{"chat chunks split anywhere", true, []string{
			"data: {\"model\":\"gpt-x\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"model\":\"gpt-x\",\"choi",
			"ces\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":20}}}\n\ndata: [DONE]\n\n",
		}, agent.Usage{InputTokens: 30, OutputTokens: 7, CacheReadTokens: 20}, "gpt-x"},
		{"responses completed", true, []string{
			"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-y\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n",
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-y\",\"usage\":{\"input_tokens\":9,\"output_tokens\":4,\"input_tokens_details\":{\"cached_tokens\":3}}}}",
		}, agent.Usage{InputTokens: 6, OutputTokens: 4, CacheReadTokens: 3}, "gpt-y"},
		{"chat JSON", false, []string{`{"model":"gpt-z","usage":{"prompt_tokens":5,`, `"completion_tokens":2}}`}, agent.Usage{InputTokens: 5, OutputTokens: 2}, "gpt-z"},
		{"responses JSON", false, []string{`{"model":"gpt-z","usage":{"input_tokens":5,"output_tokens":2}}`}, agent.Usage{InputTokens: 5, OutputTokens: 2}, "gpt-z"},
		{"garbage", true, []string{"data: {\"usage\":{\"prompt_tokens\":\"x\"}}\n\n"}, agent.Usage{}, ""},
	}
	for _, tc := range cases {
		m := &openaiMeter{tap: tap{sse: tc.sse}}
		for _, p := range tc.parts {
			m.Write([]byte(p))
		}
		u, model := m.result()
		if u != tc.want || model != tc.model {
			t.Errorf("%s: got %+v %q, want %+v %q", tc.name, u, model, tc.want, tc.model)
		}
	}
}

// FuzzOpenAIMeter feeds arbitrary upstream bytes to the meter: it must not
// panic, and a "usage":null chunk is never decoded as usage.
func FuzzOpenAIMeter(f *testing.F) {
	f.Add([]byte("data: {\"usage\":null}\n\n"), true)
	f.Add([]byte("data: {\"usage\" : {\"prompt_tokens\":1}}\n"), true)
	f.Add([]byte(`{"usage":{"input_tokens":1}}`), false)
	f.Add([]byte("data: \"usage\":"), true)
	f.Fuzz(func(t *testing.T, b []byte, sse bool) {
		m := &openaiMeter{tap: tap{sse: sse}}
		m.Write(b)
		m.result()
		_ = hasUsageObject(b)
	})
}
