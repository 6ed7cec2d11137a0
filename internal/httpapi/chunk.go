package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"math/bits"
	"slices"
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
	if !utf8.Valid(p) {
		return appendChunkB64(dst, p)
	}
	// Room for the text and a few escapes, so appends rarely grow dst.
	dst = slices.Grow(dst, len(p)+len(p)/32+16)
	dst = append(dst, `{"data":"`...)
	start := len(dst)
	b64 := base64.StdEncoding.EncodedLen(len(p))
	last, i := 0, 0
	for {
		// Skip 16, then 8 bytes at a time while none needs escaping; the
		// lowest flagged byte of a word is always a true match.
		for i+16 <= len(p) && escapeMask8(binary.LittleEndian.Uint64(p[i:]))|escapeMask8(binary.LittleEndian.Uint64(p[i+8:])) == 0 {
			i += 16
		}
		if i+8 <= len(p) {
			m := escapeMask8(binary.LittleEndian.Uint64(p[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) / 8
		} else {
			for i < len(p) && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\' {
				i++
			}
			if i == len(p) {
				break
			}
		}
		c := p[i]
		dst = append(dst, p[last:i]...)
		i++
		last = i
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

const hexDigits = "0123456789abcdef"

// escapeMask8 has the high bit set in the lowest byte of x (little
// endian) that is below 0x20, '"' or '\\', if any; bytes above it may be
// flagged spuriously (borrows), never the ones below. 0: none of the 8
// bytes needs escaping.
func escapeMask8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	zero := func(v uint64) uint64 { return (v - ones) &^ v & highs }
	return ((x-0x20*ones)&^x | zero(x^('"'*ones)) | zero(x^('\\'*ones))) & highs
}

// needsEscape8 reports whether any of the 8 bytes in x is below 0x20, '"'
// or '\\' (it may report true spuriously; never false wrongly).
func needsEscape8(x uint64) bool { return escapeMask8(x) != 0 }

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

// appendTextEvent appends one output event in the text SSE form
// (?format=text): the bytes themselves as the event's data lines, no
// JSON, when they are UTF-8 without CR or NUL (SSE would read a CR as a
// line end; NULs are not text); else event "<name>_b64" with base64 data.
// A client rebuilds the chunk by joining the data lines with "\n", as
// the SSE spec says.
func appendTextEvent(dst []byte, name string, p []byte) []byte {
	if bytes.IndexByte(p, '\r') >= 0 || bytes.IndexByte(p, 0) >= 0 || !utf8.Valid(p) {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, "_b64\ndata: "...)
		dst = base64.StdEncoding.AppendEncode(dst, p)
		return append(dst, "\n\n"...)
	}
	dst = slices.Grow(dst, len(p)+len(p)/16+len(name)+16)
	dst = append(dst, "event: "...)
	dst = append(dst, name...)
	dst = append(dst, '\n')
	for {
		i := bytes.IndexByte(p, '\n')
		dst = append(dst, "data: "...)
		if i < 0 {
			dst = append(dst, p...)
			break
		}
		dst = append(dst, p[:i+1]...)
		p = p[i+1:]
	}
	return append(dst, "\n\n"...)
}
