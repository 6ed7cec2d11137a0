package snapshot_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/internal/snapshot"
)

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	s := snapshot.New(snapshot.Config{Metrics: snapshot.NewMetrics(reg)})
	loc := snapshot.Location{Store: fsBackend().open(t)}
	dir := t.TempDir()
	write(t, dir, "a", []byte("12345"), 0o644)
	write(t, dir, "b", []byte("12345"), 0o644) // same content: deduplicated
	r, err := s.Snapshot(ctx, loc, dir, snapshot.Options{})
	must(t, err)
	if _, err := s.Restore(ctx, loc, r.Manifest.Name, filepath.Join(t.TempDir(), "out"), snapshot.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	// A failing snapshot (source missing) counts a failure.
	if _, err := s.Snapshot(ctx, loc, filepath.Join(dir, "missing"), snapshot.Options{}); err == nil {
		t.Fatal("snapshot of a missing dir succeeded")
	}
	mfs, err := reg.Gather()
	must(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				got[mf.GetName()] += m.Counter.GetValue()
			case m.Histogram != nil:
				got[mf.GetName()] += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"techboss_snapshot_uploaded_bytes_total":     5,
		"techboss_snapshot_deduplicated_bytes_total": 5,
		"techboss_snapshot_duration_seconds":         1,
		"techboss_snapshot_restore_duration_seconds": 1,
		"techboss_snapshot_failures_total":           1,
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
}
