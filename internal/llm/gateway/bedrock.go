package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm/bedrock"
)

// bedrockAnthropicVersion is the Messages API version Bedrock expects in
// the body instead of the anthropic-version header.
const bedrockAnthropicVersion = "bedrock-2023-05-31"

// Bedrock is an Upstream that runs Anthropic Messages API requests on
// Amazon Bedrock (InvokeModel, InvokeModelWithResponseStream) and answers
// in the Anthropic wire format, so Claude Code in a sandbox runs on
// Bedrock with no AWS credentials inside: the server signs with its own.
type Bedrock struct {
	client *bedrockruntime.Client
	models map[string]string
}

// NewBedrock returns the upstream. models maps the model names clients
// send (exactly, or by longest prefix, e.g. "claude-sonnet-4-5") to Bedrock
// model IDs or inference profiles ("us.anthropic.claude-sonnet-4-5-...");
// names that already look like Bedrock IDs pass unchanged.
func NewBedrock(client *bedrockruntime.Client, models map[string]string) *Bedrock {
	return &Bedrock{client: client, models: models}
}

// NewBedrockFromConfig builds the Bedrock client from an AWS config (the
// default chain, loaded by the caller); baseURL "" uses the AWS endpoint.
func NewBedrockFromConfig(awsCfg aws.Config, baseURL string, models map[string]string) *Bedrock {
	return NewBedrock(bedrockruntime.NewFromConfig(awsCfg, func(o *bedrockruntime.Options) {
		if baseURL != "" {
			o.BaseEndpoint = aws.String(baseURL)
		}
		o.HTTPClient = bedrock.OwnBody(o.HTTPClient)
	}), models)
}

// Name implements Upstream.
func (b *Bedrock) Name() string { return "bedrock" }

// ModelID maps a client's model name to a Bedrock model ID.
func (b *Bedrock) ModelID(model string) (string, bool) {
	if id, ok := b.models[model]; ok {
		return id, true
	}
	best, n := "", 0
	for k, id := range b.models {
		if strings.HasPrefix(model, k) && len(k) > n {
			best, n = id, len(k)
		}
	}
	if n > 0 {
		return best, true
	}
	if strings.HasPrefix(model, "arn:") || strings.Contains(model, "anthropic.") {
		return model, true
	}
	return "", false
}

// Do implements Upstream.
func (b *Bedrock) Do(ctx context.Context, req UpstreamRequest) (*http.Response, error) {
	if req.Path != "/v1/messages" {
		return anthropicErrorResponse(http.StatusNotFound, "not_found_error", "this endpoint is not available on the Bedrock upstream", 0), nil
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return anthropicErrorResponse(http.StatusBadRequest, "invalid_request_error", "the request body is not a JSON object", 0), nil
	}
	var model string
	var stream bool
	_ = json.Unmarshal(body["model"], &model)
	_ = json.Unmarshal(body["stream"], &stream)
	id, ok := b.ModelID(model)
	if !ok {
		return anthropicErrorResponse(http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("model %q has no Bedrock mapping on this server", model), 0), nil
	}
	delete(body, "model")
	delete(body, "stream")
	body["anthropic_version"] = json.RawMessage(strconv.Quote(bedrockAnthropicVersion))
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode bedrock body: %w", err)
	}
	if !stream {
		out, err := b.client.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{ModelId: aws.String(id), Body: payload,
			ContentType: aws.String("application/json"), Accept: aws.String("application/json")})
		if err != nil {
			return b.errorResponse(ctx, err)
		}
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(bytes.NewReader(out.Body)), ContentLength: int64(len(out.Body))}, nil
	}
	out, err := b.client.InvokeModelWithResponseStream(ctx, &bedrockruntime.InvokeModelWithResponseStreamInput{ModelId: aws.String(id),
		Body: payload, ContentType: aws.String("application/json"), Accept: aws.String("application/json")})
	if err != nil {
		return b.errorResponse(ctx, err)
	}
	h := http.Header{}
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: &bedrockSSE{ctx: ctx, es: out.GetStream()}, ContentLength: -1}, nil
}

// errorResponse answers an SDK error the way the Anthropic API would.
func (b *Bedrock) errorResponse(ctx context.Context, err error) (*http.Response, error) {
	if ctx.Err() != nil {
		return nil, fmt.Errorf("bedrock upstream: %w", err)
	}
	e, ok := errs.Public(bedrock.MapError(ctx, "bedrock", err))
	if !ok {
		return nil, fmt.Errorf("bedrock upstream: %w", err)
	}
	status, typ := statusAndType(e.Kind)
	return anthropicErrorResponse(status, typ, e.Message, e.RetryAfter), nil
}

func statusAndType(k errs.Kind) (int, string) {
	switch k {
	case errs.TooMany:
		return http.StatusTooManyRequests, "rate_limit_error"
	case errs.Unavailable:
		return 529, "overloaded_error"
	case errs.Invalid:
		return http.StatusBadRequest, "invalid_request_error"
	case errs.BadGateway:
		return http.StatusBadGateway, "api_error"
	default:
		return http.StatusInternalServerError, "api_error"
	}
}

func anthropicErrorResponse(status int, typ, msg string, retryAfter int) *http.Response {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b))}
}

// bedrockSSE turns Bedrock's event-stream chunks (each one Messages API
// event as JSON) into the Anthropic SSE byte stream, one event per Read
// refill: no goroutine of its own, the SDK's reader feeds it.
type bedrockSSE struct {
	ctx  context.Context
	es   *bedrockruntime.InvokeModelWithResponseStreamEventStream
	buf  []byte
	done bool
}

func (s *bedrockSSE) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.done {
			return 0, io.EOF
		}
		ev, ok := <-s.es.Events()
		if !ok {
			s.done = true
			if err := s.es.Err(); err != nil && s.ctx.Err() == nil {
				// The stream broke: end it with an error event, as Anthropic does.
				msg, typ := "upstream bedrock sent a malformed or broken stream", "api_error"
				if e, ok := errs.Public(bedrock.MapError(s.ctx, "bedrock", err)); ok {
					msg = e.Message
					_, typ = statusAndType(e.Kind)
				}
				b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}})
				s.buf = append(append([]byte("event: error\ndata: "), b...), "\n\n"...)
			}
			continue
		}
		chunk, ok := ev.(*types.ResponseStreamMemberChunk)
		if !ok {
			continue
		}
		var head struct {
			Type string `json:"type"`
		}
		data := bytes.TrimSpace(chunk.Value.Bytes)
		if json.Unmarshal(data, &head) != nil || head.Type == "" {
			continue
		}
		if bytes.ContainsAny(data, "\r\n") { // one SSE data line per event
			var c bytes.Buffer
			if json.Compact(&c, data) != nil {
				continue
			}
			data = c.Bytes()
		}
		s.buf = make([]byte, 0, len(data)+len(head.Type)+20)
		s.buf = append(s.buf, "event: "...)
		s.buf = append(s.buf, head.Type...)
		s.buf = append(s.buf, "\ndata: "...)
		s.buf = append(s.buf, data...)
		s.buf = append(s.buf, "\n\n"...)
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *bedrockSSE) Close() error { return s.es.Close() }
