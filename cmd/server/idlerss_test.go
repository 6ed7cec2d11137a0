package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The start-up garbage (two 19 MiB argon2 hashes here: the dummy one and
// the bootstrapped admin's) is given back to the OS before the server
// listens, not held until the runtime's first forced collection two
// minutes later: its anonymous memory right after it listens is well
// under those two hashes (~9 MiB measured; ~52 MiB without). So is a
// login's, once logins pause. The pages of the binary start-up mapped in
// are released before it listens (internal/memtrim).
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
	// The binary's pages that start-up mapped in are released too (~12 MiB
	// of them are back once it listens; ~50 without the release).
	if anon, file := statusKB(st, "RssAnon:")<<10, statusKB(st, "RssFile:")<<10; anon+file > 40<<20 {
		t.Errorf("RSS %d MiB once listening (anonymous %d, the binary's pages %d), want at most 40 MiB",
			(anon+file)>>20, anon>>20, file>>20)
	}

	// Logins hash too (19 MiB each, garbage after): once they pause, the
	// memory goes back, not two minutes or more later. Polled, not timed:
	// it fails only if the memory is still held after a minute.
	for _, pw := range []string{"idle-memory-password-1", "a-wrong-password", "idle-memory-password-1"} {
		res, err := http.Post(p.url+"/auth/login", "application/json",
			strings.NewReader(`{"email":"admin@example.com","password":"`+pw+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	var anon int64
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if anon = statusKB(st, "RssAnon:") << 10; anon <= 24<<20 {
			return
		}
	}
	t.Errorf("RssAnon still %d MiB a minute after three logins, want under 24 MiB", anon>>20)
}
