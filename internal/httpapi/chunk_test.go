package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"strings"
	"testing"
	"unicode/utf8"
)

// decodeChunk is what clients do with an output event's data.
func decodeChunk(t *testing.T, b []byte) (out []byte, b64 bool) {
	t.Helper()
	var c struct {
		Data    *string `json:"data"`
		DataB64 *string `json:"data_b64"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("chunk %q is not JSON: %v", b, err)
	}
	if (c.Data == nil) == (c.DataB64 == nil) {
		t.Fatalf("chunk %q must have exactly one of data, data_b64", b)
	}
	if c.Data != nil {
		return []byte(*c.Data), false
	}
	p, err := base64.StdEncoding.DecodeString(*c.DataB64)
	if err != nil {
		t.Fatalf("chunk %q: %v", b, err)
	}
	return p, true
}

func TestChunkJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		b64  bool
	}{
		{"empty", "", false},
		{"text", "hello <b>&</b> \"quoted\" back\\slash\ttab\r\nline\n", false},
		{"multibyte", strings.Repeat("é€😀", 100), false},
		{"some control bytes", "a\x00b\x01c\x1fd" + strings.Repeat("x", 100), false},
		{"newlines", strings.Repeat("\n", 4096), false},
		{"zeros", strings.Repeat("\x00", 4096), true},
		{"mostly control", strings.Repeat("\x01\x02x", 1000), true},
		{"invalid utf-8", "ok\xff\xfe\x00end", true},
		{"cut rune", "ab\xe2\x82", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendChunkJSON([]byte("prefix"), []byte(tc.in))
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("dst prefix lost: %q", got)
			}
			got = got[len("prefix"):]
			if bytes.ContainsAny(got, "\r\n") {
				t.Fatalf("raw newline in %q", got)
			}
			out, b64 := decodeChunk(t, got)
			if string(out) != tc.in || b64 != tc.b64 {
				t.Fatalf("round trip: got %q (base64 %v), want %q (base64 %v)", out, b64, tc.in, tc.b64)
			}
		})
	}
	ev := appendChunkEvent(nil, "stdout", []byte("a\nb"))
	if want := "event: stdout\ndata: {\"data\":\"a\\nb\"}\n\n"; string(ev) != want {
		t.Fatalf("event = %q, want %q", ev, want)
	}
}

// FuzzChunkJSON: any output bytes survive the encoding, as one SSE data
// line, and text without control bytes stays text.
func FuzzChunkJSON(f *testing.F) {
	for _, s := range []string{"", "hi\n", "\x00\x00\x00", "é€", "\xff", "\"\\", "\u2028<>&"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		got := appendChunkJSON(nil, p)
		if bytes.ContainsAny(got, "\r\n") {
			t.Fatalf("raw newline in %q", got)
		}
		out, b64 := decodeChunk(t, got)
		if !bytes.Equal(out, p) {
			t.Fatalf("round trip: got %q, want %q", out, p)
		}
		plain := utf8.Valid(p) && !bytes.ContainsFunc(p, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' })
		if plain && b64 {
			t.Fatalf("text %q was sent as base64", p)
		}
	})
}

func TestNeedsEscape8(t *testing.T) {
	for c := range 256 {
		for pos := range 8 {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			want := c < 0x20 || c == '"' || c == '\\'
			if got := needsEscape8(binary.LittleEndian.Uint64(b)); want && !got {
				t.Fatalf("byte %#x at %d: needsEscape8 = false", c, pos)
			}
		}
	}
	if needsEscape8(binary.LittleEndian.Uint64([]byte("plain é!"))) {
		t.Fatal("plain text flagged")
	}
}

// The escaper jumps to the lowest flagged byte of a word, so that byte
// must be a true match whatever the bytes around it are.
func TestEscapeMask8Lowest(t *testing.T) {
	special := func(c byte) bool { return c < 0x20 || c == '"' || c == '\\' }
	fill := []byte{0x00, 0x1f, 0x20, 0x21, '"', '\\', 'a', 0x7f, 0x80, 0xa0, 0xff}
	for pos := range 8 {
		for c := range 256 {
			for _, below := range []byte{0x20, 0x21, 0x23, 0x5d, 'a', 0x80, 0xa1, 0xff} {
				for _, above := range fill {
					w := bytes.Repeat([]byte{above}, 8)
					for i := range pos {
						w[i] = below
					}
					w[pos] = byte(c)
					want := -1
					for i, x := range w {
						if special(x) {
							want = i
							break
						}
					}
					m := escapeMask8(binary.LittleEndian.Uint64(w))
					got := -1
					if m != 0 {
						got = bits.TrailingZeros64(m) / 8
					}
					if got != want {
						t.Fatalf("%q: lowest flagged byte %d, want %d", w, got, want)
					}
				}
			}
		}
	}
}

func BenchmarkChunkJSON(b *testing.B) {
	p := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ é€\n"), 4000)
	b.SetBytes(int64(len(p)))
	var dst []byte
	for range b.N {
		dst = appendChunkJSON(dst[:0], p)
	}
}
