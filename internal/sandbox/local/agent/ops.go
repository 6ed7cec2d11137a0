package agent

import (
	"context"
	"encoding/json"
	"net"
	"os"
)

// Call is one request to an op registered with RegisterOp. The op owns the
// connection until it returns; handle closes it afterwards.
type Call struct {
	Conn    *net.UnixConn
	Enc     *json.Encoder // JSON lines to the driver on Conn
	Req     Request
	Spawner *Spawner
	Base    []string // the sandbox's base environment
	// Files are the fds passed with the request. handle closes whatever is
	// left here when the op returns: an op that keeps one sets its entry
	// to nil (or the slice to nil).
	Files []*os.File
}

// Op serves one request. Ops that outlive their connection (sessions,
// background processes) keep their state in the agent, which lives as long
// as the sandbox: a server restart does not touch it.
type Op func(ctx context.Context, c *Call) error

var ops = map[string]Op{}

// RegisterOp adds an op by name. It is called from init functions only
// (the map is not locked), one file per feature.
func RegisterOp(name string, op Op) {
	if _, dup := ops[name]; dup || name == "exec" || name == "ping" || name == "warm" {
		panic("agent: op " + name + " registered twice")
	}
	ops[name] = op
}
