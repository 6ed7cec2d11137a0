// Package netpolicy gives a local sandbox outbound-only networking in its own
// network namespace: pasta (passt) for user-mode connectivity, nftables rules
// installed by the server inside the namespace for what the sandbox may
// reach, and a DNS proxy run by the server on the sandbox's loopback that
// resolves only allowed names and opens their addresses in the rules.
//
// The code inside a sandbox is hostile. It has no capabilities, so it cannot
// change the rules of its own namespace; everything it reaches outside goes
// through pasta, which forwards nothing into the sandbox and nothing from the
// sandbox's loopback to the host's.
package netpolicy

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/techbossai/techboss/internal/errs"
)

// Mode says what a sandbox may reach beyond the always-blocked ranges.
type Mode int

const (
	// Full: any public address. Private ranges stay closed unless allowed.
	Full Mode = iota
	// AllowList: only the Policy's Allow rules.
	AllowList
)

// Rule is one egress allowance: a host name (resolved through the sandbox's
// DNS proxy) or a prefix, and a port (0: any).
type Rule struct {
	// Host is a lower-case name without a trailing dot; "*.example.com"
	// matches every name below example.com (not example.com itself).
	Host   string
	Prefix netip.Prefix // valid when Host is empty
	Port   uint16
}

// String returns the rule as an allow-list entry that parses back to it.
func (r Rule) String() string {
	s := r.Host
	if s == "" {
		s = r.Prefix.String()
		if r.Port != 0 && r.Prefix.Addr().Is6() {
			s = "[" + s + "]"
		}
	}
	if r.Port != 0 {
		s += ":" + strconv.Itoa(int(r.Port))
	}
	return s
}

// Policy is what one sandbox may reach. The output chain in the sandbox's
// namespace decides, first match wins:
//
//  1. the sandbox's own lo, established connections, IPv6 neighbour
//     discovery: accept;
//  2. Operator prefixes: accept;
//  3. the host's own interface addresses, loopback, link-local (metadata),
//     multicast, IPv4-mapped IPv6: reject;
//  4. Allow prefixes: accept;
//  5. private ranges (RFC 1918, 100.64.0.0/10, 198.18.0.0/15, fc00::/7):
//     reject;
//  6. Full: accept. AllowList: addresses the DNS proxy resolved for an
//     allowed name (on the rule's port): accept;
//  7. reject (TCP reset, else ICMP administratively prohibited).
//
// So a sandbox's own list can open private ranges but never the host or
// link-local, and an allowed name that resolves into a closed range
// (DNS rebinding) stays closed.
type Policy struct {
	Mode Mode
	// Allow is the sandbox's allow-list (from ParseAllow). In Full mode only
	// its prefixes matter.
	Allow []Rule
	// Operator is the operator's list of prefixes (from ParseOperatorAllow),
	// e.g. a corporate proxy: it can open anything, the host's own
	// addresses and link-local included.
	Operator []Rule
}

// MaxAllow bounds an allow-list: each entry costs rules or sets in the
// sandbox's namespace.
const MaxAllow = 256

// ParseAllow parses a sandbox's network.allow entries: host names or
// "*.domain" wildcards, IP addresses or CIDR prefixes, each optionally with
// a port ("packages.example.com:443", "10.0.0.0/8:5432", "[fd00::/8]:443").
// Problems are reported per entry as errs.Field("network.allow[i]", reason).
func ParseAllow(entries []string) ([]Rule, error) {
	return parseRules("network.allow", entries, true)
}

// ParseOperatorAllow parses the operator's list of allowed prefixes (with
// optional ports); host names are not accepted there.
func ParseOperatorAllow(entries []string) ([]Rule, error) {
	return parseRules("network.operator_allow", entries, false)
}

func parseRules(field string, entries []string, names bool) ([]Rule, error) {
	var problems []errs.FieldError
	if len(entries) > MaxAllow {
		return nil, errs.Field(field, fmt.Sprintf("at most %d entries", MaxAllow))
	}
	rules := make([]Rule, 0, len(entries))
	seen := make(map[Rule]bool)
	for i, e := range entries {
		r, reason := parseRule(e, names)
		if reason != "" {
			problems = append(problems, errs.FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Reason: reason})
			continue
		}
		if !seen[r] {
			seen[r] = true
			rules = append(rules, r)
		}
	}
	if err := errs.Fields(problems); err != nil {
		return nil, err
	}
	return rules, nil
}

// parseRule returns the rule or why the entry is not one.
func parseRule(s string, names bool) (Rule, string) {
	if s == "" {
		return Rule{}, "empty entry"
	}
	if len(s) > 300 {
		return Rule{}, "entry too long"
	}
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return Rule{}, "missing ] after IPv6 address"
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return Rule{}, "expected :port after ]"
			}
			port = port[1:]
			if port == "" {
				return Rule{}, "empty port"
			}
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
		if port == "" {
			return Rule{}, "empty port"
		}
	}
	var r Rule
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '0' || port[0] == '+' {
			return Rule{}, fmt.Sprintf("invalid port %q (want 1-65535)", port)
		}
		r.Port = uint16(n)
	}
	if strings.ContainsAny(host, "/:") || isIPv4ish(host) {
		p, reason := parsePrefix(host)
		if reason != "" {
			return Rule{}, reason
		}
		r.Prefix = p
		return r, ""
	}
	if !names {
		return Rule{}, "want an IP address or CIDR prefix"
	}
	h, reason := parseName(host)
	if reason != "" {
		return Rule{}, reason
	}
	r.Host = h
	return r, ""
}

// isIPv4ish reports whether s is made of digits and dots only, which is
// never a usable host name (a numeric TLD does not exist) and is almost
// certainly a mistyped address.
func isIPv4ish(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func parsePrefix(s string) (netip.Prefix, string) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, "zoned addresses are not allowed"
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("invalid CIDR prefix %q", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, "IPv4-mapped IPv6 prefixes are not allowed; use the IPv4 form"
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Sprintf("host bits set; did you mean %s?", p.Masked())
		}
		return p, ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Sprintf("invalid IP address %q", s)
	}
	if a.Is4In6() {
		return netip.Prefix{}, "IPv4-mapped IPv6 addresses are not allowed; use the IPv4 form"
	}
	return netip.PrefixFrom(a, a.BitLen()), ""
}

// parseName validates a DNS name (letters, digits, hyphens, underscores in
// labels of 1-63 characters, 253 in all), lower-cases it and drops a
// trailing dot. A leading "*." makes it a wildcard.
func parseName(s string) (string, string) {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	body := strings.TrimPrefix(s, "*.")
	if body == "" {
		return "", "empty host name"
	}
	if len(body) > 253 {
		return "", "host name longer than 253 characters"
	}
	labels := strings.Split(body, ".")
	for _, l := range labels {
		if l == "" {
			return "", "empty label in host name"
		}
		if len(l) > 63 {
			return "", "host name label longer than 63 characters"
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", "host name label starts or ends with '-'"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Sprintf("invalid character %q in host name", c)
			}
		}
	}
	if body != s && len(labels) < 2 {
		return "", "wildcard must cover a domain with at least two labels (*.example.com)"
	}
	return s, ""
}

// matchName returns the ports (0: any) for which rules allow name (lower
// case, no trailing dot), and whether any rule matched.
func matchName(rules []Rule, name string) ([]uint16, bool) {
	var ports []uint16
	matched := false
	for _, r := range rules {
		if r.Host == "" {
			continue
		}
		ok := r.Host == name
		if w, isWild := strings.CutPrefix(r.Host, "*."); isWild {
			ok = strings.HasSuffix(name, "."+w)
		}
		if ok {
			matched = true
			ports = append(ports, r.Port)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports, matched
}
