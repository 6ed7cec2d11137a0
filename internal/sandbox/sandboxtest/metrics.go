package sandboxtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// WarmPoolReady reads the local driver's techboss_sandbox_warm_pool_ready
// gauge (the sandboxes its warm pool holds ready) from reg; 0 when absent.
func WarmPoolReady(t testing.TB, reg prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "techboss_sandbox_warm_pool_ready" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
