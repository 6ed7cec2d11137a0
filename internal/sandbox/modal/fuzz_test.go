package modal

import (
	"archive/tar"
	"bytes"
	"io"
	"path"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
)

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/workspace/a", "/workspace/../etc", "rel", "", "/a/\x00b", "//x//y/", "/workspace/./b/..", "/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := cleanPath("path", p)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") || strings.ContainsRune(got, 0) || got != path.Clean(got) {
			t.Fatalf("cleanPath(%q) = %q", p, got)
		}
		for _, el := range strings.Split(got, "/") {
			if el == ".." {
				t.Fatalf("cleanPath(%q) = %q keeps '..'", p, got)
			}
		}
	})
}

func tarOf(entries ...tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg {
			h.Size = 1
		}
		_ = tw.WriteHeader(&h)
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte("x"))
		}
	}
	_ = tw.Close()
	return b.Bytes()
}

// FuzzFilterTar checks that whatever passes the filter stays inside the
// target directory: no absolute names, no "..", no path through a symlink
// the archive created, no hard link out.
func FuzzFilterTar(f *testing.F) {
	f.Add(tarOf(tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "/abs", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../tmp"}, tar.Header{Name: "l/x", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		if err := filterTar(bytes.NewReader(in), &out); err != nil {
			return
		}
		tr := tar.NewReader(&out)
		links := map[string]bool{}
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("filter output is not a valid tar: %v", err)
			}
			n := path.Clean(strings.TrimPrefix(h.Name, "./"))
			if strings.HasPrefix(n, "/") || n == ".." || strings.HasPrefix(n, "../") || strings.Contains(n, "/../") {
				t.Fatalf("unsafe entry passed: %q", h.Name)
			}
			for d := path.Dir(n); d != "." && d != "/"; d = path.Dir(d) {
				if links[d] {
					t.Fatalf("entry %q through symlink %q passed", h.Name, d)
				}
			}
			if h.Typeflag == tar.TypeSymlink {
				links[n] = true
			}
			if h.Typeflag == tar.TypeLink {
				l := path.Clean(h.Linkname)
				if strings.HasPrefix(l, "/") || l == ".." || strings.HasPrefix(l, "../") {
					t.Fatalf("hard link out passed: %q -> %q", h.Name, h.Linkname)
				}
			}
		}
	})
}

// FuzzParseLogStream: whatever the sandbox's log reader sends, the parser
// returns items within their bounds or a 502, and never panics.
func FuzzParseLogStream(f *testing.F) {
	for _, s := range []string{
		"P 5\nK\nS 0\no5\nhelloe3\nerrC\nX 0\n",
		"P 5\nE notfound\n",
		"P 5\nK\nS 99\no1\naS 100\ne2\nabC\nX -1\n",
		"P 5\nK\nS 0\no99999999\n",
		"P 5\nK\nS 0\no10\nabc",
		"X 300\n", "S -1\n", "P\n", "o-1\n", "E\n", "K extra\n", "\n", "S 0",
	} {
		f.Add([]byte(s))
	}
	const limit = 1 << 10
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &countReader{r: bytes.NewReader(b)}
		err := parseLogStream(r, limit, func(it logItem) bool {
			switch it.kind {
			case 'o', 'e':
				if int64(len(it.data)) != it.n || it.n > procRecordMax || it.stream == "" {
					t.Fatalf("record %q of %d bytes, stream %q", it.kind, len(it.data), it.stream)
				}
			case 'X':
				if it.n < -1 || it.n > 255 {
					t.Fatalf("exit %d", it.n)
				}
			case 'S':
				if it.n < 0 {
					t.Fatalf("segment at %d", it.n)
				}
			case 'P', 'K', 'C', 'E':
			default:
				t.Fatalf("item of kind %q", it.kind)
			}
			return true
		})
		if err != nil && errs.KindOf(err) != errs.BadGateway {
			t.Fatalf("error %v is not a 502", err)
		}
	})
}
