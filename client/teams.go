package client

import (
	"context"
	"net/url"
	"time"
)

// Team is a team of the caller; Role is the caller's role in it (owner,
// member or viewer).
type Team struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	Role      string    `json:"role,omitempty"`
	// Members is filled by Team (GET /teams/{team}).
	Members []TeamMember `json:"members,omitempty"`
}

// TeamMember is one user's membership of a team.
type TeamMember struct {
	TeamID    string    `json:"team_id"`
	UserID    string    `json:"user_id"`
	Email     string    `json:"email"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// Invitation is an invitation to a team. Token and AcceptURL are set only
// in Invite's answer: the server keeps a hash of the token.
type Invitation struct {
	ID         string     `json:"id"`
	TeamID     string     `json:"team_id"`
	Email      string     `json:"email"`
	Role       string     `json:"role"`
	InvitedBy  string     `json:"invited_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	AcceptedAt *time.Time `json:"accepted_at,omitempty"`
	AcceptedBy string     `json:"accepted_by,omitempty"`
	Token      string     `json:"token,omitempty"`
	AcceptURL  string     `json:"accept_url,omitempty"`
}

// Share gives a user (UserID, Email) or a team (TeamID) a role on a
// sandbox: viewer or operator.
type Share struct {
	ID        string    `json:"id"`
	SandboxID string    `json:"sandbox_id"`
	UserID    string    `json:"user_id,omitempty"`
	Email     string    `json:"email,omitempty"`
	TeamID    string    `json:"team_id,omitempty"`
	Role      string    `json:"role"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// WithTeam sends X-Team on every request: sandboxes are created in and
// listed from that team.
func WithTeam(teamID string) Option { return func(c *Client) { c.team = teamID } }

// CreateTeam creates a team; the caller is its owner.
func (c *Client) CreateTeam(ctx context.Context, name string) (*Team, error) {
	var out Team
	if err := c.Do(ctx, "POST", "/teams", map[string]string{"name": name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Teams lists the caller's teams.
func (c *Client) Teams(ctx context.Context) ([]Team, error) {
	var out struct {
		Teams []Team `json:"teams"`
	}
	if err := c.Do(ctx, "GET", "/teams", nil, &out); err != nil {
		return nil, err
	}
	return out.Teams, nil
}

// Team returns one of the caller's teams with its members.
func (c *Client) Team(ctx context.Context, id string) (*Team, error) {
	var out Team
	if err := c.Do(ctx, "GET", "/teams/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTeam deletes a team (its owners, admins) with its memberships,
// invitations, shares to it, budget and secrets. The server refuses (409) while
// the team still owns sandboxes that are not terminated.
func (c *Client) DeleteTeam(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/teams/"+url.PathEscape(id), nil, nil)
}

// PutTeamSecret stores a team secret (owners). A sandbox created in the
// team's scope names it "team:NAME" (registry_credential).
func (c *Client) PutTeamSecret(ctx context.Context, teamID, name, value string) error {
	return c.Do(ctx, "PUT", "/teams/"+url.PathEscape(teamID)+"/secrets/"+url.PathEscape(name), map[string]string{"value": value}, nil)
}

// TeamSecrets lists a team's secrets' names and dates (owners, members).
func (c *Client) TeamSecrets(ctx context.Context, teamID string) ([]SecretInfo, error) {
	var out []SecretInfo
	if err := c.Do(ctx, "GET", "/teams/"+url.PathEscape(teamID)+"/secrets", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteTeamSecret deletes a team secret (owners).
func (c *Client) DeleteTeamSecret(ctx context.Context, teamID, name string) error {
	return c.Do(ctx, "DELETE", "/teams/"+url.PathEscape(teamID)+"/secrets/"+url.PathEscape(name), nil, nil)
}

// PutTeamMember adds the user with this email to the team, or changes
// their role (owner, member, viewer). Owners only.
func (c *Client) PutTeamMember(ctx context.Context, teamID, email, role string) (*TeamMember, error) {
	var out TeamMember
	if err := c.Do(ctx, "POST", "/teams/"+url.PathEscape(teamID)+"/members", map[string]string{"email": email, "role": role}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetTeamRole changes a member's role. Owners only.
func (c *Client) SetTeamRole(ctx context.Context, teamID, userID, role string) (*TeamMember, error) {
	var out TeamMember
	if err := c.Do(ctx, "PUT", "/teams/"+url.PathEscape(teamID)+"/members/"+url.PathEscape(userID), map[string]string{"role": role}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveTeamMember removes a member (owners), or leaves (the caller's own
// ID).
func (c *Client) RemoveTeamMember(ctx context.Context, teamID, userID string) error {
	return c.Do(ctx, "DELETE", "/teams/"+url.PathEscape(teamID)+"/members/"+url.PathEscape(userID), nil, nil)
}

// Invite invites email to the team with role; expiresIn 0 is the server's
// default (7 days). The answer's Token is shown only this once.
func (c *Client) Invite(ctx context.Context, teamID, email, role string, expiresIn time.Duration) (*Invitation, error) {
	body := map[string]any{"email": email, "role": role}
	if expiresIn > 0 {
		body["expires_in_s"] = int64(expiresIn / time.Second)
	}
	var out Invitation
	if err := c.Do(ctx, "POST", "/teams/"+url.PathEscape(teamID)+"/invitations", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AcceptInvitation joins the caller to the invitation's team.
func (c *Client) AcceptInvitation(ctx context.Context, token string) (*TeamMember, error) {
	var out TeamMember
	if err := c.Do(ctx, "POST", "/invitations/"+url.PathEscape(token)+"/accept", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Share shares a sandbox with a user (by email) as "viewer" or
// "operator". ShareWithTeam shares it with a team.
func (c *Client) Share(ctx context.Context, sandboxID, email, role string) (*Share, error) {
	return c.share(ctx, sandboxID, map[string]string{"user": email, "role": role})
}

// ShareWithTeam shares a sandbox with every member of a team of the
// caller's.
func (c *Client) ShareWithTeam(ctx context.Context, sandboxID, teamID, role string) (*Share, error) {
	return c.share(ctx, sandboxID, map[string]string{"team": teamID, "role": role})
}

func (c *Client) share(ctx context.Context, sandboxID string, body map[string]string) (*Share, error) {
	var out Share
	if err := c.Do(ctx, "POST", "/sandbox/"+url.PathEscape(sandboxID)+"/shares", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Shares lists who a sandbox is shared with.
func (c *Client) Shares(ctx context.Context, sandboxID string) ([]Share, error) {
	var out struct {
		Shares []Share `json:"shares"`
	}
	if err := c.Do(ctx, "GET", "/sandbox/"+url.PathEscape(sandboxID)+"/shares", nil, &out); err != nil {
		return nil, err
	}
	return out.Shares, nil
}

// Unshare removes a share; the user's open streams on the sandbox end.
func (c *Client) Unshare(ctx context.Context, sandboxID, shareID string) error {
	return c.Do(ctx, "DELETE", "/sandbox/"+url.PathEscape(sandboxID)+"/shares/"+url.PathEscape(shareID), nil, nil)
}
