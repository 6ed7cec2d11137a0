package store_test

import (
	"testing"

	"github.com/techbossai/techboss/internal/store"
	"github.com/techbossai/techboss/internal/store/storetest"
)

func TestSQLite(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) *store.DB { return storetest.OpenSQLite(t) })
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) *store.DB { return storetest.OpenPostgres(t) })
}
