package modal

import (
	"archive/tar"
	"bytes"
	"io"
	"path"
	"strings"
	"testing"
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
