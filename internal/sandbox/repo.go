package sandbox

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// Repo is the persistence the Manager consumes; *store.DB implements it.
type Repo interface {
	// CreateSandbox inserts a new record (its labels too).
	CreateSandbox(ctx context.Context, sb *Sandbox) error
	// GetSandbox returns one record or an error wrapping errs.ErrNotFound.
	GetSandbox(ctx context.Context, id string) (*Sandbox, error)
	// UpdateSandbox stores State, Reason, Ref, UpdatedAt, LastActiveAt and
	// TerminatedAt of an existing record.
	UpdateSandbox(ctx context.Context, sb *Sandbox) error
	// TouchSandbox raises LastActiveAt to at (never lowers it).
	TouchSandbox(ctx context.Context, id string, at time.Time) error
	// ListSandboxes returns records matching f, newest first.
	ListSandboxes(ctx context.Context, f ListFilter) ([]*Sandbox, error)
	// CountSandboxes counts the records matching f (After and Limit are
	// ignored).
	CountSandboxes(ctx context.Context, f ListFilter) (int, error)
	// CountSandboxesByState counts every record by state (for metrics).
	CountSandboxesByState(ctx context.Context) (map[State]int, error)

	// EnsureVolume records a named volume (no-op when it exists).
	EnsureVolume(ctx context.Context, v VolumeRecord) error
	// ListVolumes returns an owner's volumes by name.
	ListVolumes(ctx context.Context, ownerID string) ([]VolumeRecord, error)
	// DeleteVolume removes a volume record or returns errs.ErrNotFound.
	DeleteVolume(ctx context.Context, ownerID, name string) error

	// HostAlive reports whether a server replica on host was seen at or
	// after since (see Deps.Host).
	HostAlive(ctx context.Context, host string, since time.Time) (bool, error)
}

// ListFilter selects sandboxes. Empty fields do not filter.
type ListFilter struct {
	OwnerID string
	// TeamID selects the sandboxes of a team (see Spec.Team).
	TeamID string
	// IDs selects these sandboxes only (the ones shared with a user).
	IDs        []string
	States     []State
	Labels     map[string]string
	VolumeName string
	// After continues a listing after this position (exclusive).
	After *Cursor
	// Limit caps the result; 0 means no cap.
	Limit int
}

// VolumeRecord is the persisted record of a named volume.
type VolumeRecord struct {
	OwnerID   string
	Name      string
	Driver    string
	CreatedAt time.Time
}

// Cursor is a position in a listing ordered by (CreatedAt, ID) descending.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// String encodes the cursor for a ?cursor= parameter.
func (c Cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMilli(), 10) + ":" + c.ID))
}

// ParseCursor decodes a cursor from Cursor.String; bad input is errs.Invalid on field "cursor".
func ParseCursor(s string) (Cursor, error) {
	bad := errs.Field("cursor", "not a cursor returned by this API")
	if len(s) > 256 {
		return Cursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	msS, id, ok := strings.Cut(string(b), ":")
	if !ok || id == "" || !isPrintable(id) {
		return Cursor{}, bad
	}
	v, err := strconv.ParseInt(msS, 10, 64)
	if err != nil || v < 0 {
		return Cursor{}, bad
	}
	return Cursor{CreatedAt: time.UnixMilli(v).UTC(), ID: id}, nil
}

// Terminal reports whether a state is final.
func (s State) Terminal() bool {
	return s == Terminated || s == Failed || s == Lost
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case Creating, Running, Terminating, Terminated, Failed, Lost:
		return true
	}
	return false
}
