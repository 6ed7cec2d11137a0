package sandbox

import (
	"context"
	"net"
	"strconv"

	"github.com/techbossai/techboss/internal/errs"
)

// Port is a TCP port something listens on inside a sandbox.
type Port struct {
	Port    int    `json:"port"`
	Address string `json:"address"`           // the address it is bound to inside the sandbox, e.g. 0.0.0.0 or ::1
	Process string `json:"process,omitempty"` // the listening process's name, when the driver can tell
	// URL is where the driver itself publishes the port (a Modal
	// tunnel's public HTTPS address); empty when the server's preview
	// proxy is the way in.
	URL string `json:"url,omitempty"`
}

// Ports is the optional capability behind preview URLs: list the TCP
// ports listening inside a sandbox and open connections to them. Drivers
// reach the port the way the sandbox's own processes would (the local
// driver dials from inside the sandbox's network namespace), so it works
// with network "none" and never opens the sandbox to the host network.
// Ports the server itself listens on inside the sandbox (the LLM gateway)
// are neither listed nor dialled.
type Ports interface {
	ListPorts(ctx context.Context, ref Ref) ([]Port, error)
	// DialPort connects to port on the sandbox's loopback. Nothing
	// listening is an error wrapping errs.BadGateway.
	DialPort(ctx context.Context, ref Ref, port int) (net.Conn, error)
}

// CheckPort validates a port number given by a client.
func CheckPort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, errs.Field("port", "must be a TCP port number, 1 to 65535")
	}
	return p, nil
}

func (m *Manager) ports(ctx context.Context, ownerID, id string) (*Sandbox, Ports, error) {
	sb, p, _, err := capability[Ports](ctx, m, ownerID, id, "/", "ports")
	return sb, p, err
}

// ListPorts lists the TCP ports listening in the owner's running sandbox.
func (m *Manager) ListPorts(ctx context.Context, ownerID, id string) ([]Port, error) {
	sb, p, err := m.ports(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	return p.ListPorts(ctx, sb.Ref)
}

// DialPort connects to port inside the owner's running sandbox. A
// connection counts as activity when it opens (the idle reaper does not
// see traffic on it).
func (m *Manager) DialPort(ctx context.Context, ownerID, id string, port int) (net.Conn, error) {
	sb, p, err := m.ports(ctx, ownerID, id)
	if err != nil {
		return nil, err
	}
	m.Touch(id)
	return p.DialPort(ctx, sb.Ref, port)
}
