package modal

import (
	"context"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

var _ sandbox.Ports = (*Driver)(nil)

// tunnelWait bounds the wait for a new sandbox's tunnels.
const tunnelWait = 30 * time.Second

// ListPorts lists the ports the sandbox's spec published (spec.ports)
// with their Modal tunnel URLs. Modal tells which ports have tunnels, not
// which ones something listens on.
func (d *Driver) ListPorts(ctx context.Context, r sandbox.Ref) ([]sandbox.Port, error) {
	h, _, err := d.handle(r)
	if err != nil {
		return nil, err
	}
	tunnels, err := h.Tunnels(ctx, tunnelWait, nil)
	if err != nil {
		return nil, mapErr(err, "tunnels")
	}
	out := make([]sandbox.Port, 0, len(tunnels))
	for port, t := range tunnels {
		out = append(out, sandbox.Port{Port: port, Address: "tunnel", URL: t.URL()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, nil
}

// DialPort is not offered: a Modal sandbox's ports are reached at their
// tunnel's public URL, not through the server.
func (d *Driver) DialPort(ctx context.Context, r sandbox.Ref, port int) (net.Conn, error) {
	return nil, errs.E(errs.NotImplemented, "%s", fmt.Sprintf("a Modal sandbox's port %d is reached at its tunnel URL (the url in GET /sandbox/{id}/ports; publish it with \"ports\" at create), not through this server", port))
}
