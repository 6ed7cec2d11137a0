package snapshot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/snapshot"
)

const sha = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func manifestOf(es ...snapshot.Entry) *snapshot.Manifest {
	return &snapshot.Manifest{Format: snapshot.FormatVersion, Name: "20260101T000000.000Z", Entries: es}
}

func file(p string) snapshot.Entry {
	return snapshot.Entry{Path: p, Type: snapshot.File, Mode: 0o644, SHA256: sha}
}
func dir(p string) snapshot.Entry { return snapshot.Entry{Path: p, Type: snapshot.Dir, Mode: 0o755} }
func link(p, target string) snapshot.Entry {
	return snapshot.Entry{Path: p, Type: snapshot.Symlink, Mode: 0o777, Target: target}
}

// hostile are manifests Restore must refuse before touching the disk.
var hostile = map[string]*snapshot.Manifest{
	"dotdot":            manifestOf(file("../escape")),
	"inner dotdot":      manifestOf(dir("a"), file("a/../../escape")),
	"absolute":          manifestOf(file("/etc/escape")),
	"through symlink":   manifestOf(link("l", "/tmp"), file("l/escape")),
	"through rel link":  manifestOf(link("l", ".."), file("l/escape")),
	"through file":      manifestOf(file("f"), file("f/x")),
	"missing parent":    manifestOf(file("nodir/x")),
	"dot":               manifestOf(file("./x")),
	"empty segment":     manifestOf(dir("a"), file("a//x")),
	"trailing slash":    manifestOf(dir("a/")),
	"nul":               manifestOf(file("a\x00b")),
	"duplicate":         manifestOf(file("x"), file("x")),
	"unsorted":          manifestOf(file("b"), file("a")),
	"bad sha":           manifestOf(snapshot.Entry{Path: "x", Type: snapshot.File, SHA256: "../../etc"}),
	"unknown type":      manifestOf(snapshot.Entry{Path: "x", Type: "device"}),
	"mode out of range": manifestOf(snapshot.Entry{Path: "x", Type: snapshot.Dir, Mode: 0o170000}),
	"empty target":      manifestOf(link("x", "")),
	"bad format":        {Format: 99},
}

func TestValidateRefusesHostileManifests(t *testing.T) {
	for name, m := range hostile {
		if err := m.Validate(); errs.KindOf(err) != errs.Invalid {
			t.Errorf("%s: Validate = %v, want Invalid", name, err)
		}
	}
	ok := manifestOf(dir("a"), link("a/l", "/etc/passwd"), file("a/x"), file("b"))
	if err := ok.Validate(); err != nil {
		t.Errorf("valid manifest refused: %v", err)
	}
}

// TestRestoreRefusesHostileManifests stores hostile manifests as versions
// and checks Restore refuses them and writes nothing outside the target.
func TestRestoreRefusesHostileManifests(t *testing.T) {
	ctx := context.Background()
	store := fsBackend().open(t)
	loc := snapshot.Location{Store: store}
	root := t.TempDir()
	target := filepath.Join(root, "ws")
	for name, m := range hostile {
		var b bytes.Buffer
		must(t, m.Encode(&b))
		must(t, store.Put(ctx, ".techboss/versions/20260101T000000.000Z.json.gz", bytes.NewReader(b.Bytes()), int64(b.Len())))
		_, err := snapshot.New(snapshot.Config{}).Restore(ctx, loc, "20260101T000000.000Z", target, snapshot.RestoreOptions{})
		if err == nil {
			t.Errorf("%s: Restore succeeded, want refusal", name)
		}
		entries, _ := os.ReadDir(root)
		if len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "ws" {
			t.Errorf("%s: Restore wrote outside the target: %v", name, entries)
		}
	}
}

func FuzzManifest(f *testing.F) {
	for _, m := range hostile {
		b, _ := json.Marshal(m)
		f.Add(b)
	}
	good, _ := json.Marshal(manifestOf(dir("a"), link("a/l", "../.."), file("a/x")))
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m snapshot.Manifest
		if json.Unmarshal(data, &m) != nil {
			return
		}
		if m.Validate() != nil {
			return
		}
		// Whatever passes validation stays inside the root and never runs
		// through a symlink or file of the same manifest.
		types := map[string]snapshot.Type{}
		for _, e := range m.Entries {
			types[e.Path] = e.Type
			clean := filepath.Clean("/root/" + e.Path)
			if !strings.HasPrefix(clean, "/root/") || clean != "/root/"+e.Path {
				t.Fatalf("accepted path %q escapes or is not clean", e.Path)
			}
		}
		for _, e := range m.Entries {
			for p := filepath.Dir(e.Path); p != "."; p = filepath.Dir(p) {
				if types[p] != snapshot.Dir {
					t.Fatalf("accepted %q whose ancestor %q is %q", e.Path, p, types[p])
				}
			}
		}
	})
}

func TestDecodeManifestRejectsGarbage(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("not gzip"), {0x1f, 0x8b, 0, 0}} {
		if _, err := snapshot.DecodeManifest(bytes.NewReader(in)); err == nil || errors.Is(err, errs.ErrNotFound) {
			t.Errorf("DecodeManifest(%q) = %v, want an error", in, err)
		}
	}
}
