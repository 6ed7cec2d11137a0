package fs_test

import (
	"testing"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/blob/blobtest"
	"github.com/techbossai/techboss/internal/blob/fs"
)

func TestStore(t *testing.T) {
	blobtest.Exercise(t, func(t *testing.T) blob.Store {
		s, err := fs.New(t.TempDir(), fs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, blobtest.Options{})
}
