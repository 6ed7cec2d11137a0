// Package initproto is what the sandbox agent's gVisor modes share with the
// runsc package: the socket path and the message on the agent's stdin. It
// imports nothing, so the agent binary (techboss-sandbox-init), which every
// sandbox runs, links none of the server's packages.
package initproto

// AgentDir is where the driver's agent directory appears inside the
// container; AgentSocket is the socket the agent listens on there.
const (
	AgentDir    = "/run/techboss"
	AgentSocket = AgentDir + "/agent.sock"
)

// Init is what the agent reads on its stdin: agent.Init plus the seccomp
// program it installs on itself.
type Init struct {
	Env     []string `json:"env"`
	Seccomp []byte   `json:"seccomp,omitempty"`
}
