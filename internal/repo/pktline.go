package repo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxPkt is the largest pkt-line git writes (65520 bytes with its header).
const maxPkt = 65520

var errFlush = errors.New("flush")

// readPkt reads one pkt-line's payload; a flush-pkt returns errFlush.
// raw receives the bytes read, header included, so a caller can replay
// them upstream.
func readPkt(r *bufio.Reader, raw *bytes.Buffer) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	raw.Write(hdr[:])
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return nil, fmt.Errorf("bad pkt-line length %q", hdr[:])
	}
	switch {
	case n == 0:
		return nil, errFlush
	case n < 4 || n > maxPkt:
		return nil, fmt.Errorf("bad pkt-line length %d", n)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	raw.Write(buf)
	return buf, nil
}

// pkt encodes one pkt-line.
func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// RefUpdate is one command of a push: old and new object IDs and the ref.
type RefUpdate struct {
	Old, New, Ref string
}

// Delete reports whether the update deletes the ref.
func (u RefUpdate) Delete() bool { return strings.Trim(u.New, "0") == "" }

// PushRequest is the command list of a git-receive-pack request.
type PushRequest struct {
	Updates []RefUpdate
	Caps    []string
}

// Has reports whether the client asked for capability c.
func (p PushRequest) Has(c string) bool {
	for _, x := range p.Caps {
		if x == c || strings.HasPrefix(x, c+"=") {
			return true
		}
	}
	return false
}

// ReadPushRequest reads the command list at the start of a receive-pack
// request body (shallow lines, commands, flush) and returns it with the
// bytes consumed, which the broker forwards before the rest (the pack).
// A signed push (push-cert) is refused: its commands sit inside the
// certificate.
func ReadPushRequest(r *bufio.Reader) (PushRequest, []byte, error) {
	var raw bytes.Buffer
	var p PushRequest
	for i := 0; ; i++ {
		if i > 10000 {
			return p, nil, errors.New("too many commands")
		}
		line, err := readPkt(r, &raw)
		if errors.Is(err, errFlush) {
			break
		}
		if err != nil {
			return p, nil, err
		}
		s := strings.TrimSuffix(string(line), "\n")
		if strings.HasPrefix(s, "shallow ") {
			continue
		}
		if strings.HasPrefix(s, "push-cert") {
			return p, nil, errors.New("signed pushes are not supported by the broker")
		}
		if cmd, caps, ok := strings.Cut(s, "\x00"); ok {
			s = cmd
			if len(p.Updates) == 0 {
				p.Caps = strings.Fields(caps)
			}
		}
		f := strings.Split(s, " ")
		if len(f) != 3 || len(f[0]) < 40 || len(f[1]) < 40 || !strings.HasPrefix(f[2], "refs/") {
			return p, nil, fmt.Errorf("bad push command %q", truncate(s, 120))
		}
		p.Updates = append(p.Updates, RefUpdate{Old: f[0], New: f[1], Ref: f[2]})
	}
	if len(p.Updates) == 0 {
		return p, nil, errors.New("a push without commands")
	}
	return p, raw.Bytes(), nil
}

// Advertisement is what an upload-pack ref advertisement (protocol v0)
// says: the refs and where HEAD points.
type Advertisement struct {
	Refs map[string]string // ref name -> object ID
	Head string            // "refs/heads/main" (from symref=HEAD:...), or ""
}

// ReadAdvertisement parses the body of GET info/refs?service=git-upload-pack.
func ReadAdvertisement(r io.Reader) (Advertisement, error) {
	br := bufio.NewReader(r)
	var raw bytes.Buffer
	a := Advertisement{Refs: map[string]string{}}
	first, err := readPkt(br, &raw)
	if err != nil {
		return a, fmt.Errorf("read ref advertisement: %w", err)
	}
	if !strings.HasPrefix(string(first), "# service=") {
		return a, errors.New("not a smart-HTTP ref advertisement")
	}
	if _, err := readPkt(br, &raw); !errors.Is(err, errFlush) {
		return a, errors.New("not a smart-HTTP ref advertisement")
	}
	for i := 0; i < 1_000_000; i++ {
		line, err := readPkt(br, &raw)
		if errors.Is(err, errFlush) {
			return a, nil
		}
		if err != nil {
			return a, fmt.Errorf("read ref advertisement: %w", err)
		}
		raw.Reset()
		s := strings.TrimSuffix(string(line), "\n")
		if ref, caps, ok := strings.Cut(s, "\x00"); ok {
			s = ref
			for _, c := range strings.Fields(caps) {
				if v, ok := strings.CutPrefix(c, "symref=HEAD:"); ok {
					a.Head = v
				}
			}
		}
		id, name, ok := strings.Cut(s, " ")
		if !ok || name == "capabilities^{}" {
			continue
		}
		a.Refs[name] = id
	}
	return a, errors.New("ref advertisement too long")
}

// refusal is the receive-pack answer that refuses every update of p: a
// report-status (in side-band 1 when the client asked for it) with "ng"
// and reason per ref, and the reason on the client's progress band.
func refusal(p PushRequest, reasons map[string]string) []byte {
	var inner strings.Builder
	inner.WriteString(pkt("unpack ok\n"))
	for _, u := range p.Updates {
		why := reasons[u.Ref]
		if why == "" {
			why = "not pushed: another ref of this push was refused"
		}
		inner.WriteString(pkt("ng " + u.Ref + " " + why + "\n"))
	}
	inner.WriteString("0000")
	if !p.Has("side-band-64k") && !p.Has("side-band") {
		return []byte(inner.String())
	}
	var out strings.Builder
	for _, u := range p.Updates {
		if why := reasons[u.Ref]; why != "" {
			out.WriteString(pkt("\x02techboss broker: " + u.Ref + ": " + why + "\n"))
		}
	}
	s := inner.String()
	for len(s) > 0 {
		n := min(len(s), 999)
		out.WriteString(pkt("\x01" + s[:n]))
		s = s[n:]
	}
	out.WriteString("0000")
	return []byte(out.String())
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
