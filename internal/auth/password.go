package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// HashParams are argon2id costs.
type HashParams struct {
	Time    uint32
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultHashParams follow the OWASP minimum for argon2id (19 MiB, t=2, p=1).
var DefaultHashParams = HashParams{Time: 2, Memory: 19 * 1024, Threads: 1}

// TestHashParams are cheap costs for tests only.
var TestHashParams = HashParams{Time: 1, Memory: 1024, Threads: 1}

const keyLen = 32

// Hash returns a PHC-format argon2id hash of password.
func (p HashParams) Hash(password Secret) (string, error) {
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return "", fmt.Errorf("random salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt[:], p.Time, p.Memory, p.Threads, keyLen)
	releaseWorkArea(p.Memory)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt[:]), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errBadHash = errors.New("unrecognised password hash")

// verifyPassword checks password against a PHC argon2id hash in constant time.
func verifyPassword(hash string, password Secret) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, errBadHash
	}
	var p HashParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, errBadHash
	}
	if p.Time == 0 || p.Threads == 0 || p.Memory == 0 || p.Memory > 1<<22 {
		return false, errBadHash
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 128 {
		return false, errBadHash
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	releaseWorkArea(p.Memory)
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// trimQuiet is how long password hashing must pause before its work areas
// are given back to the OS.
const trimQuiet = time.Second

var trim struct {
	mu sync.Mutex
	t  *time.Timer
}

// releaseWorkArea gives argon2's work area (memory KiB, 19 MiB by default,
// garbage once the hash is made) back to the OS once hashing pauses for
// trimQuiet, so a server idle after logins holds what it did before them;
// the collector alone would keep it until its forced collection two
// minutes later and return it over minutes more. Small work areas (tests')
// are left to the collector.
func releaseWorkArea(memory uint32) {
	if memory < 8*1024 {
		return
	}
	trim.mu.Lock()
	defer trim.mu.Unlock()
	if trim.t == nil {
		trim.t = time.AfterFunc(trimQuiet, debug.FreeOSMemory)
		return
	}
	trim.t.Reset(trimQuiet)
}
