// Package auth owns users, roles, password hashing, server-side sessions,
// API tokens and login throttling. It holds no HTTP or SQL code: it declares
// the Store it needs and the store package implements it.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/techbossai/techboss/internal/errs"
)

// Role is a user's role.
type Role string

// The roles.
const (
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleMember }

// User is an account.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	// TokenID is the API token that authenticated this request's user
	// (set by Authenticate; empty for a session), for the audit log.
	TokenID string `json:"-"`
}

// IsAdmin reports whether u has the admin role.
func (u *User) IsAdmin() bool { return u != nil && u.Role == RoleAdmin }

// Token describes an API token. The token itself is never stored; only its
// SHA-256 digest is.
type Token struct {
	ID         string    `json:"id"`
	UserID     string    `json:"user_id"`
	Name       string    `json:"name"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// Session is a server-side login session, keyed by the digest of the cookie value.
type Session struct {
	IDHash    string
	UserID    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Secret is a password or token. It redacts itself in logs, fmt output and
// JSON encoding; use Reveal for the one place that needs the value.
type Secret string

const redacted = "[REDACTED]"

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return redacted }

// MarshalJSON keeps a Secret out of any JSON document it lands in by mistake.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// Store is the persistence auth needs. *store.DB implements it. Lookups of
// missing rows return an errs.NotFound error; duplicate emails errs.Conflict.
type Store interface {
	CreateUser(ctx context.Context, u User, passwordHash string) error
	UserByEmail(ctx context.Context, email string) (User, string, error)
	UserByID(ctx context.Context, id string) (User, error)
	CountUsers(ctx context.Context) (int, error)
	SetPassword(ctx context.Context, userID, passwordHash string) error

	CreateSession(ctx context.Context, s Session) error
	// SessionUser returns the session with digest idHash and its user.
	SessionUser(ctx context.Context, idHash string) (Session, User, error)
	DeleteSession(ctx context.Context, idHash string) error
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error)

	CreateToken(ctx context.Context, t Token, tokenHash string) error
	// TokenUser returns the token with digest tokenHash and its user.
	TokenUser(ctx context.Context, tokenHash string) (Token, User, error)
	ListTokens(ctx context.Context, userID string) ([]Token, error)
	// RevokeToken marks the user's token revoked; NotFound if it is not theirs.
	RevokeToken(ctx context.Context, userID, tokenID string, at time.Time) error
	TouchToken(ctx context.Context, tokenID string, at time.Time) error
}

// Options configures a Service. Zero values take the documented defaults.
type Options struct {
	Store  Store
	Logger *slog.Logger
	Clock  func() time.Time
	// SessionTTL is how long a login session lasts (default 7 days).
	SessionTTL time.Duration
	// Hash sets the argon2id cost (default DefaultHashParams).
	Hash HashParams

	// Login throttling (see throttle.go): backoff per (account, client
	// address), with looser gates per address and per account.

	// AccountLimit is how many failed logins one client address may make on
	// one account before each further attempt waits: 1 s after the
	// limit-th failure, doubling with every failure after it, up to
	// MaxDelay (default 5).
	AccountLimit int
	// IPLimit is the same across accounts for one client address: a guesser
	// spraying many accounts (default 20).
	IPLimit int
	// AccountCeiling is the same across client addresses for one account: a
	// distributed guess (default 100). Addresses the account logged in from
	// within AccountKnown skip it (and IPLimit).
	AccountCeiling int
	// ThrottleWindow is how long a key must go without a failure for one of
	// its failures to be forgiven (default 1 hour).
	ThrottleWindow time.Duration
	// MaxDelay caps the wait between attempts (default 15 minutes).
	MaxDelay time.Duration
	// AccountKnown is how long a successful login makes its client address
	// a known one for the account (default 30 days).
	AccountKnown time.Duration
	// ThrottleEntries caps the throttle's table (default 100 000, about
	// 10 MB); see throttle.go for what goes when it is full.
	ThrottleEntries int
}

// Service is the auth domain. It is safe for concurrent use.
type Service struct {
	store      Store
	log        *slog.Logger
	now        func() time.Time
	sessionTTL time.Duration
	hash       HashParams
	throttle   *throttle

	// dummyHash is verified for unknown accounts, so they cost what a wrong
	// password costs.
	dummyHash string
}

// New returns a Service.
func New(o Options) *Service {
	s := &Service{
		store:      o.Store,
		log:        o.Logger,
		now:        o.Clock,
		sessionTTL: o.SessionTTL,
		hash:       o.Hash,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.sessionTTL <= 0 {
		s.sessionTTL = 7 * 24 * time.Hour
	}
	if s.hash == (HashParams{}) {
		s.hash = DefaultHashParams
	}
	s.throttle = &throttle{
		seed: maphash.MakeSeed(),
		limits: [numGates]int{
			gatePair:    positive(o.AccountLimit, 5),
			gateIP:      positive(o.IPLimit, 20),
			gateAccount: positive(o.AccountCeiling, 100),
		},
		forgive:  positive(o.ThrottleWindow, time.Hour),
		maxDelay: positive(o.MaxDelay, 15*time.Minute),
		known:    positive(o.AccountKnown, 30*24*time.Hour),
		capacity: max(positive(o.ThrottleEntries, 100_000), int(numGates)),
		entries:  map[uint64]throttleEntry{},
	}
	// Hashed now, with the cost new passwords get, rather than on the first
	// unknown email (which would then take twice as long as a wrong password).
	h, err := s.hash.Hash(Secret("dummy password for timing equalisation"))
	if err != nil {
		panic(fmt.Sprintf("auth: hash the dummy password: %v", err)) // crypto/rand failed
	}
	s.dummyHash = h
	return s
}

func positive[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// SessionTTL returns how long new sessions last.
func (s *Service) SessionTTL() time.Duration { return s.sessionTTL }

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 8

// NormalizeEmail lower-cases and trims an email address.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

func validateEmail(field, email string) error {
	if email == "" {
		return errs.Field(field, "required")
	}
	if len(email) > 254 {
		return errs.Field(field, "too long (max 254)")
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		return errs.Field(field, "not a valid email address")
	}
	return nil
}

func validatePassword(field string, p Secret) error {
	if utf8.RuneCountInString(string(p)) < MinPasswordLen {
		return errs.Field(field, fmt.Sprintf("must be at least %d characters", MinPasswordLen))
	}
	if len(p) > 1024 {
		return errs.Field(field, "too long (max 1024 bytes)")
	}
	return nil
}

// CreateUser adds a user. The email must be unique (Conflict otherwise).
func (s *Service) CreateUser(ctx context.Context, email string, password Secret, role Role) (*User, error) {
	email = NormalizeEmail(email)
	var fs []errs.FieldError
	for _, err := range []error{validateEmail("email", email), validatePassword("password", password)} {
		if e, ok := errs.Public(err); ok {
			fs = append(fs, e.Fields...)
		}
	}
	if role == "" {
		role = RoleMember
	}
	if !role.Valid() {
		fs = append(fs, errs.FieldError{Field: "role", Reason: "must be admin or member"})
	}
	if err := errs.Fields(fs); err != nil {
		return nil, err
	}
	hash, err := s.hash.Hash(password)
	if err != nil {
		return nil, err
	}
	u := User{ID: uuid.NewString(), Email: email, Role: role, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if err := s.store.CreateUser(ctx, u, hash); err != nil {
		return nil, fmt.Errorf("create user: %w", err)
	}
	s.log.InfoContext(ctx, "user created", "user_id", u.ID, "role", string(u.Role))
	return &u, nil
}

// SetPassword replaces a user's password.
func (s *Service) SetPassword(ctx context.Context, userID string, password Secret) error {
	if err := validatePassword("password", password); err != nil {
		return err
	}
	hash, err := s.hash.Hash(password)
	if err != nil {
		return err
	}
	return s.store.SetPassword(ctx, userID, hash)
}

// UserByEmail returns the user with that email.
func (s *Service) UserByEmail(ctx context.Context, email string) (*User, error) {
	u, _, err := s.store.UserByEmail(ctx, NormalizeEmail(email))
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// BootstrapAdmin creates an admin with the given credentials when no user
// exists yet. It reports whether it created one.
func (s *Service) BootstrapAdmin(ctx context.Context, email string, password Secret) (bool, error) {
	n, err := s.store.CountUsers(ctx)
	if err != nil {
		return false, fmt.Errorf("count users: %w", err)
	}
	if n > 0 {
		return false, nil
	}
	if _, err := s.CreateUser(ctx, email, password, RoleAdmin); err != nil {
		if errs.KindOf(err) == errs.Conflict {
			return false, nil // another replica won the race
		}
		return false, err
	}
	return true, nil
}

// errBadCredentials is the one answer for an unknown email and a wrong
// password alike, so the response does not reveal which accounts exist.
func errBadCredentials() error {
	return errs.E(errs.Unauthenticated, "invalid email or password")
}

// LoginResult is a successful login.
type LoginResult struct {
	User *User
	// SessionToken is the cookie value; only its digest is stored.
	SessionToken Secret
	ExpiresAt    time.Time
}

// Login checks credentials and opens a session. clientIP is the client's
// address as the HTTP layer resolved it (may be empty); with the email it
// keys the throttle. Throttled attempts get TooMany with RetryAfter, before
// any lookup, and an unknown email costs and counts exactly what a wrong
// password does.
func (s *Service) Login(ctx context.Context, email string, password Secret, clientIP string) (*LoginResult, error) {
	email = NormalizeEmail(email)
	var fs []errs.FieldError
	if email == "" {
		fs = append(fs, errs.FieldError{Field: "email", Reason: "required"})
	}
	if password == "" {
		fs = append(fs, errs.FieldError{Field: "password", Reason: "required"})
	}
	if err := errs.Fields(fs); err != nil {
		return nil, err
	}
	now := s.now()
	keys := s.throttle.keys(email, clientIP)
	if err := s.throttle.admit(keys, now); err != nil {
		s.log.InfoContext(ctx, "login throttled")
		return nil, err
	}
	u, hash, err := s.store.UserByEmail(ctx, email)
	found := err == nil
	if err != nil && errs.KindOf(err) != errs.NotFound {
		s.throttle.refund(keys)
		return nil, fmt.Errorf("login lookup: %w", err)
	}
	if !found {
		hash = s.dummyHash
	}
	ok, verr := verifyPassword(hash, password)
	if verr != nil {
		s.throttle.refund(keys)
		return nil, fmt.Errorf("verify password: %w", verr)
	}
	if !found || !ok {
		// The attempt was charged when admitted: nothing more to record.
		s.log.InfoContext(ctx, "login failed", "known_account", found)
		return nil, errBadCredentials()
	}
	s.throttle.succeed(keys, now)
	tok, err := newSecret("tbs_")
	if err != nil {
		return nil, err
	}
	sess := Session{IDHash: Digest(tok), UserID: u.ID, CreatedAt: now, ExpiresAt: now.Add(s.sessionTTL)}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	s.log.InfoContext(ctx, "login", "user_id", u.ID)
	return &LoginResult{User: &u, SessionToken: tok, ExpiresAt: sess.ExpiresAt}, nil
}

// SessionUser returns the user of a live session cookie value.
// Unknown and expired sessions are Unauthenticated.
func (s *Service) SessionUser(ctx context.Context, token string) (*User, error) {
	if token == "" {
		return nil, errs.E(errs.Unauthenticated, "authentication required")
	}
	sess, u, err := s.store.SessionUser(ctx, Digest(Secret(token)))
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, errs.E(errs.Unauthenticated, "session expired or invalid")
		}
		return nil, fmt.Errorf("session lookup: %w", err)
	}
	if !s.now().Before(sess.ExpiresAt) {
		return nil, errs.E(errs.Unauthenticated, "session expired or invalid")
	}
	return &u, nil
}

// Logout ends the session with that cookie value. Unknown sessions are fine.
func (s *Service) Logout(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	if err := s.store.DeleteSession(ctx, Digest(Secret(token))); err != nil && errs.KindOf(err) != errs.NotFound {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// PruneSessions deletes expired sessions and returns how many.
func (s *Service) PruneSessions(ctx context.Context) (int64, error) {
	return s.store.DeleteExpiredSessions(ctx, s.now())
}

// Prune deletes expired sessions and forgets expired login-throttle
// entries (the throttle's table is capped anyway; this keeps it small).
func (s *Service) Prune(ctx context.Context) (sessions, throttles int64, err error) {
	throttles = int64(s.throttle.prune(s.now()))
	if sessions, err = s.PruneSessions(ctx); err != nil {
		return 0, throttles, fmt.Errorf("prune sessions: %w", err)
	}
	return sessions, throttles, nil
}

// TokenPrefix starts every user API token, so they are recognisable in
// secret scanners and distinguishable from run-scoped tokens.
const TokenPrefix = "tbk_"

// CreateToken issues a new API token for the user. The returned secret is
// shown once; only its digest is kept.
func (s *Service) CreateToken(ctx context.Context, userID, name string) (*Token, Secret, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return nil, "", errs.Field("name", "required")
	case utf8.RuneCountInString(name) > 100:
		return nil, "", errs.Field("name", "too long (max 100 characters)")
	}
	sec, err := newSecret(TokenPrefix)
	if err != nil {
		return nil, "", err
	}
	t := Token{ID: uuid.NewString(), UserID: userID, Name: name, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if err := s.store.CreateToken(ctx, t, Digest(sec)); err != nil {
		return nil, "", fmt.Errorf("create token: %w", err)
	}
	s.log.InfoContext(ctx, "api token created", "user_id", userID, "token_id", t.ID)
	return &t, sec, nil
}

// ListTokens returns the user's tokens (revoked ones included, newest first).
func (s *Service) ListTokens(ctx context.Context, userID string) ([]Token, error) {
	return s.store.ListTokens(ctx, userID)
}

// RevokeToken revokes one of the user's tokens. Someone else's token is NotFound.
func (s *Service) RevokeToken(ctx context.Context, userID, tokenID string) error {
	if err := s.store.RevokeToken(ctx, userID, tokenID, s.now()); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "api token revoked", "user_id", userID, "token_id", tokenID)
	return nil
}

// Authenticate returns the user owning a live API token (the value after
// "Bearer "). Unknown and revoked tokens are Unauthenticated.
func (s *Service) Authenticate(ctx context.Context, token string) (*User, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 200 {
		return nil, errs.E(errs.Unauthenticated, "invalid API token")
	}
	t, u, err := s.store.TokenUser(ctx, Digest(Secret(token)))
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, errs.E(errs.Unauthenticated, "invalid API token")
		}
		return nil, fmt.Errorf("token lookup: %w", err)
	}
	if !t.RevokedAt.IsZero() {
		return nil, errs.E(errs.Unauthenticated, "invalid API token")
	}
	now := s.now()
	// Record use at most once a minute to keep writes off the hot path.
	if now.Sub(t.LastUsedAt) > time.Minute {
		if err := s.store.TouchToken(ctx, t.ID, now); err != nil {
			s.log.WarnContext(ctx, "touch token", "token_id", t.ID, "err", err)
		}
	}
	u.TokenID = t.ID
	return &u, nil
}

// Digest returns the hex SHA-256 of a high-entropy secret: what the store
// keeps instead of session and token values. The lookup by digest is an
// index equality on a value an attacker cannot choose to collide, so it
// leaks nothing useful through timing.
func Digest(s Secret) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// newSecret returns prefix + 32 random bytes, base64url.
func newSecret(prefix string) (Secret, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return Secret(prefix + base64.RawURLEncoding.EncodeToString(b[:])), nil
}
