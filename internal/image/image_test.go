package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/techbossai/techboss/internal/errs"
)

func TestParseAndPlan(t *testing.T) {
	cmds := []string{
		"ARG VERSION=1.2",
		`ENV A=1 B="two words" C=$VERSION`,
		"ENV OLD style value",
		"RUN echo $A && make install",
		"WORKDIR /src",
		"WORKDIR sub",
		`RUN ["/bin/echo", "exec form"]`,
		"USER app:app",
		`SHELL ["/bin/bash", "-o", "pipefail", "-c"]`,
		"RUN cat x | wc -l",
	}
	ins, err := Parse(cmds)
	if err != nil {
		t.Fatal(err)
	}
	steps, cfg, err := Plan(Config{Env: []string{"PATH=/bin"}}, ins)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := Config{
		Env:        []string{"PATH=/bin", "A=1", "B=two words", "C=1.2", "OLD=style value"},
		WorkingDir: "/src/sub",
		User:       "app:app",
		Shell:      []string{"/bin/bash", "-o", "pipefail", "-c"},
	}
	if d := cmp.Diff(wantCfg, cfg); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
	want := []Step{
		{Argv: []string{"/bin/sh", "-c", "echo $A && make install"}, Env: []string{"PATH=/bin", "A=1", "B=two words", "C=1.2", "OLD=style value", "VERSION=1.2"}, Dir: "/", User: ""},
		{Argv: []string{"/bin/echo", "exec form"}, Env: []string{"PATH=/bin", "A=1", "B=two words", "C=1.2", "OLD=style value", "VERSION=1.2"}, Dir: "/src/sub", User: ""},
		{Argv: []string{"/bin/bash", "-o", "pipefail", "-c", "cat x | wc -l"}, Env: []string{"PATH=/bin", "A=1", "B=two words", "C=1.2", "OLD=style value", "VERSION=1.2"}, Dir: "/src/sub", User: "app:app"},
	}
	for i := range steps {
		steps[i].Raw = ""
	}
	if d := cmp.Diff(want, steps); d != "" {
		t.Errorf("steps (-want +got):\n%s", d)
	}
}

func TestParseRejects(t *testing.T) {
	for _, c := range []struct {
		cmds  []string
		field string
	}{
		{[]string{"RUN true", "COPY . /app"}, "dockerfile_commands[1]"},
		{[]string{"FROM debian"}, "dockerfile_commands[0]"},
		{[]string{"ADD http://x /y"}, "dockerfile_commands[0]"},
		{[]string{"RUN --mount=type=cache,target=/x true"}, "dockerfile_commands[0]"},
		{[]string{"RUN a\nRUN b"}, "dockerfile_commands[0]"},
		{[]string{"  "}, "dockerfile_commands[0]"},
		{[]string{"SHELL /bin/bash"}, "dockerfile_commands[0]"},
		{[]string{"ENTRYPOINT [\"x\"]"}, "dockerfile_commands[0]"},
		{[]string{"RUN true", "RUN <<EOF\necho hi\nEOF"}, "dockerfile_commands[1]"},
	} {
		_, err := Parse(c.cmds)
		e, ok := errs.Public(err)
		if !ok || e.Kind != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Field != c.field {
			t.Errorf("Parse(%q): got %v, want invalid naming %s", c.cmds, err, c.field)
		}
	}
}

func TestBuildKey(t *testing.T) {
	a := BuildKey("sha256:1", []string{"RUN a", "RUN b"})
	if a != BuildKey("sha256:1", []string{"RUN a", "RUN b"}) {
		t.Error("not deterministic")
	}
	for _, other := range []string{
		BuildKey("sha256:2", []string{"RUN a", "RUN b"}),
		BuildKey("sha256:1", []string{"RUN a\x00RUN b"}),
		BuildKey("sha256:1", []string{"RUN ab"}),
		BuildKey("sha256:1", []string{"RUN b", "RUN a"}),
	} {
		if other == a {
			t.Error("different inputs share a key")
		}
	}
}

func tarOf(t testing.TB, entries ...tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		h := h
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = "data"
			h.Size = 4
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	return b.Bytes()
}

func TestUntarSlip(t *testing.T) {
	for name, archive := range map[string][]byte{
		"dotdot":        tarOf(t, tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"abs-dotdot":    tarOf(t, tar.Header{Name: "/../evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"inner-dotdot":  tarOf(t, tar.Header{Name: "a/../../evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"symlink-dir":   tarOf(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../"}, tar.Header{Name: "l/evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"symlink-abs":   tarOf(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, tar.Header{Name: "l/evil", Typeflag: tar.TypeReg, Mode: 0o644}),
		"symlink-file":  tarOf(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../evil"}, tar.Header{Name: "l", Typeflag: tar.TypeReg, Mode: 0o644}),
		"hardlink-out":  tarOf(t, tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../outside-file"}),
		"hardlink-syml": tarOf(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../"}, tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "l/outside-file"}),
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			if err := os.WriteFile(filepath.Join(parent, "outside-file"), []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(parent, "target")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			root, err := os.OpenRoot(target)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			_ = Untar(root, bytes.NewReader(archive), UntarOptions{})
			assertParentUntouched(t, parent)
		})
	}
	// A regular file replacing a symlink replaces the link, not its target.
	parent := t.TempDir()
	_ = os.WriteFile(filepath.Join(parent, "outside-file"), []byte("keep"), 0o644)
	_ = os.Mkdir(filepath.Join(parent, "target"), 0o755)
	_ = os.Symlink("../outside-file", filepath.Join(parent, "target", "l"))
	root, _ := os.OpenRoot(filepath.Join(parent, "target"))
	defer root.Close()
	if err := Untar(root, bytes.NewReader(tarOf(t, tar.Header{Name: "l", Typeflag: tar.TypeReg, Mode: 0o644})), UntarOptions{}); err != nil {
		t.Fatal(err)
	}
	assertParentUntouched(t, parent)
}

func assertParentUntouched(t *testing.T, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if e.Name() != "target" && e.Name() != "outside-file" {
			t.Errorf("entry %q created outside the target", e.Name())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "outside-file")); string(b) != "keep" {
		t.Errorf("outside file changed to %q", b)
	}
	if fi, err := os.Stat(filepath.Join(parent, "outside-file")); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink != 1 {
			t.Errorf("outside file got a hard link into the target (nlink %d)", st.Nlink)
		}
	}
}

func TestUntarLimit(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	err = Untar(root, bytes.NewReader(tarOf(t, tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644})), UntarOptions{MaxBytes: 2})
	if err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("got %v, want a size error", err)
	}
}

func FuzzUntar(f *testing.F) {
	f.Add(tarOf(f, tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../"}, tar.Header{Name: "l/x", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(f, tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "d/../../x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		target := filepath.Join(parent, "target")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(parent, "outside-file"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		root, err := os.OpenRoot(target)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		_ = Untar(root, bytes.NewReader(data), UntarOptions{MaxBytes: 1 << 20, ChrootSymlinks: len(data)%2 == 0})
		assertParentUntouched(t, parent)
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"RUN echo hi", "ENV A=1 B=2", "ARG X", `SHELL ["a"]`, "COPY a b", "RUN \\\n x", "WORKDIR $HOME/x", "USER ${U:-root}", "RUN <<EOF\nx\nEOF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		ins, err := Parse([]string{cmd})
		if err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) == 0 || e.Fields[0].Field != "dockerfile_commands[0]" {
				t.Fatalf("Parse(%q): got %v, want an invalid error naming dockerfile_commands[0]", cmd, err)
			}
			return
		}
		if len(ins) != 1 || !supported[ins[0].Cmd] {
			t.Fatalf("Parse(%q) = %+v", cmd, ins)
		}
		_, _, _ = Plan(Config{}, ins)
	})
}

func TestUntarChrootSymlinks(t *testing.T) {
	parent := t.TempDir()
	if err := os.WriteFile(filepath.Join(parent, "outside-file"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(parent, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	archive := tarOf(t,
		tar.Header{Name: "run/", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "var/", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "var/run", Typeflag: tar.TypeSymlink, Linkname: "/run"},
		tar.Header{Name: "var/run/a.pid", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../run"},
		tar.Header{Name: "up/b", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "loop", Typeflag: tar.TypeSymlink, Linkname: "loop"},
	)
	if err := Untar(root, bytes.NewReader(archive), UntarOptions{ChrootSymlinks: true}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"run/a.pid", "run/b"} {
		if _, err := os.Stat(filepath.Join(target, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	assertParentUntouched(t, parent)
	if err := Untar(root, bytes.NewReader(tarOf(t, tar.Header{Name: "loop/x", Typeflag: tar.TypeReg, Mode: 0o644})), UntarOptions{ChrootSymlinks: true}); err == nil {
		t.Errorf("symlink loop: got nil error")
	}
	// Without the option the same links are refused.
	root2, _ := os.OpenRoot(t.TempDir())
	defer root2.Close()
	if err := Untar(root2, bytes.NewReader(archive), UntarOptions{}); err == nil {
		t.Errorf("strict mode followed an absolute symlink")
	}
}

// TestUntarNeverWritesThrough: an entry already at a name (a hard link to
// another file, a symlink to a directory) is replaced, never written or
// changed through, as a sandbox racing an extraction into its tree could
// otherwise aim it at a file of its choosing.
func TestUntarNeverWritesThrough(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "other"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "realdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("realdir", filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	archive := tarOf(t,
		tar.Header{Name: "hard", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "dirlink/", Typeflag: tar.TypeDir, Mode: 0o755},
	)
	if err := Untar(root, bytes.NewReader(archive), UntarOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "other")); string(b) != "keep" {
		t.Errorf("the file hard-linked at the entry's name now holds %q, want keep", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hard")); string(b) != "data" {
		t.Errorf("hard holds %q, want the archive's data", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "realdir")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the symlink's target directory: %v, %v; want mode 0700 unchanged", fi, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "dirlink")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("dirlink: %v, %v; want a directory with mode 0755", fi, err)
	}
}

// TestUntarShiftIDs: every owner Untar sets goes through ShiftIDs.
func TestUntarShiftIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	shift := func(uid, gid int) (int, int) { return 100000 + uid, 100000 + gid }
	archive := tarOf(t,
		tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1001},
		tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, Gid: 0},
		tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "f", Uid: 1000, Gid: 1000},
	)
	for name, c := range map[string]struct {
		o    UntarOptions
		want map[string][2]uint32
	}{
		"owners":   {UntarOptions{Owners: true, ShiftIDs: shift}, map[string][2]uint32{"d": {101000, 101001}, "d/f": {100000, 100000}, "d/l": {101000, 101000}}},
		"chown-to": {UntarOptions{ChownTo: &[2]int{1000, 1000}, ShiftIDs: shift}, map[string][2]uint32{"d": {101000, 101000}, "d/f": {101000, 101000}, "d/l": {101000, 101000}}},
		"root":     {UntarOptions{ShiftIDs: shift}, map[string][2]uint32{"d": {100000, 100000}, "d/f": {100000, 100000}, "d/l": {100000, 100000}}},
		"no-shift": {UntarOptions{Owners: true}, map[string][2]uint32{"d": {1000, 1001}, "d/f": {0, 0}, "d/l": {1000, 1000}}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			root, err := os.OpenRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			if err := Untar(root, bytes.NewReader(archive), c.o); err != nil {
				t.Fatal(err)
			}
			got := map[string][2]uint32{}
			for p := range c.want {
				fi, err := os.Lstat(filepath.Join(dir, p))
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				got[p] = [2]uint32{st.Uid, st.Gid}
				if p == "d/f" && fi.Mode()&os.ModeSetuid == 0 {
					t.Errorf("d/f lost its setuid bit (mode %v)", fi.Mode())
				}
			}
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("owners (-want +got):\n%s", d)
			}
		})
	}
}
