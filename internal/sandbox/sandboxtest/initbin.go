package sandboxtest

import (
	"fmt"
	"os"
	"os/exec"
)

// BuildInit builds the local driver's static techboss-sandbox-init helper
// to path, as `make build` does next to the server binary. Tests that run
// the local driver call it once (TestMain or a sync.Once).
func BuildInit(path string) error {
	cmd := exec.Command("go", "build", "-o", path, "github.com/techbossai/techboss/cmd/techboss-sandbox-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build techboss-sandbox-init: %v\n%s", err, out)
	}
	return nil
}
