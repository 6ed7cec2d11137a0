package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/teams"
)

var _ teams.Repo = (*DB)(nil)

// CreateTeam inserts a team and its first member.
func (d *DB) CreateTeam(ctx context.Context, t teams.Team, owner teams.Member) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := d.exec(ctx, tx, `INSERT INTO teams (id, name, created_by, created_at) VALUES (?, ?, ?, ?)`,
			t.ID, t.Name, t.CreatedBy, ms(t.CreatedAt)); err != nil {
			return fmt.Errorf("insert team: %w", err)
		}
		if _, err := d.exec(ctx, tx, `INSERT INTO team_members (team_id, user_id, role, created_at) VALUES (?, ?, ?, ?)`,
			owner.TeamID, owner.UserID, string(owner.Role), ms(owner.CreatedAt)); err != nil {
			return fmt.Errorf("insert team owner: %w", err)
		}
		return nil
	})
}

// GetTeam returns one team or NotFound.
func (d *DB) GetTeam(ctx context.Context, id string) (*teams.Team, error) {
	var t teams.Team
	var created int64
	err := d.queryRow(ctx, d.db, `SELECT id, name, created_by, created_at FROM teams WHERE id = ?`, id).Scan(&t.ID, &t.Name, &t.CreatedBy, &created)
	if isNoRows(err) {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "team not found")
	}
	if err != nil {
		return nil, fmt.Errorf("read team: %w", err)
	}
	t.CreatedAt = fromMS(created)
	return &t, nil
}

// TeamsOf lists the user's teams by creation, each with the user's role.
func (d *DB) TeamsOf(ctx context.Context, userID string) ([]teams.Team, error) {
	rows, err := d.query(ctx, d.db, `SELECT t.id, t.name, t.created_by, t.created_at, m.role FROM teams t
		JOIN team_members m ON m.team_id = t.id WHERE m.user_id = ? ORDER BY t.created_at, t.id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	out := []teams.Team{}
	for rows.Next() {
		var t teams.Team
		var created int64
		var role string
		if err := rows.Scan(&t.ID, &t.Name, &t.CreatedBy, &created, &role); err != nil {
			return nil, fmt.Errorf("list teams: %w", err)
		}
		t.CreatedAt, t.Role = fromMS(created), teams.Role(role)
		out = append(out, t)
	}
	return out, classify(rows.Err())
}

// MemberRole is the user's role in the team, or "".
func (d *DB) MemberRole(ctx context.Context, teamID, userID string) (teams.Role, error) {
	var role string
	err := d.queryRow(ctx, d.db, `SELECT role FROM team_members WHERE team_id = ? AND user_id = ?`, teamID, userID).Scan(&role)
	if isNoRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read team role: %w", err)
	}
	return teams.Role(role), nil
}

// ListMembers lists a team's members by join time, with their emails.
func (d *DB) ListMembers(ctx context.Context, teamID string) ([]teams.Member, error) {
	rows, err := d.query(ctx, d.db, `SELECT m.team_id, m.user_id, COALESCE(u.email, ''), m.role, m.created_at FROM team_members m
		LEFT JOIN users u ON u.id = m.user_id WHERE m.team_id = ? ORDER BY m.created_at, m.user_id`, teamID)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	defer rows.Close()
	out := []teams.Member{}
	for rows.Next() {
		var m teams.Member
		var role string
		var created int64
		if err := rows.Scan(&m.TeamID, &m.UserID, &m.Email, &role, &created); err != nil {
			return nil, fmt.Errorf("list members: %w", err)
		}
		m.Role, m.CreatedAt = teams.Role(role), fromMS(created)
		out = append(out, m)
	}
	return out, classify(rows.Err())
}

// PutMember adds a member or changes an existing member's role (keeping
// the time they joined).
func (d *DB) PutMember(ctx context.Context, m teams.Member) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO team_members (team_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role`, m.TeamID, m.UserID, string(m.Role), ms(m.CreatedAt))
	if err != nil {
		return fmt.Errorf("put member: %w", err)
	}
	return nil
}

// DeleteMember removes a member or returns NotFound.
func (d *DB) DeleteMember(ctx context.Context, teamID, userID string) error {
	res, err := d.exec(ctx, d.db, `DELETE FROM team_members WHERE team_id = ? AND user_id = ?`, teamID, userID)
	if err != nil {
		return fmt.Errorf("delete member: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "member not found")
	}
	return nil
}

// CountOwners counts a team's owners.
func (d *DB) CountOwners(ctx context.Context, teamID string) (int, error) {
	var n int
	if err := d.queryRow(ctx, d.db, `SELECT COUNT(*) FROM team_members WHERE team_id = ? AND role = 'owner'`, teamID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count owners: %w", err)
	}
	return n, nil
}

const invitationCols = `id, team_id, email, role, token_hash, invited_by, created_at, expires_at, accepted_at, accepted_by`

func scanInvitation(r rowScanner) (*teams.Invitation, error) {
	var inv teams.Invitation
	var role string
	var created, expires, accepted int64
	if err := r.Scan(&inv.ID, &inv.TeamID, &inv.Email, &role, &inv.TokenHash, &inv.InvitedBy, &created, &expires, &accepted, &inv.AcceptedBy); err != nil {
		return nil, err
	}
	inv.Role, inv.CreatedAt, inv.ExpiresAt = teams.Role(role), fromMS(created), fromMS(expires)
	if accepted != 0 {
		t := fromMS(accepted)
		inv.AcceptedAt = &t
	}
	return &inv, nil
}

// CreateInvitation stores an invitation (its token only hashed).
func (d *DB) CreateInvitation(ctx context.Context, inv teams.Invitation) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO team_invitations (`+invitationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, '')`,
		inv.ID, inv.TeamID, inv.Email, string(inv.Role), inv.TokenHash, inv.InvitedBy, ms(inv.CreatedAt), ms(inv.ExpiresAt))
	if err != nil {
		return fmt.Errorf("insert invitation: %w", err)
	}
	return nil
}

// ListInvitations lists a team's invitations, newest first.
func (d *DB) ListInvitations(ctx context.Context, teamID string) ([]teams.Invitation, error) {
	rows, err := d.query(ctx, d.db, `SELECT `+invitationCols+` FROM team_invitations WHERE team_id = ? ORDER BY created_at DESC, id DESC`, teamID)
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	defer rows.Close()
	out := []teams.Invitation{}
	for rows.Next() {
		inv, err := scanInvitation(rows)
		if err != nil {
			return nil, fmt.Errorf("list invitations: %w", err)
		}
		out = append(out, *inv)
	}
	return out, classify(rows.Err())
}

// InvitationByHash finds an invitation by its token's hash.
func (d *DB) InvitationByHash(ctx context.Context, tokenHash string) (*teams.Invitation, error) {
	inv, err := scanInvitation(d.queryRow(ctx, d.db, `SELECT `+invitationCols+` FROM team_invitations WHERE token_hash = ?`, tokenHash))
	if isNoRows(err) {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "invitation not found")
	}
	if err != nil {
		return nil, fmt.Errorf("read invitation: %w", err)
	}
	return inv, nil
}

// AcceptInvitation marks the invitation used and adds (or promotes) the
// member, once: a second accept, even a concurrent one, is Conflict.
func (d *DB) AcceptInvitation(ctx context.Context, id string, m teams.Member, at time.Time) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := d.exec(ctx, tx, `UPDATE team_invitations SET accepted_at = ?, accepted_by = ? WHERE id = ? AND accepted_at = 0`, ms(at), m.UserID, id)
		if err != nil {
			return fmt.Errorf("accept invitation: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return errs.E(errs.Conflict, "invitation already used")
		}
		if _, err := d.exec(ctx, tx, `INSERT INTO team_members (team_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role`, m.TeamID, m.UserID, string(m.Role), ms(m.CreatedAt)); err != nil {
			return fmt.Errorf("add member: %w", err)
		}
		return nil
	})
}

// DeleteInvitation removes one of a team's invitations or returns NotFound.
func (d *DB) DeleteInvitation(ctx context.Context, teamID, id string) error {
	res, err := d.exec(ctx, d.db, `DELETE FROM team_invitations WHERE team_id = ? AND id = ?`, teamID, id)
	if err != nil {
		return fmt.Errorf("delete invitation: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "invitation not found")
	}
	return nil
}

const shareCols = `s.id, s.sandbox_id, s.user_id, COALESCE(u.email, ''), s.team_id, s.role, s.created_by, s.created_at`

func scanShare(r rowScanner) (*teams.Share, error) {
	var sh teams.Share
	var role string
	var created int64
	if err := r.Scan(&sh.ID, &sh.SandboxID, &sh.UserID, &sh.Email, &sh.TeamID, &role, &sh.CreatedBy, &created); err != nil {
		return nil, err
	}
	sh.Role, sh.CreatedAt = teams.ShareRole(role), fromMS(created)
	return &sh, nil
}

// CreateShare stores a share; sharing again with the same user or team
// changes the role of the existing share (its ID stays).
func (d *DB) CreateShare(ctx context.Context, sh teams.Share) error {
	_, err := d.exec(ctx, d.db, `INSERT INTO sandbox_shares (id, sandbox_id, user_id, team_id, role, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (sandbox_id, user_id, team_id) DO UPDATE SET role = excluded.role`,
		sh.ID, sh.SandboxID, sh.UserID, sh.TeamID, string(sh.Role), sh.CreatedBy, ms(sh.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert share: %w", err)
	}
	return nil
}

// ListShares lists a sandbox's shares by creation.
func (d *DB) ListShares(ctx context.Context, sandboxID string) ([]teams.Share, error) {
	rows, err := d.query(ctx, d.db, `SELECT `+shareCols+` FROM sandbox_shares s LEFT JOIN users u ON u.id = s.user_id
		WHERE s.sandbox_id = ? ORDER BY s.created_at, s.id`, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	defer rows.Close()
	out := []teams.Share{}
	for rows.Next() {
		sh, err := scanShare(rows)
		if err != nil {
			return nil, fmt.Errorf("list shares: %w", err)
		}
		out = append(out, *sh)
	}
	return out, classify(rows.Err())
}

// GetShare returns one share of the sandbox or NotFound.
func (d *DB) GetShare(ctx context.Context, sandboxID, id string) (*teams.Share, error) {
	sh, err := scanShare(d.queryRow(ctx, d.db, `SELECT `+shareCols+` FROM sandbox_shares s LEFT JOIN users u ON u.id = s.user_id
		WHERE s.sandbox_id = ? AND s.id = ?`, sandboxID, id))
	if isNoRows(err) {
		return nil, errs.Wrap(errs.NotFound, errs.ErrNotFound, "share not found")
	}
	if err != nil {
		return nil, fmt.Errorf("read share: %w", err)
	}
	return sh, nil
}

// DeleteShare removes a share or returns NotFound.
func (d *DB) DeleteShare(ctx context.Context, sandboxID, id string) error {
	res, err := d.exec(ctx, d.db, `DELETE FROM sandbox_shares WHERE sandbox_id = ? AND id = ?`, sandboxID, id)
	if err != nil {
		return fmt.Errorf("delete share: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errs.Wrap(errs.NotFound, errs.ErrNotFound, "share not found")
	}
	return nil
}

// Grants returns the shares of the sandbox that reach the user: direct
// ones, and team ones with the user's role in that team.
func (d *DB) Grants(ctx context.Context, sandboxID, userID string) ([]teams.Grant, error) {
	rows, err := d.query(ctx, d.db, `SELECT s.role, COALESCE(m.role, '') FROM sandbox_shares s
		LEFT JOIN team_members m ON s.team_id <> '' AND m.team_id = s.team_id AND m.user_id = ?
		WHERE s.sandbox_id = ? AND ((s.user_id <> '' AND s.user_id = ?) OR m.user_id IS NOT NULL)`, userID, sandboxID, userID)
	if err != nil {
		return nil, fmt.Errorf("read grants: %w", err)
	}
	defer rows.Close()
	var out []teams.Grant
	for rows.Next() {
		var role, teamRole string
		if err := rows.Scan(&role, &teamRole); err != nil {
			return nil, fmt.Errorf("read grants: %w", err)
		}
		out = append(out, teams.Grant{Role: teams.ShareRole(role), TeamRole: teams.Role(teamRole)})
	}
	return out, classify(rows.Err())
}

// SharedWith lists the IDs of sandboxes shared with the user (directly or
// through one of the user's teams), newest share first.
func (d *DB) SharedWith(ctx context.Context, userID string) ([]string, error) {
	rows, err := d.query(ctx, d.db, `SELECT s.sandbox_id, MAX(s.created_at) AS at FROM sandbox_shares s
		LEFT JOIN team_members m ON s.team_id <> '' AND m.team_id = s.team_id AND m.user_id = ?
		WHERE (s.user_id <> '' AND s.user_id = ?) OR m.user_id IS NOT NULL
		GROUP BY s.sandbox_id ORDER BY at DESC, s.sandbox_id`, userID, userID)
	if err != nil {
		return nil, fmt.Errorf("list shared: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("list shared: %w", err)
		}
		out = append(out, id)
	}
	return out, classify(rows.Err())
}

// DeleteTeam removes a team with its members, invitations, shares to it,
// budget and secrets, in one transaction. errs.Conflict, naming how many,
// while the team still owns sandboxes that are not terminated; NotFound
// when there is no such team. Terminated sandboxes keep their team_id
// (their history and usage stay attributed).
func (d *DB) DeleteTeam(ctx context.Context, id string) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		var live int
		if err := d.queryRow(ctx, tx, `SELECT COUNT(*) FROM sandboxes WHERE team_id = ? AND state <> 'terminated'`, id).Scan(&live); err != nil {
			return fmt.Errorf("count team sandboxes: %w", err)
		}
		if live > 0 {
			return errs.E(errs.Conflict, "the team still owns %d sandbox(es) that are not terminated: terminate them (DELETE /sandbox/{id}) first", live)
		}
		// A volume is data: deleting the team does not delete it for them.
		var vols int
		if err := d.queryRow(ctx, tx, `SELECT COUNT(*) FROM volumes WHERE owner_id = ?`, "team:"+id).Scan(&vols); err != nil {
			return fmt.Errorf("count team volumes: %w", err)
		}
		if vols > 0 {
			return errs.E(errs.Conflict, "the team still owns %d volume(s): delete them (DELETE /volumes/{name} with X-Team: %s) first", vols, id)
		}
		for _, q := range []string{
			`DELETE FROM sandbox_shares WHERE team_id = ?`,
			`DELETE FROM team_invitations WHERE team_id = ?`,
			`DELETE FROM team_members WHERE team_id = ?`,
			`DELETE FROM team_budgets WHERE team_id = ?`,
			`DELETE FROM team_secrets WHERE team_id = ?`,
		} {
			if _, err := d.exec(ctx, tx, q, id); err != nil {
				return fmt.Errorf("delete team %s: %w", id, err)
			}
		}
		res, err := d.exec(ctx, tx, `DELETE FROM teams WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("delete team %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.Wrap(errs.NotFound, errs.ErrNotFound, "team not found")
		}
		return nil
	})
}
