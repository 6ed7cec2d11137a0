package diskimg

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleMountinfo = `22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
46 22 7:0 / /var/lib/tb/sandboxes/a/disk rw,nosuid,nodev,relatime shared:30 - ext4 /dev/loop0 rw
47 22 7:1 / /var/lib/tb/sandboxes/with\040space/disk rw,nosuid,nodev - ext4 /dev/loop1 rw
48 46 0:50 / /var/lib/tb/sandboxes/a/disk rw - tmpfs tmpfs rw
49 22 7:2 / /no/optional/fields rw - ext4 /dev/loop2 rw,noinit_itable
`

func TestMountAt(t *testing.T) {
	for _, c := range []struct {
		point string
		want  mountEntry
		ok    bool
	}{
		// The later mount covers the earlier one.
		{"/var/lib/tb/sandboxes/a/disk", mountEntry{dev: "0:50", point: "/var/lib/tb/sandboxes/a/disk", fstype: "tmpfs", source: "tmpfs"}, true},
		{"/var/lib/tb/sandboxes/with space/disk", mountEntry{dev: "7:1", point: "/var/lib/tb/sandboxes/with space/disk", fstype: "ext4", source: "/dev/loop1"}, true},
		{"/no/optional/fields", mountEntry{dev: "7:2", point: "/no/optional/fields", fstype: "ext4", source: "/dev/loop2"}, true},
		{"/var/lib/tb/sandboxes/with\\040space/disk", mountEntry{}, false},
		{"/missing", mountEntry{}, false},
	} {
		got, ok := mountAt(sampleMountinfo, c.point)
		if ok != c.ok {
			t.Errorf("mountAt(%q): found %v, want %v", c.point, ok, c.ok)
		}
		if diff := cmp.Diff(c.want, got, cmp.AllowUnexported(mountEntry{})); diff != "" {
			t.Errorf("mountAt(%q) (-want +got):\n%s", c.point, diff)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:            "plain",
		`a\040b`:           "a b",
		`tab\011nl\012`:    "tab\tnl\n",
		`back\134slash`:    `back\slash`,
		`short\04`:         `short\04`,
		`notoctal\089`:     `notoctal\089`,
		`toolarge\777`:     `toolarge\777`,
		`trailing\`:        `trailing\`,
		`\040\040`:         "  ",
		`\\040`:            `\ `,
		`mixed\040\x\0401`: "mixed \\x 1",
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q): got %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMountinfoLine(f *testing.F) {
	for line := range strings.Lines(sampleMountinfo) {
		f.Add(strings.TrimSuffix(line, "\n"))
	}
	f.Add("1 2 3 4 5 6 - ")
	f.Add(`1 2 7:0 / /a\ b\0 rw - ext4 \134 rw`)
	f.Fuzz(func(t *testing.T, line string) {
		e, ok := parseMountinfoLine(line)
		if !ok {
			return
		}
		if e.dev == "" || e.point == "" || e.fstype == "" || e.source == "" {
			t.Errorf("parsed %q into an entry with an empty field: %+v", line, e)
		}
		if !strings.Contains(line, e.dev) {
			t.Errorf("device %q is not in the line %q", e.dev, line)
		}
	})
}

func TestMountPoints(t *testing.T) {
	want := []MountPoint{
		{Point: "/", Propagation: []string{"shared:1"}},
		{Point: "/var/lib/tb/sandboxes/a/disk", Propagation: []string{"shared:30"}},
		{Point: "/var/lib/tb/sandboxes/with space/disk"},
		{Point: "/var/lib/tb/sandboxes/a/disk"},
		{Point: "/no/optional/fields"},
	}
	if diff := cmp.Diff(want, mountPoints(sampleMountinfo+"malformed line\n")); diff != "" {
		t.Errorf("mountPoints (-want +got):\n%s", diff)
	}
}
