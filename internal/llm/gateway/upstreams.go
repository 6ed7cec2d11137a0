package gateway

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/techbossai/techboss/internal/llm"
)

// UpstreamFromConfig returns the Anthropic passthrough's upstream chosen by
// gc: the Anthropic API with the server's key, or Bedrock with credentials
// and region from the AWS default chain (gc.BedrockRegion overrides).
func UpstreamFromConfig(ctx context.Context, gc llm.GatewayConfig) (Upstream, error) {
	switch gc.AnthropicUpstream {
	case "", "anthropic":
		return NewAnthropic(gc.AnthropicBaseURL, gc.AnthropicKey, nil), nil
	case "bedrock":
		var opts []func(*config.LoadOptions) error
		if gc.BedrockRegion != "" {
			opts = append(opts, config.WithRegion(gc.BedrockRegion))
		}
		awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("gateway bedrock upstream: load AWS configuration: %w", err)
		}
		if awsCfg.Region == "" {
			return nil, fmt.Errorf("gateway bedrock upstream: no AWS region (set AWS_REGION or gateway.bedrock_region)")
		}
		return NewBedrockFromConfig(awsCfg, gc.BedrockBaseURL, gc.BedrockModels), nil
	default:
		return nil, fmt.Errorf("gateway upstream %q must be anthropic or bedrock", gc.AnthropicUpstream)
	}
}
