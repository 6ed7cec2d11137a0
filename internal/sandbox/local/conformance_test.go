package local

import (
	"testing"

	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	sandboxtest.Exercise(t, func(t *testing.T) sandbox.Driver { return newTestDriver(t, "") })
}
