package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		json bool
		wd   string
		pos  []string
	}{
		{[]string{"sb_1", "--json"}, true, "", []string{"sb_1"}},
		{[]string{"--json", "sb_1", "--workdir", "/tmp", "--", "sh", "-c", "exit 3"}, true, "/tmp", []string{"sb_1", "sh", "-c", "exit 3"}},
		{[]string{"sb_1", "--", "ls", "--json"}, false, "", []string{"sb_1", "ls", "--json"}},
		{[]string{"sb_1", "ls"}, false, "", []string{"sb_1", "ls"}},
	} {
		fs := flag.NewFlagSet("exec", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o := addAPIFlags(fs)
		wd := fs.String("workdir", "", "")
		pos, err := parseArgs(fs, tc.args, 1, -1, "SANDBOX")
		if err != nil || o.json != tc.json || *wd != tc.wd || !slices.Equal(pos, tc.pos) {
			t.Errorf("parseArgs(%q) = %q json=%v workdir=%q, %v; want %q json=%v workdir=%q", tc.args, pos, o.json, *wd, err, tc.pos, tc.json, tc.wd)
		}
	}
	fs := flag.NewFlagSet("sandbox get", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseArgs(fs, []string{"a", "b"}, 1, 1, "SANDBOX"); err == nil || err.Error() != "usage: sandbox get SANDBOX" {
		t.Errorf("two arguments for one: %v", err)
	}
}

func TestRemoteArg(t *testing.T) {
	for in, want := range map[string][2]string{
		"sb_1:/workspace/x": {"sb_1", "/workspace/x"},
		"sb_1:":             {"sb_1", ""},
		"sb_1:rel/x":        {"sb_1", "rel/x"},
	} {
		id, p, ok := remoteArg(in)
		if !ok || id != want[0] || p != want[1] {
			t.Errorf("remoteArg(%q) = %q %q %v", in, id, p, ok)
		}
	}
	for _, local := range []string{"./dir", "/abs/x:y", "plain", ":x", "a/b:c"} {
		if _, _, ok := remoteArg(local); ok {
			t.Errorf("remoteArg(%q) is remote", local)
		}
	}
}
