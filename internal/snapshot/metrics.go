package snapshot

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the snapshot counters and timings. A nil *Metrics records nothing.
type Metrics struct {
	uploaded   prometheus.Counter
	deduped    prometheus.Counter
	snapDur    prometheus.Histogram
	restoreDur prometheus.Histogram
	failures   *prometheus.CounterVec
}

// NewMetrics registers the snapshot metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900}
	m := &Metrics{
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "techboss_snapshot_uploaded_bytes_total", Help: "Content bytes uploaded by snapshots."}),
		deduped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "techboss_snapshot_deduplicated_bytes_total", Help: "Content bytes of snapshot files whose blob was already stored."}),
		snapDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "techboss_snapshot_duration_seconds", Help: "Time to take a snapshot.", Buckets: buckets}),
		restoreDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "techboss_snapshot_restore_duration_seconds", Help: "Time to restore or import a snapshot.", Buckets: buckets}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "techboss_snapshot_failures_total", Help: "Failed snapshot operations by operation."}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.uploaded, m.deduped, m.snapDur, m.restoreDur, m.failures)
	}
	return m
}

func (m *Metrics) snapshotDone(seconds float64, st Stats, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.failures.WithLabelValues("snapshot").Inc()
		return
	}
	m.snapDur.Observe(seconds)
	m.uploaded.Add(float64(st.UploadedBytes))
	m.deduped.Add(float64(st.DedupedBytes))
}

func (m *Metrics) restoreDone(op string, seconds float64, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.failures.WithLabelValues(op).Inc()
		return
	}
	m.restoreDur.Observe(seconds)
}
