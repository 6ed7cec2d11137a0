package repo

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox"
)

const (
	zero = "0000000000000000000000000000000000000000"
	oidA = "1111111111111111111111111111111111111111"
	oidB = "2222222222222222222222222222222222222222"
)

func pushBody(cmds ...string) string {
	var b strings.Builder
	for i, c := range cmds {
		if i == 0 {
			c += "\x00report-status side-band-64k agent=git/2.39"
		}
		b.WriteString(pkt(c + "\n"))
	}
	b.WriteString("0000PACK....")
	return b.String()
}

func TestReadPushRequest(t *testing.T) {
	body := pkt("shallow "+oidA+"\n") + pushBody(oidA+" "+oidB+" refs/heads/agent/x", zero+" "+oidB+" refs/heads/main")
	br := bufio.NewReader(strings.NewReader(body))
	p, head, err := ReadPushRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Updates) != 2 || p.Updates[0].Ref != "refs/heads/agent/x" || p.Updates[1].Ref != "refs/heads/main" || !p.Has("report-status") || !p.Has("side-band-64k") {
		t.Fatalf("got %+v", p)
	}
	rest := new(bytes.Buffer)
	rest.ReadFrom(br)
	if string(head)+rest.String() != body {
		t.Fatal("the consumed bytes and the rest do not add up to the body: the push would be forwarded changed")
	}
	for _, bad := range []string{"", "0000", pkt("push-cert\x00caps\n"), pkt("bogus\n") + "0000", "zzzz"} {
		if _, _, err := ReadPushRequest(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}

func TestCheckPush(t *testing.T) {
	g := sandbox.GitRepo{URL: "https://github.com/o/r"}
	for _, tc := range []struct {
		ref, head, newID string
		refused          bool
	}{
		{"refs/heads/agent/fix", "refs/heads/main", oidB, false},
		{"refs/heads/main", "refs/heads/main", oidB, true},
		{"refs/heads/agent/x", "refs/heads/agent/x", oidB, true}, // the default branch, even under the prefix
		{"refs/heads/master", "", oidB, true},                    // default unknown: main and master refused
		{"refs/heads/feature", "refs/heads/main", oidB, true},
		{"refs/tags/v1", "refs/heads/main", oidB, true},
		{"refs/heads/agent/old", "refs/heads/main", zero, true}, // delete
	} {
		r := CheckPush(g, tc.head, PushRequest{Updates: []RefUpdate{{Old: oidA, New: tc.newID, Ref: tc.ref}}})
		if got := r[tc.ref] != ""; got != tc.refused {
			t.Errorf("%s (head %q): refused %v, want %v (%v)", tc.ref, tc.head, got, tc.refused, r)
		}
	}
	if r := CheckPush(sandbox.GitRepo{URL: "https://github.com/o/r", PushPrefix: "bot-"}, "refs/heads/main", PushRequest{Updates: []RefUpdate{{Old: zero, New: oidB, Ref: "refs/heads/bot-1"}}}); len(r) != 0 {
		t.Errorf("a custom prefix: refused %v", r)
	}
}

func TestRefusal(t *testing.T) {
	p := PushRequest{Updates: []RefUpdate{{Old: oidA, New: oidB, Ref: "refs/heads/main"}}, Caps: []string{"report-status"}}
	got := string(refusal(p, map[string]string{"refs/heads/main": "no"}))
	if want := pkt("unpack ok\n") + pkt("ng refs/heads/main no\n") + "0000"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestReadAdvertisement(t *testing.T) {
	body := pkt("# service=git-upload-pack\n") + "0000" +
		pkt(oidA+" HEAD\x00multi_ack symref=HEAD:refs/heads/trunk agent=git/2\n") +
		pkt(oidA+" refs/heads/trunk\n") + pkt(oidB+" refs/tags/v1\n") + "0000"
	a, err := ReadAdvertisement(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if a.Head != "refs/heads/trunk" || a.Refs["refs/heads/trunk"] != oidA || a.Refs["refs/tags/v1"] != oidB {
		t.Fatalf("got %+v", a)
	}
	if _, err := ReadAdvertisement(strings.NewReader("<html>login</html>")); err == nil {
		t.Fatal("an HTML page was taken for an advertisement")
	}
}

func FuzzReadPushRequest(f *testing.F) {
	f.Add(pushBody(oidA + " " + oidB + " refs/heads/agent/x"))
	f.Add(pkt("shallow "+oidA+"\n") + "0000")
	f.Add("ffff")
	f.Fuzz(func(t *testing.T, s string) {
		br := bufio.NewReader(strings.NewReader(s))
		p, head, err := ReadPushRequest(br)
		if err != nil {
			return
		}
		if !strings.HasPrefix(s, string(head)) || len(p.Updates) == 0 {
			t.Fatalf("consumed %q of %q with %d updates", head, s, len(p.Updates))
		}
		for _, u := range p.Updates {
			if !strings.HasPrefix(u.Ref, "refs/") {
				t.Fatalf("ref %q", u.Ref)
			}
		}
	})
}

func FuzzReadAdvertisement(f *testing.F) {
	f.Add(pkt("# service=git-upload-pack\n") + "0000" + pkt(oidA+" HEAD\x00symref=HEAD:refs/heads/main\n") + "0000")
	f.Add("0000")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ReadAdvertisement(strings.NewReader(s))
	})
}
