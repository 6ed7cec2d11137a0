// Package bedrock is the llm.Provider for Amazon Bedrock, through
// aws-sdk-go-v2's bedrockruntime ConverseStream (one API for every model
// family on Bedrock). Region and credentials come from the AWS default
// chain unless the provider config names a region.
package bedrock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/document"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/smithy-go"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/llm"
)

// Provider calls Bedrock ConverseStream.
type Provider struct {
	name   string
	client *bedrockruntime.Client
}

var _ llm.Provider = (*Provider)(nil)

// New returns a Provider using awsCfg (credentials, region, HTTP client);
// cfg.Region and cfg.BaseURL override the region and endpoint.
func New(cfg llm.ProviderConfig, awsCfg aws.Config) *Provider {
	client := bedrockruntime.NewFromConfig(awsCfg, func(o *bedrockruntime.Options) {
		if cfg.Region != "" {
			o.Region = cfg.Region
		}
		if cfg.BaseURL != "" {
			o.BaseEndpoint = aws.String(cfg.BaseURL)
		}
		o.RetryMaxAttempts = cfg.Retries() + 1
		o.HTTPClient = OwnBody(o.HTTPClient)
	})
	return &Provider{name: cfg.Name, client: client}
}

// HTTPClient is what the SDK sends requests with.
type HTTPClient interface {
	Do(*http.Request) (*http.Response, error)
}

// OwnBody wraps c (nil: a default client) so the transport reads each
// request body from a private copy. smithy-go closes the request body as
// soon as the response headers arrive; when that happens before the
// transport has read the body's EOF (a fast answer, as on loopback), the
// transport sees a read error and closes the connection under the
// streaming answer ("use of closed network connection"). Request bodies
// here are small JSON documents, so the copy is cheap.
func OwnBody(c HTTPClient) HTTPClient {
	if c == nil {
		c = awshttp.NewBuildableClient()
	}
	return ownBody{c}
}

type ownBody struct{ c HTTPClient }

func (o ownBody) Do(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return o.c.Do(r)
	}
	b, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(b))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r2.ContentLength = int64(len(b))
	return o.c.Do(r2)
}

// Factory loads the AWS default configuration (environment, shared
// files, SSO, instance roles) for each bedrock provider.
func Factory() llm.Factory {
	return func(ctx context.Context, cfg llm.ProviderConfig) (llm.Provider, error) {
		var opts []func(*config.LoadOptions) error
		if cfg.Region != "" {
			opts = append(opts, config.WithRegion(cfg.Region))
		}
		awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("load AWS configuration: %w", err)
		}
		if awsCfg.Region == "" {
			return nil, fmt.Errorf("no AWS region: set region in the provider config or AWS_REGION")
		}
		return New(cfg, awsCfg), nil
	}
}

// Input converts a request to ConverseStream input.
func Input(req *llm.Request) *bedrockruntime.ConverseStreamInput {
	in := &bedrockruntime.ConverseStreamInput{
		ModelId:         aws.String(req.Model),
		InferenceConfig: &types.InferenceConfiguration{MaxTokens: aws.Int32(int32(req.MaxTokensOrDefault()))},
	}
	if req.Temperature != nil {
		in.InferenceConfig.Temperature = aws.Float32(float32(*req.Temperature))
	}
	if req.System != "" {
		in.System = []types.SystemContentBlock{&types.SystemContentBlockMemberText{Value: req.System}}
	}
	for _, m := range req.Messages {
		var blocks []types.ContentBlock
		for _, tr := range m.ToolResults {
			rb := types.ToolResultBlock{ToolUseId: aws.String(tr.ToolCallID),
				Content: []types.ToolResultContentBlock{&types.ToolResultContentBlockMemberText{Value: tr.Content}}}
			if tr.IsError {
				rb.Status = types.ToolResultStatusError
			}
			blocks = append(blocks, &types.ContentBlockMemberToolResult{Value: rb})
		}
		if m.Content != "" {
			blocks = append(blocks, &types.ContentBlockMemberText{Value: m.Content})
		}
		for _, tc := range m.ToolCalls {
			var input map[string]any
			_ = json.Unmarshal(tc.InputObject(), &input) // validated by Request.Validate
			blocks = append(blocks, &types.ContentBlockMemberToolUse{Value: types.ToolUseBlock{
				ToolUseId: aws.String(tc.ID), Name: aws.String(tc.Name), Input: document.NewLazyDocument(input)}})
		}
		role := types.ConversationRoleUser
		if m.Role == llm.RoleAssistant {
			role = types.ConversationRoleAssistant
		}
		in.Messages = append(in.Messages, types.Message{Role: role, Content: blocks})
	}
	if len(req.Tools) > 0 {
		tc := &types.ToolConfiguration{}
		for _, t := range req.Tools {
			spec := types.ToolSpecification{Name: aws.String(t.Name),
				InputSchema: &types.ToolInputSchemaMemberJson{Value: document.NewLazyDocument(t.SchemaObject())}}
			if t.Description != "" {
				spec.Description = aws.String(t.Description)
			}
			tc.Tools = append(tc.Tools, &types.ToolMemberToolSpec{Value: spec})
		}
		in.ToolConfig = tc
	}
	return in
}

// Stream starts a ConverseStream call.
func (p *Provider) Stream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	out, err := p.client.ConverseStream(ctx, Input(req))
	if err != nil {
		return nil, MapError(ctx, p.name, err)
	}
	return &stream{ctx: ctx, name: p.name, es: out.GetStream(), tools: map[int32]*toolAcc{}}, nil
}

type toolAcc struct {
	id, name string
	input    strings.Builder
}

type stream struct {
	ctx     context.Context
	name    string
	es      *bedrockruntime.ConverseStreamEventStream
	tools   map[int32]*toolAcc
	stop    llm.StopReason
	stopped bool
	llm.Queue
	done bool
	err  error
}

func (st *stream) Next() bool {
	for {
		if st.Pop() {
			return true
		}
		if st.done || st.err != nil {
			return false
		}
		ev, ok := <-st.es.Events()
		if !ok {
			if err := st.es.Err(); err != nil {
				st.err = MapError(st.ctx, st.name, err)
			} else if st.ctx.Err() != nil {
				st.err = MapError(st.ctx, st.name, st.ctx.Err())
			} else {
				st.err = errs.E(errs.BadGateway, "upstream %s ended the stream before its metadata event", st.name)
			}
			return false
		}
		st.handle(ev)
	}
}

func (st *stream) handle(ev types.ConverseStreamOutput) {
	switch e := ev.(type) {
	case *types.ConverseStreamOutputMemberContentBlockStart:
		if tu, ok := e.Value.Start.(*types.ContentBlockStartMemberToolUse); ok {
			st.tools[aws.ToInt32(e.Value.ContentBlockIndex)] = &toolAcc{id: aws.ToString(tu.Value.ToolUseId), name: aws.ToString(tu.Value.Name)}
		}
	case *types.ConverseStreamOutputMemberContentBlockDelta:
		switch d := e.Value.Delta.(type) {
		case *types.ContentBlockDeltaMemberText:
			if d.Value != "" {
				st.Push(llm.Event{Type: llm.EventDelta, Text: d.Value})
			}
		case *types.ContentBlockDeltaMemberToolUse:
			if t := st.tools[aws.ToInt32(e.Value.ContentBlockIndex)]; t != nil {
				t.input.WriteString(aws.ToString(d.Value.Input))
			}
		}
	case *types.ConverseStreamOutputMemberContentBlockStop:
		idx := aws.ToInt32(e.Value.ContentBlockIndex)
		if t := st.tools[idx]; t != nil {
			delete(st.tools, idx)
			in := json.RawMessage(t.input.String())
			if len(in) == 0 {
				in = json.RawMessage("{}")
			} else if !json.Valid(in) {
				st.err = errs.E(errs.BadGateway, "upstream %s sent invalid JSON input for tool %s", st.name, t.name)
				return
			}
			st.Push(llm.Event{Type: llm.EventToolCall, ToolCall: &llm.ToolCall{ID: t.id, Name: t.name, Input: in}})
		}
	case *types.ConverseStreamOutputMemberMessageStop:
		st.stopped = true
		switch e.Value.StopReason {
		case types.StopReasonEndTurn:
			st.stop = llm.StopEnd
		case types.StopReasonToolUse:
			st.stop = llm.StopToolUse
		case types.StopReasonMaxTokens, types.StopReasonModelContextWindowExceeded:
			st.stop = llm.StopMaxTokens
		case types.StopReasonStopSequence:
			st.stop = llm.StopSequence
		case types.StopReasonGuardrailIntervened, types.StopReasonContentFiltered:
			st.stop = llm.StopRefusal
		default:
			st.stop = llm.StopOther
		}
	case *types.ConverseStreamOutputMemberMetadata:
		// Metadata is the last event: it carries the usage.
		var u llm.Usage
		if mu := e.Value.Usage; mu != nil {
			u = llm.Usage{InputTokens: int64(aws.ToInt32(mu.InputTokens)), OutputTokens: int64(aws.ToInt32(mu.OutputTokens)),
				CacheReadTokens: int64(aws.ToInt32(mu.CacheReadInputTokens)), CacheWriteTokens: int64(aws.ToInt32(mu.CacheWriteInputTokens))}
		}
		if !st.stopped {
			st.err = errs.E(errs.BadGateway, "upstream %s sent metadata before messageStop", st.name)
			return
		}
		st.Push(llm.Event{Type: llm.EventUsage, Usage: u}, llm.Event{Type: llm.EventDone, StopReason: st.stop})
		st.done = true
	}
}

func (st *stream) Err() error   { return st.err }
func (st *stream) Close() error { return st.es.Close() }

// MapError turns an SDK error into a public error (errs kinds). Bedrock answers a bad
// signature or unknown key with 403; in-stream exceptions have no status.
func MapError(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return err
	}
	// Only the error code and request ID are kept as the cause.
	var (
		re     *awshttp.ResponseError
		ae     smithy.APIError
		detail string
	)
	if errors.As(err, &ae) {
		detail = ae.ErrorCode()
	}
	if errors.As(err, &re) {
		detail += " (request " + re.ServiceRequestID() + ")"
	}
	if re != nil && re.HTTPStatusCode() >= 300 {
		ra := ""
		if re.Response != nil {
			ra = re.Response.Header.Get("Retry-After")
		}
		return llm.UpstreamStatus(name, re.HTTPStatusCode(), ra, detail)
	}
	if ae != nil {
		switch ae.ErrorCode() {
		case "ThrottlingException", "throttlingException":
			return llm.UpstreamStatus(name, 429, "", detail)
		case "ServiceUnavailableException", "serviceUnavailableException", "ModelNotReadyException":
			return llm.UpstreamStatus(name, 503, "", detail)
		case "ModelTimeoutException", "modelTimeoutException":
			return llm.UpstreamStatus(name, 504, "", detail)
		case "ValidationException", "validationException":
			return llm.UpstreamStatus(name, 400, "", detail)
		case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException":
			return llm.UpstreamStatus(name, 403, "", detail)
		}
		return errs.Wrap(errs.BadGateway, errors.New(detail), fmt.Sprintf("upstream %s reported %s", name, ae.ErrorCode()))
	}
	return llm.TransportError(ctx, name, err)
}
