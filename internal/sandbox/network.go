package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// The network modes of a Spec.
const (
	NetworkNone  = "none"  // loopback only (the default)
	NetworkFull  = "full"  // outbound to public addresses
	NetworkAllow = "allow" // outbound only to the listed names and ranges
)

// Network is a sandbox's network. In JSON it is the string "none" or
// "full", or an object {"allow": ["api.github.com", "packages.example.com:443",
// "10.0.0.0/8"]} naming the only hosts (resolved by the server) and CIDRs,
// each with an optional port, the sandbox may reach.
type Network struct {
	Mode  string   // NetworkNone, NetworkFull or NetworkAllow ("" before defaults)
	Allow []string // with NetworkAllow
}

// IsZero reports whether n was not given.
func (n Network) IsZero() bool { return n.Mode == "" && n.Allow == nil }

// Outbound reports whether the sandbox reaches anything beyond loopback.
func (n Network) Outbound() bool { return n.Mode == NetworkFull || n.Mode == NetworkAllow }

// MarshalJSON writes the string form, or the object for an allow-list.
func (n Network) MarshalJSON() ([]byte, error) {
	if n.Mode == NetworkAllow {
		allow := n.Allow
		if allow == nil {
			allow = []string{}
		}
		return json.Marshal(struct {
			Allow []string `json:"allow"`
		}{allow})
	}
	return json.Marshal(n.Mode)
}

// UnmarshalJSON reads either form; an object must have exactly "allow".
func (n *Network) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*n = Network{}
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*n = Network{Mode: s}
		return nil
	}
	var o struct {
		Allow *[]string `json:"allow"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return errs.Field("network", `must be "none", "full" or {"allow": [...]}`)
	}
	if o.Allow == nil {
		return errs.Field("network", `an object needs "allow", a list of host names or CIDRs`)
	}
	*n = Network{Mode: NetworkAllow, Allow: *o.Allow}
	return nil
}

// JSONSchema is the OpenAPI schema of the field.
func (Network) JSONSchema() map[string]any {
	return map[string]any{
		"oneOf": []any{
			map[string]any{"type": "string", "enum": []any{NetworkNone, NetworkFull}},
			map[string]any{
				"type": "object", "required": []any{"allow"}, "additionalProperties": false,
				"properties": map[string]any{"allow": map[string]any{
					"type": "array", "maxItems": 256,
					"items": map[string]any{"type": "string", "description": "a host name (*.domain for its subdomains), an IP address or a CIDR, with an optional :port"},
				}},
			},
		},
		"description": `"none" (loopback only, the default), "full" (outbound to public addresses; private, link-local and host addresses stay closed), or {"allow": [...]}`,
	}
}

// BlockedRanges are addresses nothing a sandbox drives reaches unless the
// operator allows them: loopback, "this network", link-local (cloud
// metadata lives at 169.254.169.254 and fd00:ec2::254), multicast,
// broadcast, and IPv4-mapped IPv6. NAT64 (64:ff9b::/96) stays open: on an
// IPv6-only host it is the way to the IPv4 internet. The local driver's
// network policy and the run service's MCP proxy both refuse them.
var BlockedRanges = mustPrefixes(
	"127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
	"::1/128", "::/128", "fe80::/10", "ff00::/8", "::ffff:0:0/96", "fd00:ec2::254/128",
)

// PrivateRanges are closed unless an allow-list or the operator names a
// prefix inside them. Documentation ranges (TEST-NET) stay open.
var PrivateRanges = mustPrefixes(
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15",
	"fc00::/7",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// ServerMayDial reports whether the server may connect to ip on a user's
// behalf (an MCP server, a git host, a webhook): not a blocked or private
// address unless allow (the operator's ranges) holds it.
func ServerMayDial(ip netip.Addr, allow []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, p := range allow {
		if p.Contains(ip) {
			return true
		}
	}
	for _, ranges := range [][]netip.Prefix{BlockedRanges, PrivateRanges} {
		for _, p := range ranges {
			if p.Contains(ip) {
				return false
			}
		}
	}
	return true
}

// GuardedDialer dials only addresses ServerMayDial allows, checked on the
// address actually dialed, so a name that resolves (or rebinds) to a
// refused address is refused too. setting names the operator's setting
// that opens ranges, for the error.
func GuardedDialer(timeout time.Duration, allow []netip.Prefix, setting string) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if !ServerMayDial(ap.Addr(), allow) {
				return fmt.Errorf("%s is a local, link-local or private address (the operator may open a range with %s)", ap.Addr(), setting)
			}
			return nil
		}}
}
