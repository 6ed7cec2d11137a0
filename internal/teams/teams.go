// Package teams holds teams (members with roles, invitations by a one-time
// link), sandbox shares, and the one rule that says what a user may do
// with a sandbox (Access). It owns the rules; the store persists them and
// httpapi asks Access on every sandbox route.
package teams

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/techbossai/techboss/internal/errs"
)

// Role is a member's role in a team.
type Role string

// The team roles: an owner manages the team (members, invitations) and
// administers its sandboxes; a member operates them; a viewer reads them.
const (
	RoleOwner  Role = "owner"
	RoleMember Role = "member"
	RoleViewer Role = "viewer"
)

// Valid reports whether r is a known team role.
func (r Role) Valid() bool { return r == RoleOwner || r == RoleMember || r == RoleViewer }

// ShareRole is the role a share grants on a sandbox.
type ShareRole string

// The share roles.
const (
	ShareViewer   ShareRole = "viewer"
	ShareOperator ShareRole = "operator"
)

// Valid reports whether r is a known share role.
func (r ShareRole) Valid() bool { return r == ShareViewer || r == ShareOperator }

// Access is what a user may do with a sandbox; each level includes the
// ones below it.
type Access int

// The access levels.
const (
	None    Access = iota // the sandbox does not exist for this user (404)
	Read                  // read everything, follow live streams
	Operate               // also prompt, approve, exec, terminal input, write files
	Admin                 // also delete, share and unshare
)

// String names the level as the API shows it.
func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Operate:
		return "operate"
	case Admin:
		return "admin"
	}
	return "none"
}

// Team is a team as the API shows it; Role is the caller's role in it.
type Team struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	Role      Role      `json:"role,omitempty"`
}

// Member is one user's membership of a team.
type Member struct {
	TeamID    string    `json:"team_id"`
	UserID    string    `json:"user_id"`
	Email     string    `json:"email"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// Invitation is an invitation to join a team. Its token is shown once, at
// creation; only its hash is stored.
type Invitation struct {
	ID         string     `json:"id"`
	TeamID     string     `json:"team_id"`
	Email      string     `json:"email"`
	Role       Role       `json:"role"`
	InvitedBy  string     `json:"invited_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	AcceptedAt *time.Time `json:"accepted_at,omitempty"`
	AcceptedBy string     `json:"accepted_by,omitempty"`
	TokenHash  string     `json:"-"`
}

// Share gives a user, or every member of a team, a role on a sandbox.
type Share struct {
	ID        string    `json:"id"`
	SandboxID string    `json:"sandbox_id"`
	UserID    string    `json:"user_id,omitempty"`
	Email     string    `json:"email,omitempty"`
	TeamID    string    `json:"team_id,omitempty"`
	Role      ShareRole `json:"role"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// Repo is the persistence the Service consumes; *store.DB implements it.
// Not-found answers wrap errs.ErrNotFound.
type Repo interface {
	// CreateTeam inserts the team and its first member, an owner.
	CreateTeam(ctx context.Context, t Team, owner Member) error
	GetTeam(ctx context.Context, id string) (*Team, error)
	// TeamsOf lists the user's teams, each with the user's role.
	TeamsOf(ctx context.Context, userID string) ([]Team, error)
	// MemberRole is the user's role in the team, or "" when not a member.
	MemberRole(ctx context.Context, teamID, userID string) (Role, error)
	ListMembers(ctx context.Context, teamID string) ([]Member, error)
	// PutMember adds a member or changes the member's role.
	PutMember(ctx context.Context, m Member) error
	DeleteMember(ctx context.Context, teamID, userID string) error
	CountOwners(ctx context.Context, teamID string) (int, error)
	// DeleteTeam removes the team with its members, invitations, shares
	// to it and budget; errs.Conflict while it owns sandboxes that are
	// not terminated.
	DeleteTeam(ctx context.Context, teamID string) error

	CreateInvitation(ctx context.Context, inv Invitation) error
	ListInvitations(ctx context.Context, teamID string) ([]Invitation, error)
	InvitationByHash(ctx context.Context, tokenHash string) (*Invitation, error)
	// AcceptInvitation marks it accepted and adds the member in one
	// transaction; errs.Conflict when it was accepted already.
	AcceptInvitation(ctx context.Context, id string, m Member, at time.Time) error
	DeleteInvitation(ctx context.Context, teamID, id string) error

	CreateShare(ctx context.Context, s Share) error
	ListShares(ctx context.Context, sandboxID string) ([]Share, error)
	GetShare(ctx context.Context, sandboxID, id string) (*Share, error)
	DeleteShare(ctx context.Context, sandboxID, id string) error
	// Grants returns the roles shares of the sandbox give the user: its own
	// shares, and team shares paired with the user's role in that team.
	Grants(ctx context.Context, sandboxID, userID string) ([]Grant, error)
	// SharedWith lists the IDs of sandboxes shared with the user (directly
	// or through a team), newest share first.
	SharedWith(ctx context.Context, userID string) ([]string, error)
}

// Grant is one share that reaches a user: the share's role and, for a team
// share, the user's role in the team ("" for a direct share).
type Grant struct {
	Role     ShareRole
	TeamRole Role
}

// Users looks users up by email (auth.Service through a small adapter).
type Users interface {
	// UserIDByEmail returns the ID of the user with this email, or an
	// error wrapping errs.ErrNotFound.
	UserIDByEmail(ctx context.Context, email string) (string, error)
}

// Service applies the team rules.
type Service struct {
	repo  Repo
	users Users
	now   func() time.Time
	// InvitationTTL is how long an invitation link stays valid.
	InvitationTTL time.Duration
}

// DefaultInvitationTTL is how long an invitation is valid unless the
// request says otherwise.
const DefaultInvitationTTL = 7 * 24 * time.Hour

// MaxInvitationTTL bounds expires_in_s of an invitation.
const MaxInvitationTTL = 30 * 24 * time.Hour

// New returns the Service. now may be nil (time.Now).
func New(repo Repo, users Users, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{repo: repo, users: users, now: now}
}

var (
	errTeamNotFound       = errs.Wrap(errs.NotFound, errs.ErrNotFound, "team not found")
	errShareNotFound      = errs.Wrap(errs.NotFound, errs.ErrNotFound, "share not found")
	errInvitationNotFound = errs.Wrap(errs.NotFound, errs.ErrNotFound, "invitation not found")
)

func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// HashToken is the stored form of an invitation token.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// SandboxRef is what Access needs to know of a sandbox.
type SandboxRef struct {
	ID, OwnerID, TeamID string
}

// Access is the one authorization rule for sandboxes: what userID may do
// with sb. The owner administers it; in the sandbox's team an owner
// administers, a member operates, a viewer reads; a share grants its role
// (operator = Operate, viewer = Read), a team share to each member of that
// team (a team viewer still only reads). The highest grant wins.
func (s *Service) Access(ctx context.Context, userID string, sb SandboxRef) (Access, error) {
	if userID == "" {
		return None, nil
	}
	if sb.OwnerID == userID {
		return Admin, nil
	}
	best := None
	if sb.TeamID != "" {
		r, err := s.repo.MemberRole(ctx, sb.TeamID, userID)
		if err != nil {
			return None, fmt.Errorf("team role: %w", err)
		}
		best = max(best, teamAccess(r))
	}
	if best == Admin {
		return best, nil
	}
	gs, err := s.repo.Grants(ctx, sb.ID, userID)
	if err != nil {
		return None, fmt.Errorf("shares: %w", err)
	}
	for _, g := range gs {
		a := Read
		if g.Role == ShareOperator {
			a = Operate
		}
		if g.TeamRole == RoleViewer {
			a = min(a, Read)
		}
		best = max(best, a)
	}
	return best, nil
}

func teamAccess(r Role) Access {
	switch r {
	case RoleOwner:
		return Admin
	case RoleMember:
		return Operate
	case RoleViewer:
		return Read
	}
	return None
}

// Role is userID's role in the team, or errs.NotFound when the user is not
// a member (a stranger cannot tell a team exists).
func (s *Service) Role(ctx context.Context, teamID, userID string) (Role, error) {
	r, err := s.repo.MemberRole(ctx, teamID, userID)
	if err != nil {
		return "", fmt.Errorf("team role: %w", err)
	}
	if r == "" {
		return "", errTeamNotFound
	}
	return r, nil
}

// RequireRole is Role, refusing (errs.Forbidden) a member below min.
func (s *Service) RequireRole(ctx context.Context, teamID, userID string, min Role) (Role, error) {
	r, err := s.Role(ctx, teamID, userID)
	if err != nil {
		return "", err
	}
	if rank(r) < rank(min) {
		return r, errs.E(errs.Forbidden, "this needs the %s role in the team (yours: %s)", min, r)
	}
	return r, nil
}

func rank(r Role) int {
	switch r {
	case RoleOwner:
		return 3
	case RoleMember:
		return 2
	case RoleViewer:
		return 1
	}
	return 0
}

// MaxNameLen bounds a team's name.
const MaxNameLen = 100

// Create makes a team with userID as its owner.
func (s *Service) Create(ctx context.Context, userID, name string) (*Team, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, errs.Field("name", "required")
	}
	if utf8.RuneCountInString(name) > MaxNameLen || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, errs.Field("name", fmt.Sprintf("at most %d characters, no control characters", MaxNameLen))
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	t := Team{ID: newID("tm_"), Name: name, CreatedBy: userID, CreatedAt: now}
	if err := s.repo.CreateTeam(ctx, t, Member{TeamID: t.ID, UserID: userID, Role: RoleOwner, CreatedAt: now}); err != nil {
		return nil, fmt.Errorf("create team: %w", err)
	}
	t.Role = RoleOwner
	return &t, nil
}

// List returns userID's teams.
func (s *Service) List(ctx context.Context, userID string) ([]Team, error) {
	return s.repo.TeamsOf(ctx, userID)
}

// Get returns a team userID belongs to, with the user's role.
func (s *Service) Get(ctx context.Context, userID, teamID string) (*Team, error) {
	r, err := s.Role(ctx, teamID, userID)
	if err != nil {
		return nil, err
	}
	t, err := s.repo.GetTeam(ctx, teamID)
	if err != nil {
		return nil, err
	}
	t.Role = r
	return t, nil
}

// Members lists a team's members (any member may).
func (s *Service) Members(ctx context.Context, userID, teamID string) ([]Member, error) {
	if _, err := s.Role(ctx, teamID, userID); err != nil {
		return nil, err
	}
	return s.repo.ListMembers(ctx, teamID)
}

// PutMember adds the user with this email to the team, or changes the
// role of a member (owners only). The last owner cannot step down.
func (s *Service) PutMember(ctx context.Context, userID, teamID, email string, role Role) (*Member, error) {
	if !role.Valid() {
		return nil, errs.Field("role", "one of owner, member, viewer")
	}
	if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
		return nil, err
	}
	if strings.TrimSpace(email) == "" {
		return nil, errs.Field("email", "required")
	}
	target, err := s.users.UserIDByEmail(ctx, email)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, errs.Field("email", "no user has this email (invite them instead)")
	}
	if err != nil {
		return nil, fmt.Errorf("find user: %w", err)
	}
	return s.setRole(ctx, teamID, target, role)
}

// SetRole changes a member's role (owners only).
func (s *Service) SetRole(ctx context.Context, userID, teamID, memberID string, role Role) (*Member, error) {
	if !role.Valid() {
		return nil, errs.Field("role", "one of owner, member, viewer")
	}
	if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
		return nil, err
	}
	cur, err := s.repo.MemberRole(ctx, teamID, memberID)
	if err != nil {
		return nil, err
	}
	if cur == "" {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "member not found")
	}
	return s.setRole(ctx, teamID, memberID, role)
}

func (s *Service) setRole(ctx context.Context, teamID, target string, role Role) (*Member, error) {
	cur, err := s.repo.MemberRole(ctx, teamID, target)
	if err != nil {
		return nil, err
	}
	if cur == RoleOwner && role != RoleOwner {
		if err := s.keepAnOwner(ctx, teamID); err != nil {
			return nil, err
		}
	}
	m := Member{TeamID: teamID, UserID: target, Role: role, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if err := s.repo.PutMember(ctx, m); err != nil {
		return nil, fmt.Errorf("put member: %w", err)
	}
	ms, err := s.repo.ListMembers(ctx, teamID)
	if err != nil {
		return nil, err
	}
	for _, x := range ms {
		if x.UserID == target {
			return &x, nil
		}
	}
	return &m, nil
}

func (s *Service) keepAnOwner(ctx context.Context, teamID string) error {
	n, err := s.repo.CountOwners(ctx, teamID)
	if err != nil {
		return err
	}
	if n <= 1 {
		return errs.E(errs.Conflict, "a team keeps at least one owner: make another member owner first")
	}
	return nil
}

// Delete removes a team (its owners; admin: any team). Refused with
// errs.Conflict while the team owns sandboxes that are not terminated.
func (s *Service) Delete(ctx context.Context, userID, teamID string, admin bool) error {
	if !admin {
		if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
			return err
		}
	}
	return s.repo.DeleteTeam(ctx, teamID)
}

// RemoveMember removes a member: owners remove anyone, anyone removes
// themselves (leaves). The last owner cannot leave.
func (s *Service) RemoveMember(ctx context.Context, userID, teamID, memberID string) error {
	if memberID != userID {
		if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
			return err
		}
	} else if _, err := s.Role(ctx, teamID, userID); err != nil {
		return err
	}
	cur, err := s.repo.MemberRole(ctx, teamID, memberID)
	if err != nil {
		return err
	}
	if cur == "" {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "member not found")
	}
	if cur == RoleOwner {
		if err := s.keepAnOwner(ctx, teamID); err != nil {
			return err
		}
	}
	return s.repo.DeleteMember(ctx, teamID, memberID)
}

// Invite creates an invitation for email with role (owners only) and
// returns it with its one-time token, which is not stored.
func (s *Service) Invite(ctx context.Context, userID, teamID, email string, role Role, ttl time.Duration) (*Invitation, string, error) {
	if role == "" {
		role = RoleMember
	}
	if !role.Valid() {
		return nil, "", errs.Field("role", "one of owner, member, viewer")
	}
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" || len(email) > 254 || !strings.Contains(email, "@") || strings.ContainsAny(email, " \t\r\n") {
		return nil, "", errs.Field("email", "an email address")
	}
	if ttl == 0 {
		ttl = DefaultInvitationTTL
	}
	if ttl < 0 || ttl > MaxInvitationTTL {
		return nil, "", errs.Field("expires_in_s", fmt.Sprintf("between 1 and %d", int(MaxInvitationTTL/time.Second)))
	}
	if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
		return nil, "", err
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	tok := "tbinv_" + hex.EncodeToString(b[:])
	now := s.now().UTC().Truncate(time.Millisecond)
	inv := Invitation{ID: newID("inv_"), TeamID: teamID, Email: email, Role: role, InvitedBy: userID,
		CreatedAt: now, ExpiresAt: now.Add(ttl), TokenHash: HashToken(tok)}
	if err := s.repo.CreateInvitation(ctx, inv); err != nil {
		return nil, "", fmt.Errorf("create invitation: %w", err)
	}
	return &inv, tok, nil
}

// Invitations lists a team's invitations (owners only).
func (s *Service) Invitations(ctx context.Context, userID, teamID string) ([]Invitation, error) {
	if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
		return nil, err
	}
	return s.repo.ListInvitations(ctx, teamID)
}

// RevokeInvitation deletes an invitation (owners only).
func (s *Service) RevokeInvitation(ctx context.Context, userID, teamID, id string) error {
	if _, err := s.RequireRole(ctx, teamID, userID, RoleOwner); err != nil {
		return err
	}
	return s.repo.DeleteInvitation(ctx, teamID, id)
}

// Accept joins userID (whose email is email) to the invitation's team. The
// token works once, before it expires, and only for the invited email.
// Joining does not lower the role of someone already a member.
func (s *Service) Accept(ctx context.Context, userID, email, token string) (*Member, error) {
	if token == "" || len(token) > 200 {
		return nil, errInvitationNotFound
	}
	inv, err := s.repo.InvitationByHash(ctx, HashToken(token))
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, errInvitationNotFound
		}
		return nil, err
	}
	if inv.AcceptedAt != nil {
		return nil, errs.E(errs.Conflict, "invitation already used")
	}
	if !s.now().Before(inv.ExpiresAt) {
		return nil, errs.E(errs.Forbidden, "invitation expired")
	}
	if !strings.EqualFold(strings.TrimSpace(email), inv.Email) {
		return nil, errs.E(errs.Forbidden, "invitation is for another email address")
	}
	role := inv.Role
	if cur, err := s.repo.MemberRole(ctx, inv.TeamID, userID); err != nil {
		return nil, err
	} else if rank(cur) > rank(role) {
		role = cur
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	m := Member{TeamID: inv.TeamID, UserID: userID, Role: role, CreatedAt: now}
	if err := s.repo.AcceptInvitation(ctx, inv.ID, m, now); err != nil {
		return nil, err
	}
	m.Email = strings.ToLower(strings.TrimSpace(email))
	return &m, nil
}

// ShareRequest is a share to create: exactly one of Email, TeamID.
type ShareRequest struct {
	Email  string
	TeamID string
	Role   ShareRole
}

// CreateShare shares the sandbox (the caller is its administrator, checked
// by the caller of this method through Access).
func (s *Service) CreateShare(ctx context.Context, userID, sandboxID, ownerID string, req ShareRequest) (*Share, error) {
	if !req.Role.Valid() {
		return nil, errs.Field("role", "viewer or operator")
	}
	sh := Share{ID: newID("sh_"), SandboxID: sandboxID, Role: req.Role, CreatedBy: userID,
		CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	switch {
	case (req.Email == "") == (req.TeamID == ""):
		return nil, errs.Field("user", "give exactly one of user (an email) and team")
	case req.Email != "":
		id, err := s.users.UserIDByEmail(ctx, req.Email)
		if errors.Is(err, errs.ErrNotFound) {
			return nil, errs.Field("user", "no user has this email")
		}
		if err != nil {
			return nil, fmt.Errorf("find user: %w", err)
		}
		if id == ownerID {
			return nil, errs.Field("user", "the owner has every right already")
		}
		sh.UserID, sh.Email = id, strings.ToLower(strings.TrimSpace(req.Email))
	default:
		// Only a team the sharer belongs to: sharing with a team one cannot
		// see would tell whether a guessed team ID exists.
		if _, err := s.Role(ctx, req.TeamID, userID); err != nil {
			if errs.KindOf(err) == errs.NotFound {
				return nil, errs.Field("team", "not a team of yours")
			}
			return nil, err
		}
		sh.TeamID = req.TeamID
	}
	if err := s.repo.CreateShare(ctx, sh); err != nil {
		return nil, err
	}
	return &sh, nil
}

// Shares lists a sandbox's shares.
func (s *Service) Shares(ctx context.Context, sandboxID string) ([]Share, error) {
	return s.repo.ListShares(ctx, sandboxID)
}

// GetShare returns one share of the sandbox.
func (s *Service) GetShare(ctx context.Context, sandboxID, id string) (*Share, error) {
	sh, err := s.repo.GetShare(ctx, sandboxID, id)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, errShareNotFound
	}
	return sh, err
}

// DeleteShare removes a share.
func (s *Service) DeleteShare(ctx context.Context, sandboxID, id string) error {
	err := s.repo.DeleteShare(ctx, sandboxID, id)
	if errors.Is(err, errs.ErrNotFound) {
		return errShareNotFound
	}
	return err
}

// SharedWith lists the IDs of sandboxes shared with userID.
func (s *Service) SharedWith(ctx context.Context, userID string) ([]string, error) {
	return s.repo.SharedWith(ctx, userID)
}
