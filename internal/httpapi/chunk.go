package httpapi

import (
	"encoding/base64"
	"encoding/binary"
	"unicode/utf8"
)

// appendChunkJSON appends the outputChunk JSON of p to dst in one pass:
// {"data":"…"} when p is valid UTF-8, else {"data_b64":"…"}; also base64
// when control bytes other than \t \n \r (such as NULs, which JSON spells
// as six bytes each) would make the text larger than base64. Unlike
// json.Marshal it does not escape <, > and &, and it allocates nothing
// when dst has room. The result never holds a raw CR or LF, so it is one
// SSE data line.
func appendChunkJSON(dst, p []byte) []byte {
	base := len(dst)
	if utf8.Valid(p) {
		dst = append(dst, `{"data":"`...)
		start := len(dst)
		b64 := base64.StdEncoding.EncodedLen(len(p))
		last := 0
		for i := 0; i < len(p); i++ {
			// Skip 8 bytes at a time while none needs escaping.
			for i+8 <= len(p) && !needsEscape8(binary.LittleEndian.Uint64(p[i:])) {
				i += 8
			}
			if i >= len(p) {
				break
			}
			c := p[i]
			if c >= 0x20 && c != '"' && c != '\\' {
				continue
			}
			dst = append(dst, p[last:i]...)
			last = i + 1
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
				// Each remaining byte costs at least one more: once that
				// bound passes base64's size, base64 is the smaller answer.
				// (Printable text, even all newlines, always stays text.)
				if len(dst)-start+len(p)-last > b64 {
					return appendChunkB64(dst[:base], p)
				}
			}
		}
		dst = append(dst, p[last:]...)
		return append(dst, `"}`...)
	}
	return appendChunkB64(dst, p)
}

const hexDigits = "0123456789abcdef"

// needsEscape8 reports whether any of the 8 bytes in x is below 0x20, '"'
// or '\\' (it may report true spuriously; never false wrongly).
func needsEscape8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) bool { return (v-ones)&^v&highs != 0 }
	return (x-0x20*ones)&^x&highs != 0 || hasZero(x^('"'*ones)) || hasZero(x^('\\'*ones))
}

func appendChunkB64(dst, p []byte) []byte {
	dst = append(dst, `{"data_b64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, p)
	return append(dst, `"}`...)
}

// appendChunkEvent appends a whole SSE event "event: <name>\ndata: <chunk
// JSON>\n\n". name must not contain a newline (it is one of ours).
func appendChunkEvent(dst []byte, name string, p []byte) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, name...)
	dst = append(dst, "\ndata: "...)
	dst = appendChunkJSON(dst, p)
	return append(dst, "\n\n"...)
}
