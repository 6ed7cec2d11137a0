package main

import (
	"os/exec"
	"strings"
	"testing"
)

// Every sandbox runs this binary, so what it links is paid per sandbox in
// host memory (its package initialisation and its pages): it stays out of
// the server's packages (internal/sandbox pulled in metrics, image and
// Dockerfile parsing and protobuf: twice the binary, 0.6 MB of heap at
// start, ~1.3 MiB more PSS per sandbox). Only the standard library,
// golang.org/x/sys and the agent's own packages.
func TestLinksOnlyTheAgent(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/techbossai/techboss/cmd/techboss-sandbox-init":              true,
		"github.com/techbossai/techboss/internal/sandbox/local/agent":           true,
		"github.com/techbossai/techboss/internal/outring":                       true, // standard library only
		"github.com/techbossai/techboss/internal/sandbox/local/runsc/initproto": true,
	}
	for p := range strings.FieldsSeq(string(out)) {
		first, _, _ := strings.Cut(p, "/")
		if !strings.Contains(first, ".") || p == "golang.org/x/sys/unix" || allowed[p] {
			continue // the standard library, x/sys, ours
		}
		t.Errorf("techboss-sandbox-init links %s", p)
	}
}
