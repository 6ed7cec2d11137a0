// Package secrets is the users' secret store: values written through the
// API (MCP server credentials and the like), sealed with AES-256-GCM under
// the server's key before they reach the database, bound to their owner
// and name (a sealed value moved to another row does not open), and
// revealed only to the run that uses them. The API never returns a value.
package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/store"
)

// Backend persists sealed values (internal/store implements it).
type Backend interface {
	PutSecret(ctx context.Context, userID, name, sealed string, at time.Time) error
	SealedSecret(ctx context.Context, userID, name string) (string, error)
	ListSecrets(ctx context.Context, userID string) ([]store.SecretInfo, error)
	DeleteSecret(ctx context.Context, userID, name string) error
}

// TeamOwner is the owner key a team's secrets are stored (in the store's
// team_secrets table) and sealed under: user IDs are UUIDs, so a team's
// secrets and a user's never meet, and a sealed value does not open under
// another owner.
func TeamOwner(teamID string) string { return "team:" + teamID }

// RevealRef returns a Reveal that also opens team secrets: a reference
// "team:<team id>/<name>" is the team's secret <name>, revealed only while
// ownerID (the sandbox's owner) may use the team's secrets (use reports
// it: team owners and members); otherwise, and for a missing secret,
// errs.NotFound. Any other reference is ownerID's own secret.
func (s *Store) RevealRef(use func(ctx context.Context, teamID, userID string) (bool, error)) func(ctx context.Context, ownerID, ref string) (string, error) {
	return func(ctx context.Context, ownerID, ref string) (string, error) {
		rest, ok := strings.CutPrefix(ref, "team:")
		if !ok {
			return s.Reveal(ctx, ownerID, ref)
		}
		team, name, ok := strings.Cut(rest, "/")
		if !ok || team == "" {
			return "", errs.E(errs.NotFound, "no secret named %q", ref)
		}
		allowed, err := use(ctx, team, ownerID)
		if err != nil {
			return "", err
		}
		if !allowed {
			return "", errs.E(errs.NotFound, "no secret named %q", ref)
		}
		return s.Reveal(ctx, TeamOwner(team), name)
	}
}

// MaxValue bounds a secret's value.
const MaxValue = 64 << 10

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ValidName reports whether s may name a secret.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Store seals, stores and reveals secrets.
type Store struct {
	db   Backend
	aead cipher.AEAD
	now  func() time.Time
}

// New returns a store sealing with key (32 bytes).
func New(db Backend, key []byte) (*Store, error) {
	if len(key) != 32 {
		return nil, errors.New("secrets: the key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Store{db: db, aead: aead, now: time.Now}, nil
}

// LoadKey returns the key configured in TECHBOSS_SECRET_KEY (64 hex
// digits, or base64 of 32 bytes), or, when it is empty, the key kept in
// dataDir/secret.key, made on first use (mode 0600). A key file is fine
// for one server; replicas must share TECHBOSS_SECRET_KEY.
func LoadKey(configured, dataDir string) ([]byte, error) {
	if configured != "" {
		return parseKey(configured)
	}
	path := filepath.Join(dataDir, "secret.key")
	if b, err := os.ReadFile(path); err == nil {
		return parseKey(strings.TrimSpace(string(b)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // another process made it first
			return LoadKey("", dataDir)
		}
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return key, nil
}

func parseKey(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	return nil, errors.New("TECHBOSS_SECRET_KEY: want 32 bytes as 64 hex digits or base64")
}

func aad(userID, name string) []byte {
	h := sha256.Sum256([]byte(userID + "\x00" + name))
	return h[:]
}

// Put stores value as userID's secret name.
func (s *Store) Put(ctx context.Context, userID, name, value string) error {
	var fs []errs.FieldError
	if !ValidName(name) {
		fs = append(fs, errs.FieldError{Field: "name", Reason: "1 to 64 of A-Z a-z 0-9 _ . -"})
	}
	if value == "" || len(value) > MaxValue {
		fs = append(fs, errs.FieldError{Field: "value", Reason: fmt.Sprintf("must be 1 to %d bytes", MaxValue)})
	}
	if err := errs.Fields(fs); err != nil {
		return err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := s.aead.Seal(nonce, nonce, []byte(value), aad(userID, name))
	return s.db.PutSecret(ctx, userID, name, "v1:"+base64.StdEncoding.EncodeToString(sealed), s.now().UTC())
}

// Reveal returns the value of userID's secret name (for a run's use only).
func (s *Store) Reveal(ctx context.Context, userID, name string) (string, error) {
	sealed, err := s.db.SealedSecret(ctx, userID, name)
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, "v1:"))
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", fmt.Errorf("secret %s: malformed", name)
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], aad(userID, name))
	if err != nil {
		return "", errs.E(errs.Conflict, "secret %s cannot be opened with this server's key (TECHBOSS_SECRET_KEY changed?): store it again", name)
	}
	return string(plain), nil
}

// List returns userID's secrets, without values.
func (s *Store) List(ctx context.Context, userID string) ([]store.SecretInfo, error) {
	return s.db.ListSecrets(ctx, userID)
}

// Delete removes userID's secret name.
func (s *Store) Delete(ctx context.Context, userID, name string) error {
	return s.db.DeleteSecret(ctx, userID, name)
}
