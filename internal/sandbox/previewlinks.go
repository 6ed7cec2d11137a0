package sandbox

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
)

// PreviewLink is a share link to one port of a sandbox: whoever holds its
// token reaches that port through the preview proxy until it expires or
// its owner revokes it. The token itself is never stored.
type PreviewLink struct {
	ID        string    `json:"link_id"`
	SandboxID string    `json:"sandbox_id"`
	OwnerID   string    `json:"-"`
	Port      int       `json:"port"`
	TokenHash string    `json:"-"` // hex SHA-256 of the token
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// PreviewLinkRepo persists preview links (internal/store implements it).
type PreviewLinkRepo interface {
	CreatePreviewLink(ctx context.Context, l *PreviewLink) error
	// GetPreviewLink returns one link or an error wrapping errs.ErrNotFound.
	GetPreviewLink(ctx context.Context, id string) (*PreviewLink, error)
	// ListPreviewLinks returns the unexpired links to one port, newest first.
	ListPreviewLinks(ctx context.Context, sandboxID string, port int, now time.Time) ([]*PreviewLink, error)
	// DeletePreviewLink removes one link of a sandbox or returns an error
	// wrapping errs.ErrNotFound.
	DeletePreviewLink(ctx context.Context, sandboxID, id string) error
	// DeleteExpiredPreviewLinks removes the links that expired before now.
	DeleteExpiredPreviewLinks(ctx context.Context, now time.Time) error
}

// Preview link lifetimes.
const (
	DefaultPreviewLinkTTL = time.Hour
	MaxPreviewLinkTTL     = 30 * 24 * time.Hour
)

// PreviewLinks issues, checks and revokes share links.
type PreviewLinks struct {
	m    *Manager
	repo PreviewLinkRepo
	key  []byte
	now  func() time.Time
}

// NewPreviewLinks returns the link service. key signs the tokens (replicas
// must share it); now is the clock (nil: time.Now).
func NewPreviewLinks(m *Manager, repo PreviewLinkRepo, key []byte, now func() time.Time) (*PreviewLinks, error) {
	if len(key) < 32 {
		return nil, errors.New("preview links: the signing key must be at least 32 bytes")
	}
	if now == nil {
		now = time.Now
	}
	return &PreviewLinks{m: m, repo: repo, key: key, now: now}, nil
}

// Create issues a link to port of the owner's sandbox, valid for ttl
// (0: DefaultPreviewLinkTTL). The token is returned once, here.
func (p *PreviewLinks) Create(ctx context.Context, ownerID, sandboxID string, port int, ttl time.Duration) (*PreviewLink, string, error) {
	if ttl == 0 {
		ttl = DefaultPreviewLinkTTL
	}
	if ttl < time.Second || ttl > MaxPreviewLinkTTL {
		return nil, "", errs.Field("expires_in_s", fmt.Sprintf("must be between 1 and %d seconds", int(MaxPreviewLinkTTL/time.Second)))
	}
	if _, _, err := p.m.Running(ctx, ownerID, sandboxID); err != nil {
		return nil, "", err
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	now := p.now().UTC().Truncate(time.Millisecond)
	l := &PreviewLink{
		ID: "pl_" + hex.EncodeToString(b[:]), SandboxID: sandboxID, OwnerID: ownerID, Port: port,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	tok := l.ID + "." + p.sign(l)
	l.TokenHash = hashToken(tok)
	// Expired links are useless; sweep them when new ones are made.
	if err := p.repo.DeleteExpiredPreviewLinks(ctx, now); err != nil {
		return nil, "", err
	}
	if err := p.repo.CreatePreviewLink(ctx, l); err != nil {
		return nil, "", err
	}
	return l, tok, nil
}

// List returns the owner's unexpired links to port of a sandbox.
func (p *PreviewLinks) List(ctx context.Context, ownerID, sandboxID string, port int) ([]*PreviewLink, error) {
	if _, err := p.m.Get(ctx, ownerID, sandboxID); err != nil {
		return nil, err
	}
	return p.repo.ListPreviewLinks(ctx, sandboxID, port, p.now())
}

// Revoke deletes a link of the owner's sandbox: its token stops working at once.
func (p *PreviewLinks) Revoke(ctx context.Context, ownerID, sandboxID string, port int, linkID string) error {
	if _, err := p.m.Get(ctx, ownerID, sandboxID); err != nil {
		return err
	}
	l, err := p.repo.GetPreviewLink(ctx, linkID)
	if err != nil || l.SandboxID != sandboxID || l.Port != port {
		return errs.E(errs.NotFound, "preview link not found")
	}
	return p.repo.DeletePreviewLink(ctx, sandboxID, linkID)
}

// Check returns the link that tok opens for port of sandboxID: NotFound
// when the token is not one of ours for that port (or was revoked),
// Forbidden when it expired.
func (p *PreviewLinks) Check(ctx context.Context, tok, sandboxID string, port int) (*PreviewLink, error) {
	notFound := errs.E(errs.NotFound, "preview link not found (revoked, or not a link to this port)")
	id, _, ok := strings.Cut(tok, ".")
	if !ok || !strings.HasPrefix(id, "pl_") || len(tok) > 200 {
		return nil, notFound
	}
	l, err := p.repo.GetPreviewLink(ctx, id)
	if errors.Is(err, errs.ErrNotFound) || errs.KindOf(err) == errs.NotFound {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(hashToken(tok)), []byte(l.TokenHash)) != 1 ||
		subtle.ConstantTimeCompare([]byte(tok), []byte(l.ID+"."+p.sign(l))) != 1 ||
		l.SandboxID != sandboxID || l.Port != port {
		return nil, notFound
	}
	if !p.now().Before(l.ExpiresAt) {
		return nil, errs.E(errs.Forbidden, "preview link expired at %s", l.ExpiresAt.Format(time.RFC3339))
	}
	return l, nil
}

// OwnerPassTTL is how long an owner pass opens a preview.
const OwnerPassTTL = 12 * time.Hour

// ownerPassPrefix starts every owner pass (never a link token, "pl_").
const ownerPassPrefix = "po."

// OwnerPass returns a token that opens port of sandboxID as ownerID for
// OwnerPassTTL. The path form gives it to the owner's browser as a cookie
// scoped to the preview: a page served there runs in an opaque origin, so
// the requests it makes are cross-site and the session cookie
// (SameSite=Lax) does not go with them. It is signed, not stored: it
// grants no more than the owner has (the proxy dials as the owner).
func (p *PreviewLinks) OwnerPass(ownerID, sandboxID string, port int) string {
	body := ownerPassPrefix + strconv.FormatInt(p.now().Add(OwnerPassTTL).Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString([]byte(ownerID))
	return body + "." + p.passMAC(body, sandboxID, port)
}

// IsOwnerPass reports whether tok has an owner pass's form.
func IsOwnerPass(tok string) bool { return strings.HasPrefix(tok, ownerPassPrefix) }

// CheckOwnerPass returns the owner an owner pass for port of sandboxID
// names: NotFound when it is not one (forged, another port), Forbidden
// when it expired.
func (p *PreviewLinks) CheckOwnerPass(tok, sandboxID string, port int) (string, error) {
	notFound := errs.E(errs.NotFound, "preview pass not valid for this port")
	parts := strings.Split(tok, ".")
	if len(tok) > 400 || len(parts) != 4 || parts[0]+"." != ownerPassPrefix {
		return "", notFound
	}
	body := strings.Join(parts[:3], ".")
	if !hmac.Equal([]byte(parts[3]), []byte(p.passMAC(body, sandboxID, port))) {
		return "", notFound
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	owner, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || err2 != nil || len(owner) == 0 {
		return "", notFound
	}
	if p.now().Unix() >= exp {
		return "", errs.E(errs.Forbidden, "preview pass expired: open the preview from the server again")
	}
	return string(owner), nil
}

func (p *PreviewLinks) passMAC(body, sandboxID string, port int) string {
	h := hmac.New(sha256.New, p.key)
	h.Write([]byte("techboss preview owner pass\x00" + body + "\x00" + sandboxID + "\x00" + strconv.Itoa(port)))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// sign is the token's MAC over everything the link grants.
func (p *PreviewLinks) sign(l *PreviewLink) string {
	h := hmac.New(sha256.New, p.key)
	h.Write([]byte("techboss preview link\x00" + l.ID + "\x00" + l.SandboxID + "\x00" + strconv.Itoa(l.Port) + "\x00" + strconv.FormatInt(l.ExpiresAt.UnixMilli(), 10)))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func hashToken(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}
