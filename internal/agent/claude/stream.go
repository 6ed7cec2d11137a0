package claude

import (
	"encoding/json"

	"github.com/techbossai/techboss/internal/agent"
)

// streamEvent is the part of a `stream_event` line (the CLI run with
// --include-partial-messages: the Messages API's raw SSE event) the parser
// reads.
type streamEvent struct {
	Type    string `json:"type"`
	Index   int    `json:"index"`
	Message struct {
		ID string `json:"id"`
	} `json:"message"`
	ContentBlock struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"content_block"`
	Delta struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		Thinking    string `json:"thinking"`
		PartialJSON string `json:"partial_json"`
	} `json:"delta"`
}

// blockState is what the parser knows of one content block being streamed.
type blockState struct {
	typ, toolID, name string
	offset            int // bytes of the block's text/thinking/input so far
}

// streamState follows the message being streamed: its id (message_start)
// and its blocks by index (content_block_start).
type streamState struct {
	msgID  string
	blocks map[int]*blockState
}

// stream turns one stream_event into at most one delta event. The framing
// events (message_start, content_block_start/stop, message_delta,
// message_stop) and deltas with nothing to show produce none, and the
// caller passes them through as raw events like any line it has no type
// for (a few per message, not per token).
func (p *Parser) stream(ev json.RawMessage, raw string) []agent.Event {
	var e streamEvent
	if json.Unmarshal(ev, &e) != nil {
		return nil
	}
	switch e.Type {
	case "message_start":
		p.st = streamState{msgID: e.Message.ID, blocks: map[int]*blockState{}}
	case "content_block_start":
		if p.st.blocks == nil {
			p.st.blocks = map[int]*blockState{}
		}
		p.st.blocks[e.Index] = &blockState{typ: e.ContentBlock.Type, toolID: e.ContentBlock.ID, name: e.ContentBlock.Name}
	case "content_block_delta":
		b := p.st.blocks[e.Index]
		if b == nil {
			b = &blockState{}
			if p.st.blocks == nil {
				p.st.blocks = map[int]*blockState{}
			}
			p.st.blocks[e.Index] = b
		}
		d := agent.DeltaData{MessageID: p.st.msgID, Index: e.Index, Offset: b.offset}
		var typ string
		switch e.Delta.Type {
		case "text_delta":
			typ, d.Text = agent.TypeTextDelta, e.Delta.Text
		case "thinking_delta":
			typ, d.Text = agent.TypeThinkingDelta, e.Delta.Thinking
		case "input_json_delta":
			typ, d.Text, d.ToolUseID, d.Name = agent.TypeToolInputDelta, e.Delta.PartialJSON, b.toolID, b.name
		default:
			// signature_delta, citations_delta and future kinds: nothing
			// a reader shows while the block streams.
			return nil
		}
		if d.Text == "" {
			return nil
		}
		b.offset += len(d.Text)
		return []agent.Event{agent.NewEvent(typ, d, raw)}
	}
	return nil
}

// streamedText reports whether a text block of the message has streamed.
func (st *streamState) streamedText() bool {
	for _, b := range st.blocks {
		if b.typ == "text" && b.offset > 0 {
			return true
		}
	}
	return false
}
