package httpapi

import (
	"bytes"
	"net/http/httptest"
	"testing"
	"unicode/utf8"
)

// FuzzSSEOutput checks that exec output written in arbitrary pieces comes
// out of the stdout events byte-exact, and that text split inside a UTF-8
// sequence never turns into base64.
func FuzzSSEOutput(f *testing.F) {
	f.Add([]byte("héllo wörld €"), uint8(1))
	f.Add([]byte("\xff\xfe\x00bin"), uint8(2))
	f.Add([]byte("a\r\nb\rc\n\"q\"\\"), uint8(3))
	f.Add([]byte("😀😀😀"), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/sandbox/x/exec", nil)
		st, err := newSSE(rec, req)
		if err != nil {
			t.Fatal(err)
		}
		o := &sseOutput{st: st, event: "stdout"}
		n := int(step%16) + 1
		for rest := data; len(rest) > 0; {
			k := min(n, len(rest))
			if w, err := o.Write(rest[:k]); err != nil || w != k {
				t.Fatalf("Write = %d, %v", w, err)
			}
			rest = rest[k:]
		}
		if err := o.flush(); err != nil {
			t.Fatal(err)
		}
		evs := readSSE(t, bytes.NewReader(rec.Body.Bytes()))
		got, usedB64 := outputOf(t, evs, "stdout")
		if !bytes.Equal(got, data) {
			t.Fatalf("reassembled %q, want %q", got, data)
		}
		if usedB64 && utf8.Valid(data) && printableText(data) {
			t.Fatalf("printable UTF-8 %q was sent as base64", data)
		}
	})
}

// printableText reports text without control bytes other than \t \n \r,
// which must always travel as JSON text.
func printableText(p []byte) bool {
	for _, c := range p {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}
