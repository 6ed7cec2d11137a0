package local

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// tarOf builds a tar stream from headers (and bodies for regular files).
func tarOf(t testing.TB, ents ...tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := e.hdr
		hdr.Size = int64(len(e.body))
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarEnt struct {
	hdr  tar.Header
	body string
}

func dirEnt(name string) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}
func fileEnt(name, body string) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}
func linkEnt(name, target string) tarEnt {
	return tarEnt{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}

// treeOf lists the tree under dir in the sandbox: "path type [content|target]".
func treeOf(t *testing.T, d *Driver, ref sandbox.Ref, dir string) []string {
	t.Helper()
	out := mustSh(t, d, ref, `cd `+dir+` && find . -mindepth 1 | sort | while read -r p; do
		if [ -L "$p" ]; then echo "$p -> $(readlink "$p")"; elif [ -d "$p" ]; then echo "$p/"; else echo "$p = $(cat "$p")"; fi
	done`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	sort.Strings(lines)
	return lines
}

// TestArchiveInAllOrNothing: an archive refused part-way leaves the target
// exactly as it was; one that extracts cleanly is merged into it.
func TestArchiveInAllOrNothing(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx := testCtx(t)
	n := 0
	// setup makes a fresh target tree and returns its path.
	setup := func(t *testing.T) string {
		n++
		dir := "/workspace/t" + strconv.Itoa(n)
		mustSh(t, d, ref, strings.ReplaceAll(`mkdir -p T/keep/sub && echo old > T/keep/a && echo old > T/f && ln -s keep T/kl`, "T", dir))
		return dir
	}
	initial := []string{"./f = old", "./keep/", "./keep/a = old", "./keep/sub/", "./kl -> keep"}

	for _, tc := range []struct {
		name string
		ents []tarEnt
	}{
		{"AbsoluteSymlinkThenFile", []tarEnt{linkEnt("l", "/etc"), fileEnt("l/x", "pwned")}},
		{"UpSymlinkThenFile", []tarEnt{linkEnt("l", "../.."), fileEnt("l/x", "pwned")}},
		{"GoodEntriesThenSlip", []tarEnt{fileEnt("new", "n"), fileEnt("keep/a", "replaced"), dirEnt("nd/"), fileEnt("nd/x", "x"), fileEnt("../slip", "x")}},
		{"GoodEntriesThenTruncated", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := setup(t)
			body := tarOf(t, tc.ents...)
			if tc.ents == nil {
				full := tarOf(t, fileEnt("new", "n"), fileEnt("keep/a", "replaced"), fileEnt("big", strings.Repeat("b", 4096)))
				body = full[:len(full)-1024-2048] // cut inside "big"
			}
			err := d.ArchiveIn(ctx, ref, dir, bytes.NewReader(body))
			if err == nil {
				t.Fatal("got nil error, want the archive refused")
			}
			if diff := cmp.Diff(initial, treeOf(t, d, ref, dir)); diff != "" {
				t.Errorf("target changed by a refused archive (%v) (-want +got):\n%s", err, diff)
			}
			if got := mustSh(t, d, ref, "ls -A /etc / | grep -c '^x$' || true"); got != "0\n" {
				t.Errorf("x written through the symlink")
			}
		})
	}

	t.Run("NewTargetRemoved", func(t *testing.T) {
		err := d.ArchiveIn(ctx, ref, "/workspace/fresh/deeper", bytes.NewReader(tarOf(t, fileEnt("a", "a"), fileEnt("../b", "b"))))
		if err == nil {
			t.Fatal("got nil error, want the archive refused")
		}
		if _, err := d.Stat(ctx, ref, "/workspace/fresh"); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Stat of the target ArchiveIn created: got %v, want it removed again", err)
		}
	})

	t.Run("Merge", func(t *testing.T) {
		dir := setup(t)
		body := tarOf(t,
			dirEnt("./"),
			fileEnt("f", "new"),             // replaces a file
			fileEnt("keep/b", "b"),          // into an existing directory
			fileEnt("keep/sub/deep/c", "c"), // parents the archive does not list
			dirEnt("nd/"), fileEnt("nd/x", "x"),
			linkEnt("nl", "keep/b"),
		)
		if err := d.ArchiveIn(ctx, ref, dir, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"./f = new", "./keep/", "./keep/a = old", "./keep/b = b", "./keep/sub/", "./keep/sub/deep/",
			"./keep/sub/deep/c = c", "./kl -> keep", "./nd/", "./nd/x = x", "./nl -> keep/b",
		}
		if diff := cmp.Diff(want, treeOf(t, d, ref, dir)); diff != "" {
			t.Errorf("after merge (-want +got):\n%s", diff)
		}
		// The sandbox owns what it received, implied parents included.
		if r := sh(t, d, ref, "rm -r "+dir+"/keep/sub/deep"); r.st.Code != 0 {
			t.Errorf("removing extracted entries in the sandbox: %+v %s", r.st, r.stderr)
		}
	})

	t.Run("ReplaceKinds", func(t *testing.T) {
		dir := setup(t)
		// A file where a directory was, a directory where a file was, a
		// symlink where a directory was, a directory where a symlink to
		// one was (never written through).
		mustSh(t, d, ref, "mkdir "+dir+"/d && echo old > "+dir+"/d/old")
		body := tarOf(t, fileEnt("keep", "file now"), dirEnt("f/"), fileEnt("f/in", "i"), linkEnt("d", "f"), fileEnt("kl/in", "k"))
		if err := d.ArchiveIn(ctx, ref, dir, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		want := []string{"./d -> f", "./f/", "./f/in = i", "./keep = file now", "./kl/", "./kl/in = k"}
		if diff := cmp.Diff(want, treeOf(t, d, ref, dir)); diff != "" {
			t.Errorf("after replace (-want +got):\n%s", diff)
		}
	})

	t.Run("AcrossMounts", func(t *testing.T) {
		// Extracting at / reaches /workspace and /tmp, other filesystems
		// than the staging directory's.
		body := tarOf(t, fileEnt("workspace/across/w", "w"), fileEnt("tmp/across-t", "t"), fileEnt("across-root", "r"))
		if err := d.ArchiveIn(ctx, ref, "/", bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		if got := mustSh(t, d, ref, "cat /workspace/across/w /tmp/across-t /across-root; ls -a / /workspace /tmp | grep -c "+stagePrefix+" || true"); got != "wtr0\n" {
			t.Errorf("got %q, want the three files and no staging directory left", got)
		}
	})
}

// TestArchiveInNotTar: a body that is not a tar stream is invalid input
// (422), not a path escaping the sandbox (403).
func TestArchiveInNotTar(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx := testCtx(t)
	full := tarOf(t, fileEnt("a", strings.Repeat("a", 2000)))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(i*7919>>3) ^ byte(i)
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"JSON", strings.Repeat(`{"files": ["a", "b"], "mode": 420}`, 20), "not a tar stream"},
		{"Random", string(random), "not a tar stream"},
		{"ShortJSON", `{"a": 1}`, "truncated tar stream"},
		{"Truncated", string(full[:700]), "truncated tar stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.ArchiveIn(ctx, ref, "/workspace/nt", strings.NewReader(tc.body))
			if k := errs.KindOf(err); k != errs.Invalid {
				t.Fatalf("got %v (kind %v), want kind %v", err, k, errs.Invalid)
			}
			if e, _ := errs.Public(err); !strings.Contains(e.Message, tc.want) {
				t.Errorf("got %q, want it to say %q", e.Message, tc.want)
			}
		})
	}
}

// snapshotTree lists a host directory tree: path, type, content or target.
func snapshotTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := de.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" -> "+target)
		case fi.IsDir():
			out = append(out, rel+"/ "+fi.Mode().String())
		default:
			b, _ := os.ReadFile(p)
			out = append(out, rel+" "+fi.Mode().String()+" = "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzArchiveIn feeds archives, broken ones and non-archives to the
// all-or-nothing extraction on a host directory: nothing outside the
// target changes, a refused archive changes nothing at all, and no staging
// directory is left behind.
func FuzzArchiveIn(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root, like the driver (archives may hold directories root alone can enter)")
	}
	valid := tarOf(f, dirEnt("d/"), fileEnt("d/a", "a"), linkEnt("d/l", "a"), fileEnt("keep/n", "n"), fileEnt("f", "new"))
	f.Add(valid)
	f.Add(valid[:700])
	f.Add(tarOf(f, linkEnt("l", "/etc"), fileEnt("l/x", "x")))
	f.Add(tarOf(f, linkEnt("l", "../outside"), fileEnt("l/x", "x")))
	f.Add(tarOf(f, linkEnt("out", "../outside"), fileEnt("f", "y"), fileEnt("out/x", "x")))
	f.Add(tarOf(f, fileEnt("ok", "ok"), fileEnt("../slip", "x")))
	f.Add(tarOf(f, fileEnt("keep", "a file now"), dirEnt("f/"), tarEnt{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "f"}}))
	f.Add(tarOf(f, tarEnt{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "keep/k"}}))
	f.Add([]byte(`{"not": "a tar"}`))
	f.Add(bytes.Repeat([]byte{0xA5, 0x17, 0x00, 'x'}, 300))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		top := t.TempDir()
		target, outside := filepath.Join(top, "target"), filepath.Join(top, "outside")
		for _, dir := range []string{filepath.Join(target, "keep"), outside} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, body := range map[string]string{"keep/k": "k", "f": "old"} {
			if err := os.WriteFile(filepath.Join(target, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
		for name, to := range map[string]string{"out": "../outside", "abs": outside, "kl": "keep"} {
			if err := os.Symlink(to, filepath.Join(target, name)); err != nil {
				t.Fatal(err)
			}
		}
		before, outBefore := snapshotTree(t, target), snapshotTree(t, top)
		root, err := os.OpenRoot(target)
		if err != nil {
			t.Fatal(err)
		}
		err = extractAll(root, bytes.NewReader(data), nil)
		root.Close()
		if k := errs.KindOf(archiveError("/t", err)); err != nil && k != errs.Invalid && k != errs.Forbidden && k != errs.NotFound && k != errs.Conflict {
			t.Errorf("error %v maps to kind %v", err, k)
		}
		after := snapshotTree(t, target)
		if err != nil {
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("refused archive (%v) changed the target (-before +after):\n%s", err, diff)
			}
		}
		for _, e := range after {
			if strings.Contains(e, stagePrefix) {
				t.Errorf("staging left behind: %s (err %v)", e, err)
			}
		}
		// Outside the target: the same as before, target aside.
		var outAfter []string
		for _, e := range snapshotTree(t, top) {
			if !strings.HasPrefix(e, "target/") {
				outAfter = append(outAfter, e)
			}
		}
		var want []string
		for _, e := range outBefore {
			if !strings.HasPrefix(e, "target/") {
				want = append(want, e)
			}
		}
		if diff := cmp.Diff(want, outAfter); diff != "" {
			t.Errorf("archive changed files outside the target (-before +after):\n%s", diff)
		}
	})
}

// TestArchiveInDiskFull: an archive larger than the sandbox's disk is
// refused as too large (not as a path escaping the sandbox), and the
// space its staging took is free again.
func TestArchiveInDiskFull(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{DiskMB: 64})
	ctx := testCtx(t)
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tw := tar.NewWriter(pw)
		const size = 96 << 20
		if err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
			pw.CloseWithError(err)
			return
		}
		_, err := io.Copy(tw, io.LimitReader(zeroReader{}, size))
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	err := d.ArchiveIn(ctx, ref, "/workspace/full", pr)
	pr.CloseWithError(io.ErrClosedPipe)
	<-done
	if k := errs.KindOf(err); k != errs.TooLarge {
		t.Fatalf("got %v (kind %v), want kind %v", err, k, errs.TooLarge)
	}
	if got := mustSh(t, d, ref, "ls -A /workspace/full 2>&1; df -m /workspace | tail -1 | awk '{print ($4 > 48)}'"); !strings.HasSuffix(got, "1\n") || strings.Contains(got, "big") {
		t.Errorf("after the refused archive: got %q, want no entries and the space free", got)
	}
}

// tarNames reads a tar stream to its end and lists its entry names.
func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("reading the archive: %v (after %v)", err, names)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

// TestArchiveOutKernelFS: the driver reads as host root, so nothing on a
// kernel filesystem in the sandbox (its /proc) goes into an archive,
// whether the tree holds it or a symlink leads there.
func TestArchiveOutKernelFS(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	mustSh(t, d, ref, "ln -s ../proc /workspace/p")

	t.Run("Root", func(t *testing.T) {
		// The whole of / is large: read entries as they come, up to the
		// one after proc/, then stop the archive.
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := d.ArchiveOut(testCtx(t), ref, "/", pw)
			pw.CloseWithError(err)
			done <- err
		}()
		tr := tar.NewReader(pr)
		var after string
		sawProc := false
		for after == "" {
			hdr, err := tr.Next()
			if err != nil {
				t.Fatalf("reading the archive of /: %v (saw proc/: %v)", err, sawProc)
			}
			switch {
			case hdr.Name == "proc/":
				sawProc = true
			case sawProc:
				after = hdr.Name
			}
		}
		pr.CloseWithError(errors.New("enough"))
		<-done
		if strings.HasPrefix(after, "proc/") {
			t.Errorf("archive of / goes on into /proc: %s", after)
		}
	})
	for _, p := range []string{"/workspace/p/sys", "/workspace/p/sys/kernel/hostname", "/workspace/p/1"} {
		t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			var out bytes.Buffer
			err := d.ArchiveOut(testCtx(t), ref, p, &out)
			if k := errs.KindOf(err); k != errs.Forbidden && k != errs.NotFound {
				t.Errorf("got %v (kind %v), want refused", err, k)
			}
			if out.Len() > 0 {
				t.Errorf("wrote %d bytes of archive, want none", out.Len())
			}
		})
	}
}

// TestArchiveOutLiveFile: files written, replaced and removed while they
// are archived (a log, an editor's save, a build's temporary files) do not
// break the archive.
func TestArchiveOutLiveFile(t *testing.T) {
	d := newTestDriver(t, "")
	ref := create(t, d, sandbox.Spec{})
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	w := newLineWaiter("writing")
	wg.Go(func() {
		// Builtins only: it appends and now and then truncates.
		_, _ = d.Exec(ctx, ref, sandbox.ExecRequest{Argv: []string{"sh", "-c",
			`mkdir -p /workspace/live && cd /workspace/live && echo start > log && echo 0 > swapped && echo writing
			i=0; while :; do
				echo line $i >> log; i=$((i+1)); [ $((i % 500)) = 0 ] && : > log
				echo $i > tmp; [ $((i % 2)) = 0 ] && mv tmp swapped || rm tmp
			done`},
			Stdout: w})
	})
	<-w.seen
	for i := range 40 {
		var out bytes.Buffer
		if err := d.ArchiveOut(ctx, ref, "/workspace/live", &out); err != nil {
			t.Fatalf("ArchiveOut %d while the file changes: %v", i, err)
		}
		got := strings.Join(tarNames(t, out.Bytes()), " ")
		if got != "log swapped" && got != "log swapped tmp" {
			t.Fatalf("ArchiveOut %d: got entries %q, want log, swapped and perhaps tmp", i, got)
		}
	}
}
