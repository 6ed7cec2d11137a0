package netpolicy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/techbossai/techboss/internal/errs"
)

func TestParseAllow(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		in   string
		want Rule
		bad  string // substring of the reason
	}{
		{in: "api.github.com", want: Rule{Host: "api.github.com"}},
		{in: "API.GitHub.com.", want: Rule{Host: "api.github.com"}},
		{in: "registry.pkgs.test:443", want: Rule{Host: "registry.pkgs.test", Port: 443}},
		{in: "*.githubusercontent.com", want: Rule{Host: "*.githubusercontent.com"}},
		{in: "_acme.example.com", want: Rule{Host: "_acme.example.com"}},
		{in: "localhost", want: Rule{Host: "localhost"}},
		{in: "10.0.0.0/8", want: Rule{Prefix: pfx("10.0.0.0/8")}},
		{in: "10.0.0.0/8:5432", want: Rule{Prefix: pfx("10.0.0.0/8"), Port: 5432}},
		{in: "192.0.2.7", want: Rule{Prefix: pfx("192.0.2.7/32")}},
		{in: "192.0.2.7:80", want: Rule{Prefix: pfx("192.0.2.7/32"), Port: 80}},
		{in: "fd00::/8", want: Rule{Prefix: pfx("fd00::/8")}},
		{in: "[fd00::/8]:443", want: Rule{Prefix: pfx("fd00::/8"), Port: 443}},
		{in: "2001:db8::1", want: Rule{Prefix: pfx("2001:db8::1/128")}},
		{in: "[2001:db8::1]:22", want: Rule{Prefix: pfx("2001:db8::1/128"), Port: 22}},
		{in: "", bad: "empty"},
		{in: "10.1.2.3/8", bad: "did you mean 10.0.0.0/8"},
		{in: "10.0.0.0/33", bad: "invalid CIDR"},
		{in: "10.0.0", bad: "invalid IP"},
		{in: "300.1.1.1", bad: "invalid IP"},
		{in: "example.com:0", bad: "invalid port"},
		{in: "example.com:65536", bad: "invalid port"},
		{in: "example.com:080", bad: "invalid port"},
		{in: "example.com:", bad: "empty port"},
		{in: "example.com:http", bad: "invalid port"},
		{in: "[fd00::1", bad: "missing ]"},
		{in: "[fd00::1]443", bad: "expected :port"},
		{in: "fe80::1%eth0", bad: "zoned"},
		{in: "::ffff:10.0.0.1", bad: "IPv4-mapped"},
		{in: "exa mple.com", bad: "invalid character"},
		{in: "http://example.com", bad: "invalid"},
		{in: "-a.example.com", bad: "starts or ends"},
		{in: "a..b", bad: "empty label"},
		{in: "*.com", bad: "wildcard"},
		{in: "*", bad: "invalid character"},
		{in: "a.*.example.com", bad: "invalid character"},
		{in: strings.Repeat("a", 64) + ".com", bad: "63"},
		{in: strings.Repeat("abcdefghi.", 26) + "com", bad: "253"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAllow([]string{tt.in})
			if tt.bad != "" {
				var e *errs.Error
				if !errors.As(err, &e) || e.Kind != errs.Invalid || len(e.Fields) != 1 {
					t.Fatalf("ParseAllow(%q) = %v, %v; want an Invalid field error", tt.in, got, err)
				}
				if e.Fields[0].Field != "network.allow[0]" || !strings.Contains(e.Fields[0].Reason, tt.bad) {
					t.Errorf("ParseAllow(%q) field %+v, want network.allow[0] with %q", tt.in, e.Fields[0], tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAllow(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff([]Rule{tt.want}, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("ParseAllow(%q) (-want +got):\n%s", tt.in, diff)
			}
			// A rule prints as an entry that parses back to itself.
			again, err := ParseAllow([]string{got[0].String()})
			if err != nil || again[0] != got[0] {
				t.Errorf("round trip of %q via %q: %v, %v", tt.in, got[0].String(), again, err)
			}
		})
	}
}

func TestParseAllowReportsEveryEntry(t *testing.T) {
	_, err := ParseAllow([]string{"ok.example", "bad..name", "10.0.0.0/8", "1.2.3.4:0"})
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want *errs.Error", err)
	}
	var fields []string
	for _, f := range e.Fields {
		fields = append(fields, f.Field)
	}
	if diff := cmp.Diff([]string{"network.allow[1]", "network.allow[3]"}, fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
}

func TestParseOperatorAllowRefusesNames(t *testing.T) {
	if _, err := ParseOperatorAllow([]string{"proxy.corp.example:3128"}); err == nil {
		t.Fatal("operator list took a host name; want prefixes only")
	}
	r, err := ParseOperatorAllow([]string{"10.1.2.3:3128"})
	if err != nil || r[0].Port != 3128 {
		t.Fatalf("got %v, %v", r, err)
	}
}

func TestMatchName(t *testing.T) {
	rules, err := ParseAllow([]string{"api.github.com", "api.github.com:443", "*.pkgs.test:443", "example.com:80"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		ports []uint16
		ok    bool
	}{
		{"api.github.com", []uint16{0, 443}, true},
		{"registry.pkgs.test", []uint16{443}, true},
		{"a.b.pkgs.test", []uint16{443}, true},
		{"pkgs.test", nil, false},
		{"evilpkgs.test", nil, false},
		{"github.com", nil, false},
		{"example.com", []uint16{80}, true},
		{"example.com.evil", nil, false},
	}
	for _, tt := range tests {
		ports, ok := matchName(rules, tt.name)
		if ok != tt.ok || !cmp.Equal(ports, tt.ports) {
			t.Errorf("matchName(%q) = %v, %v; want %v, %v", tt.name, ports, ok, tt.ports, tt.ok)
		}
	}
}

// FuzzParseAllow: the parser never panics, accepts only what round-trips,
// and a host rule is always a valid lower-case name.
func FuzzParseAllow(f *testing.F) {
	for _, s := range []string{"api.github.com", "registry.pkgs.test:443", "10.0.0.0/8", "[fd00::/8]:443",
		"*.example.com", "::1", "1.2.3.4:65535", "[::ffff:1.2.3.4]:1", "a..b", "fe80::1%lo", "é.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseAllow([]string{s})
		if err != nil {
			return
		}
		r := rules[0]
		if r.Host == "" && !r.Prefix.IsValid() {
			t.Fatalf("ParseAllow(%q) = %+v: neither host nor prefix", s, r)
		}
		if r.Host != "" && (r.Host != strings.ToLower(r.Host) || strings.ContainsAny(r.Host, ":/[]% ")) {
			t.Fatalf("ParseAllow(%q) host %q", s, r.Host)
		}
		again, err := ParseAllow([]string{r.String()})
		if err != nil || again[0] != r {
			t.Fatalf("ParseAllow(%q) = %+v prints as %q which parses to %v, %v", s, r, r.String(), again, err)
		}
	})
}
