// Package sandbox is the sandbox domain: the Spec a user asks for, the
// Sandbox record and its states, the Driver interface every backend
// implements, and the Manager that runs their lifecycle.
package sandbox

import (
	"encoding/json"
	"time"
)

// State is a sandbox's lifecycle state. Transitions are persisted before
// they are acted on: creating -> running -> terminating -> terminated, or
// failed (with a reason), or lost (the driver no longer knows it).
type State string

// The states.
const (
	Creating    State = "creating"
	Running     State = "running"
	Terminating State = "terminating"
	Terminated  State = "terminated"
	Failed      State = "failed"
	Lost        State = "lost"
)

// Spec is the request body of POST /sandbox. The first six fields are the
// original design's and keep their exact names.
type Spec struct {
	// Team is the team the new sandbox belongs to ("" = the owner's
	// own). Set by the API from the request's scope (X-Team, ?team=), who
	// checked the caller may create there; not part of the body.
	Team               string            `json:"-"`
	ImageBase          string            `json:"image_base"`
	DockerfileCommands []string          `json:"dockerfile_commands"`
	VolumeName         string            `json:"volume_name"`
	S3BucketName       string            `json:"s3_bucket_name"`
	S3KeyPrefix        string            `json:"s3_key_prefix"`
	InitFromS3         bool              `json:"init_from_s3"`
	Env                map[string]string `json:"env,omitempty"`
	CPU                float64           `json:"cpu,omitempty"`
	MemoryMB           int               `json:"memory_mb,omitempty"`
	PidsLimit          int               `json:"pids_limit,omitempty"`
	DiskMB             int               `json:"disk_mb,omitempty"`
	Network            Network           `json:"network,omitzero"` // "none" (default) | "full" | {"allow": [...]}
	IdleTimeoutS       int               `json:"idle_timeout_s,omitempty"`
	MaxLifetimeS       int               `json:"max_lifetime_s,omitempty"`
	Name               string            `json:"name,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	FromSnapshot       string            `json:"from_snapshot,omitempty"`
	GPU                string            `json:"gpu,omitempty"`
	// RegistryCredential names the owner's stored secret (POST /secrets)
	// that pulls image_base from a private registry: "username:password"
	// or {"username": ..., "password": ...}. Only the name is stored.
	// "team:<team id>/<name>" names a team's secret (secrets.RevealRef).
	RegistryCredential string `json:"registry_credential,omitempty"`
	// Repos are cloned into /workspace at create (see GitRepo); "repo" in
	// JSON takes one object or a list.
	Repos RepoList `json:"repo,omitempty"`
	// Ports are the TCP ports a Modal sandbox publishes through Modal's
	// tunnels (declared at create, as Modal requires). Local sandboxes
	// reach every listening port through the preview proxy without it.
	Ports []int `json:"ports,omitempty"`
}

// MarshalJSON writes dockerfile_commands as [] when there are none (a
// spec read back from the database has a nil list), never null.
func (s Spec) MarshalJSON() ([]byte, error) {
	type plain Spec
	if s.DockerfileCommands == nil {
		s.DockerfileCommands = []string{}
	}
	return json.Marshal(plain(s))
}

// Sandbox is the persisted record of one sandbox.
type Sandbox struct {
	ID      string `json:"sandbox_id"`
	OwnerID string `json:"owner_id"`
	// TeamID is the team the sandbox belongs to ("" = its owner's own).
	TeamID       string     `json:"team_id,omitempty"`
	Spec         Spec       `json:"spec"`
	State        State      `json:"status"`
	Reason       string     `json:"reason,omitempty"`
	Driver       string     `json:"driver"`
	Ref          Ref        `json:"-"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	LastActiveAt time.Time  `json:"last_active_at"`
	TerminatedAt *time.Time `json:"terminated_at,omitempty"`
	// Host is the machine (Deps.Host) whose server reaches the sandbox, for
	// a host-bound driver ("" for drivers reachable from anywhere).
	Host string `json:"-"`
}
