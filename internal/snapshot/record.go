package snapshot

import "time"

// Trigger is why a snapshot was taken.
type Trigger string

// The triggers.
const (
	TriggerRun       Trigger = "run"       // after an agent run
	TriggerManual    Trigger = "manual"    // POST /sandbox/{id}/snapshots
	TriggerTerminate Trigger = "terminate" // before the sandbox is terminated
	TriggerIdle      Trigger = "idle"      // before an idle stop
)

// Valid reports whether t is a known trigger.
func (t Trigger) Valid() bool {
	switch t {
	case TriggerRun, TriggerManual, TriggerTerminate, TriggerIdle:
		return true
	}
	return false
}

// Record is the database index entry of one version. The version itself
// (manifest and blobs) lives in the blob store at Bucket/Prefix.
type Record struct {
	ID            string    `json:"snapshot_id"`
	SandboxID     string    `json:"sandbox_id"`
	OwnerID       string    `json:"owner_id"`
	Bucket        string    `json:"bucket,omitempty"` // "" is the server's default store
	Prefix        string    `json:"prefix"`
	Name          string    `json:"version"` // the UTC timestamp name
	Trigger       Trigger   `json:"trigger"`
	RunID         string    `json:"run_id,omitempty"`
	Files         int       `json:"file_count"`
	Bytes         int64     `json:"bytes"`
	UploadedBytes int64     `json:"uploaded_bytes"`
	CreatedAt     time.Time `json:"created_at"`
	// Label is the owner's name for the version ("before the refactor");
	// empty unless given when it was taken.
	Label string `json:"label,omitempty"`
}
