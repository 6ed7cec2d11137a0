package llmtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Bedrock test credentials; the server accepts only requests signed with them.
const (
	BedrockAccessKey = "AKIDTESTBEDROCK0001"
	BedrockSecretKey = "bedrock-test-secret-key/0123456789abcdef"
	BedrockRegion    = "us-east-1"
)

// NewBedrock starts a server speaking Bedrock Runtime's ConverseStream
// (POST /model/{modelId}/converse-stream, answered in the AWS event-stream
// binary framing) and, for Anthropic models, InvokeModel (/invoke) and
// InvokeModelWithResponseStream (/invoke-with-response-stream: chunks
// carrying Messages API events). Every request's SigV4 signature is recomputed from the
// test credentials and compared; a mismatch is answered as Bedrock does
// (403 InvalidSignatureException), an unknown key with 403
// UnrecognizedClientException.
func NewBedrock(t testing.TB) *Server {
	return newServer(t, BedrockAccessKey, serveBedrock)
}

func bedrockError(w http.ResponseWriter, status int, typ, msg, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.Header().Set("X-Amzn-RequestId", "req-test")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	w.Write(mustJSON(map[string]any{"message": msg}))
}

// VerifySigV4 checks r's Authorization header against a signature
// recomputed with the given credentials over the headers r claims to
// have signed. It returns "" when valid, else the Bedrock error type.
func VerifySigV4(r *http.Request, body []byte, accessKey, secretKey, region, service string) (string, string) {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		return "MissingAuthenticationTokenException", "missing authentication token"
	}
	parts := map[string]string{}
	for _, p := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		parts[k] = v
	}
	cred := strings.Split(parts["Credential"], "/")
	if len(cred) != 5 || cred[0] != accessKey {
		return "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	if cred[2] != region || cred[3] != service || cred[4] != "aws4_request" {
		return "InvalidSignatureException", "credential scope " + strings.Join(cred[1:], "/") + " is wrong"
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "InvalidSignatureException", "bad X-Amz-Date"
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != hash {
		return "InvalidSignatureException", "payload hash mismatch"
	}
	u := *r.URL
	u.Scheme, u.Host = "http", r.Host
	re := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: http.Header{}, ContentLength: r.ContentLength}
	for _, h := range strings.Split(parts["SignedHeaders"], ";") {
		if h == "host" || h == "content-length" {
			continue
		}
		for _, v := range r.Header.Values(h) {
			re.Header.Add(h, v)
		}
	}
	creds := aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, re, hash, service, region, when); err != nil {
		return "InvalidSignatureException", err.Error()
	}
	want := re.Header.Get("Authorization")
	if want != auth {
		return "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."
	}
	return "", ""
}

func serveBedrock(s *Server, w http.ResponseWriter, r *http.Request, rep Reply, body []byte) {
	if typ, msg := VerifySigV4(r, body, BedrockAccessKey, BedrockSecretKey, BedrockRegion, "bedrock"); typ != "" {
		bedrockError(w, 403, typ, msg, "")
		return
	}
	path := r.URL.EscapedPath()
	op := path[strings.LastIndexByte(path, '/')+1:]
	if r.Method != http.MethodPost || !strings.HasPrefix(path, "/model/") || (op != "converse-stream" && op != "invoke" && op != "invoke-with-response-stream") {
		bedrockError(w, 404, "UnknownOperationException", "no operation "+path, "")
		return
	}
	model, err := url.PathUnescape(strings.TrimSuffix(strings.TrimPrefix(path, "/model/"), "/"+op))
	if err != nil {
		bedrockError(w, 400, "ValidationException", "bad model id", "")
		return
	}
	switch rep.Status {
	case 0, 200:
	case 429:
		bedrockError(w, 429, "ThrottlingException", "Too many requests, please wait before trying again.", rep.RetryAfter)
		return
	case 400:
		bedrockError(w, 400, "ValidationException", "scripted validation error", "")
		return
	default:
		bedrockError(w, rep.Status, "InternalServerException", fmt.Sprintf("scripted %d", rep.Status), rep.RetryAfter)
		return
	}
	if op != "converse-stream" {
		model = anthropicName(model)
	}
	if op == "invoke" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-RequestId", "req-test")
		w.WriteHeader(200)
		w.Write(anthropicMessage(rep, model))
		return
	}
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.Header().Set("X-Amzn-RequestId", "req-test")
	w.WriteHeader(200)
	f := w.(http.Flusher)
	enc := eventstream.NewEncoder()
	exception := func() {
		var hs eventstream.Headers
		hs.Set(":message-type", eventstream.StringValue("exception"))
		hs.Set(":exception-type", eventstream.StringValue("throttlingException"))
		hs.Set(":content-type", eventstream.StringValue("application/json"))
		enc.Encode(w, eventstream.Message{Headers: hs, Payload: mustJSON(map[string]any{"message": "Too many tokens, please wait before trying again."})})
		f.Flush()
	}
	if op == "invoke-with-response-stream" {
		// Anthropic models on Bedrock: each chunk carries one Messages API
		// event; message_stop adds Bedrock's invocation metrics.
		events, brk := anthropicScript(rep, model)
		for i, e := range events {
			if i == brk {
				switch {
				case rep.Hold:
					s.hold(r.Context())
					return
				case rep.Malformed:
					io.WriteString(w, "\x00\x00\x00\x40garbage-not-an-event-stream-prelude-crc........................")
					f.Flush()
					return
				case rep.MidError:
					exception()
					return
				}
			}
			data := e.data
			if e.name == "message_stop" {
				data = mustJSON(map[string]any{"type": "message_stop", "amazon-bedrock-invocationMetrics": map[string]any{
					"inputTokenCount": rep.Usage.InputTokens, "outputTokenCount": rep.Usage.OutputTokens, "invocationLatency": 42, "firstByteLatency": 7}})
			}
			var hs eventstream.Headers
			hs.Set(":message-type", eventstream.StringValue("event"))
			hs.Set(":event-type", eventstream.StringValue("chunk"))
			hs.Set(":content-type", eventstream.StringValue("application/json"))
			if err := enc.Encode(w, eventstream.Message{Headers: hs, Payload: mustJSON(map[string]any{"bytes": data})}); err != nil {
				panic(err)
			}
			f.Flush()
		}
		return
	}
	ev := func(typ string, payload any) {
		var hs eventstream.Headers
		hs.Set(":message-type", eventstream.StringValue("event"))
		hs.Set(":event-type", eventstream.StringValue(typ))
		hs.Set(":content-type", eventstream.StringValue("application/json"))
		if err := enc.Encode(w, eventstream.Message{Headers: hs, Payload: mustJSON(payload)}); err != nil {
			panic(err)
		}
		f.Flush()
	}
	ev("messageStart", map[string]any{"role": "assistant", "p": "abcd"})
	idx := 0
	if len(rep.Text) > 0 {
		for i, t := range rep.Text {
			ev("contentBlockDelta", map[string]any{"contentBlockIndex": idx, "delta": map[string]any{"text": t}, "p": "abc"})
			if i == 0 {
				switch {
				case rep.Hold:
					s.hold(r.Context())
					return
				case rep.Malformed:
					io.WriteString(w, "\x00\x00\x00\x40garbage-not-an-event-stream-prelude-crc........................")
					f.Flush()
					return
				case rep.MidError:
					exception()
					return
				}
			}
		}
		ev("contentBlockStop", map[string]any{"contentBlockIndex": idx})
		idx++
	}
	for _, tc := range rep.ToolCalls {
		ev("contentBlockStart", map[string]any{"contentBlockIndex": idx, "start": map[string]any{"toolUse": map[string]any{"toolUseId": tc.ID, "name": tc.Name}}})
		for _, frag := range fragments(toolInput(tc)) {
			ev("contentBlockDelta", map[string]any{"contentBlockIndex": idx, "delta": map[string]any{"toolUse": map[string]any{"input": frag}}})
		}
		ev("contentBlockStop", map[string]any{"contentBlockIndex": idx})
		idx++
	}
	ev("messageStop", map[string]any{"stopReason": string(stopOf(rep))})
	u := rep.Usage
	ev("metadata", map[string]any{"usage": map[string]any{"inputTokens": u.InputTokens, "outputTokens": u.OutputTokens,
		"totalTokens":          u.InputTokens + u.OutputTokens + u.CacheReadTokens + u.CacheWriteTokens,
		"cacheReadInputTokens": u.CacheReadTokens, "cacheWriteInputTokens": u.CacheWriteTokens},
		"metrics": map[string]any{"latencyMs": 42}})
}

// anthropicName turns a Bedrock model ID ("us.anthropic.claude-x-v1:0")
// into the name Bedrock reports in Messages API answers ("claude-x").
func anthropicName(id string) string {
	if i := strings.Index(id, "anthropic."); i >= 0 {
		id = id[i+len("anthropic."):]
	}
	if i := strings.LastIndex(id, "-v"); i > 0 && strings.Contains(id[i:], ":") {
		id = id[:i]
	}
	return id
}
