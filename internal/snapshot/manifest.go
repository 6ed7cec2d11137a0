// Package snapshot takes versioned, content-addressed snapshots of a
// workspace directory into a blob.Store, and restores, diffs, prunes and
// imports them.
//
// Layout under a location's prefix P:
//
//	P/.techboss/blobs/<sha256[:2]>/<sha256>       file contents, shared by every version
//	P/.techboss/versions/<UTC timestamp>.json.gz  one manifest per version, written last
//
// A version exists exactly when its manifest does, and a manifest is only
// written once every blob it names is stored, so a version is complete or
// absent. Everything else under P (outside .techboss/) is plain objects:
// what init_from_s3 copies in, and what mirror mode writes.
//
// A workspace is written by its sandbox, which is hostile: while the host
// snapshots, mirrors, restores or imports, it may swap any directory for a
// symlink out of the workspace and back (renameat2 RENAME_EXCHANGE in a
// loop), so a path string resolved from the top can land on the host.
// Every host-side access of a sandbox-writable tree goes through tree
// (tree.go): directory handles (os.Root) the kernel keeps us beneath,
// entered one entry at a time and checked to be what Lstat saw; symlinks
// are recorded and recreated, never followed, not even inside the tree;
// content is read and written only through fds checked to be the regular
// file at that name. An entry that changes under us is left out of a
// snapshot, or fails a restore or import with errs.Conflict; the host is
// never touched. Ownership is recorded as the sandbox sees it
// (sandbox.IDMap.FromHost) and restored as the host stores it (ToHost).
package snapshot

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/techbossai/techboss/internal/errs"
)

// Area is the directory under a prefix that holds versions and blobs.
const Area = ".techboss"

// FormatVersion is the manifest format this package writes.
const FormatVersion = 1

// Type is an entry's file type.
type Type string

// The entry types. Other file types (sockets, FIFOs, devices) are skipped.
const (
	File    Type = "file"
	Dir     Type = "dir"
	Symlink Type = "symlink"
)

// Entry is one path of a version.
type Entry struct {
	Path   string `json:"path"` // slash-separated, relative to the workspace root
	Type   Type   `json:"type"`
	Mode   uint32 `json:"mode"` // Unix permission bits, including setuid/setgid/sticky (07777)
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // hex; files only
	Target string `json:"target,omitempty"` // symlinks only; never followed
	// UID and GID are the owner; restored when the server runs as root (the
	// agent may run as an image user who must keep write access).
	UID uint32 `json:"uid,omitempty"`
	GID uint32 `json:"gid,omitempty"`
	// MTime is the modification time (unix ns). With Inode and CTime it lets
	// the next snapshot skip re-reading unchanged files.
	MTime int64  `json:"mtime_ns,omitempty"`
	CTime int64  `json:"ctime_ns,omitempty"`
	Inode uint64 `json:"ino,omitempty"`
}

// Manifest is one version: every path of the workspace, sorted.
type Manifest struct {
	Format    int       `json:"format"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// StartedAt is when the walk began; files modified after it (minus the
	// filesystem's time granularity) are not trusted by the stat cache.
	StartedAt time.Time `json:"started_at"`
	Files     int       `json:"files"`
	Bytes     int64     `json:"bytes"`
	Entries   []Entry   `json:"entries"`
}

// nameLayout names versions: sortable, UTC, millisecond precision.
const nameLayout = "20060102T150405.000Z"

// VersionName returns the version name for t.
func VersionName(t time.Time) string { return t.UTC().Format(nameLayout) }

// ParseVersionName parses a version name back to its time.
func ParseVersionName(name string) (time.Time, error) {
	t, err := time.Parse(nameLayout, name)
	if err != nil || VersionName(t) != name {
		return time.Time{}, errs.E(errs.Invalid, "invalid snapshot version name %q", name)
	}
	return t, nil
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func fileMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// ValidatePath checks a manifest or import path: relative, slash-separated,
// clean (no empty, "." or ".." segments), valid UTF-8 without NUL, at most
// 4096 bytes with segments of at most 255.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return errs.E(errs.Invalid, "empty path")
	case len(p) > 4096:
		return errs.E(errs.Invalid, "path longer than 4096 bytes")
	case !utf8.ValidString(p):
		return errs.E(errs.Invalid, "path %q is not valid UTF-8", p)
	case strings.ContainsRune(p, 0):
		return errs.E(errs.Invalid, "path %q contains NUL", p)
	case strings.HasPrefix(p, "/"):
		return errs.E(errs.Invalid, "absolute path %q", p)
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return errs.E(errs.Invalid, "path %q has an empty, '.' or '..' segment", p)
		case len(seg) > 255:
			return errs.E(errs.Invalid, "path %q has a segment longer than 255 bytes", p)
		}
	}
	return nil
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func isHexSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Validate checks a manifest read from storage before anything acts on it:
// valid paths, known types, no duplicates, and every entry's parent is a
// directory entry of the same manifest, so no path runs through a symlink
// or a file.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return errs.E(errs.Invalid, "manifest format %d not supported", m.Format)
	}
	types := make(map[string]Type, len(m.Entries))
	for i, e := range m.Entries {
		if err := ValidatePath(e.Path); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		if i > 0 && m.Entries[i-1].Path >= e.Path {
			return errs.E(errs.Invalid, "manifest: entries not sorted or duplicated at %q", e.Path)
		}
		if _, dup := types[e.Path]; dup {
			return errs.E(errs.Invalid, "manifest: duplicate path %q", e.Path)
		}
		if e.Mode > 0o7777 {
			return errs.E(errs.Invalid, "manifest: %q: mode %o out of range", e.Path, e.Mode)
		}
		switch e.Type {
		case File:
			if !isHexSHA(e.SHA256) || e.Size < 0 {
				return errs.E(errs.Invalid, "manifest: %q: bad sha256 or size", e.Path)
			}
		case Dir:
		case Symlink:
			if e.Target == "" || strings.ContainsRune(e.Target, 0) || len(e.Target) > 4096 {
				return errs.E(errs.Invalid, "manifest: %q: bad symlink target", e.Path)
			}
		default:
			return errs.E(errs.Invalid, "manifest: %q: unknown type %q", e.Path, e.Type)
		}
		types[e.Path] = e.Type
	}
	for _, e := range m.Entries {
		if p := parentOf(e.Path); p != "" {
			if t, ok := types[p]; !ok || t != Dir {
				return errs.E(errs.Invalid, "manifest: %q: parent %q is not a directory of the manifest", e.Path, p)
			}
		}
	}
	return nil
}

// Encode writes the manifest as gzip-compressed JSON.
func (m *Manifest) Encode(w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(zw).Encode(m); err != nil {
		return err
	}
	return zw.Close()
}

// maxManifest bounds a decoded manifest (a hostile store cannot exhaust memory).
const maxManifest = 1 << 30

// DecodeManifest reads and validates a manifest written by Encode.
func DecodeManifest(r io.Reader) (*Manifest, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "manifest is not gzip")
	}
	defer zr.Close()
	dec := json.NewDecoder(io.LimitReader(zr, maxManifest))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "manifest is not valid JSON")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) encodeBytes() ([]byte, error) {
	var b bytes.Buffer
	if err := m.Encode(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Changes is the difference between two versions.
type Changes struct {
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
}

func sameContent(a, b Entry) bool {
	return a.Type == b.Type && a.Mode == b.Mode && a.SHA256 == b.SHA256 && a.Size == b.Size && a.Target == b.Target
}

// Diff lists the paths added, removed and changed (type, mode, content or
// symlink target) going from a to b. Either may be nil (an empty tree).
func Diff(a, b *Manifest) Changes {
	var ae, be []Entry
	if a != nil {
		ae = a.Entries
	}
	if b != nil {
		be = b.Entries
	}
	c := Changes{Added: []string{}, Removed: []string{}, Changed: []string{}}
	i, j := 0, 0
	for i < len(ae) || j < len(be) {
		switch {
		case j == len(be) || i < len(ae) && ae[i].Path < be[j].Path:
			c.Removed = append(c.Removed, ae[i].Path)
			i++
		case i == len(ae) || be[j].Path < ae[i].Path:
			c.Added = append(c.Added, be[j].Path)
			j++
		default:
			if !sameContent(ae[i], be[j]) {
				c.Changed = append(c.Changed, be[j].Path)
			}
			i++
			j++
		}
	}
	return c
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
}
