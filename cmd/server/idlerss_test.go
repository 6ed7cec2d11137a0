package main

import (
	"fmt"
	"os"
	"testing"
)

// The start-up garbage (two 19 MiB argon2 hashes here: the dummy one and
// the bootstrapped admin's) is given back to the OS before the server
// listens, not held until the runtime's first forced collection two
// minutes later: its anonymous memory right after it listens is well
// under those two hashes (~9 MiB measured; ~52 MiB without).
func TestIdleMemoryReturned(t *testing.T) {
	p := startProc(t, map[string]string{"PORT": "0", "TECHBOSS_HOST": "127.0.0.1", "TECHBOSS_DATA_DIR": t.TempDir(),
		"TECHBOSS_ADMIN_EMAIL": "admin@example.com", "TECHBOSS_ADMIN_PASSWORD": "idle-memory-password-1"})
	defer p.stop()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if anon := statusKB(st, "RssAnon:") << 10; anon > 24<<20 {
		t.Errorf("RssAnon %d MiB once listening, want under 24 MiB (start-up garbage not returned)", anon>>20)
	}
}
