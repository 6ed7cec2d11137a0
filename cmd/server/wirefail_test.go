package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/sandbox/local/diskimg"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// A server that fails to start after its local driver is up (here: the
// blob store's directory is a file) closes the driver again: nothing of it
// stays mounted below the data dir.
func TestWireFailureReleasesDriver(t *testing.T) {
	sandboxtest.RequireLocal(t)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "blobs"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TECHBOSS_DATA_DIR": data, "TECHBOSS_SANDBOX_INIT": sandboxInit, "PORT": "0", "TECHBOSS_HOST": "127.0.0.1"}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "blob store") {
		t.Fatalf("run = %v, want the blob store's error", err)
	}
	mounts, err := diskimg.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Point == data || strings.HasPrefix(m.Point, data+"/") {
			t.Errorf("still mounted after the failed start: %s", m.Point)
		}
	}
}
