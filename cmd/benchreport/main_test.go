package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunPairsFloorsAndTargets(t *testing.T) {
	in := strings.Join([]string{
		"goos: linux",
		"BenchmarkHTTPExecTrue-2   1   123 ns/op   4.00 p50-ms   2.00 floor-p50-ms   9.00 p99-ms",
		"BenchmarkExecStdoutStream-2   1   5 ns/op   400 MiB/s   1000 floor-MiB/s",
		"PASS",
	}, "\n")
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var out bytes.Buffer
	if err := run([]string{"-json", jsonPath}, strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Rows []Row }
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Rows) != 3 {
		t.Fatalf("got %d rows, want 3: %+v", len(got.Rows), got.Rows)
	}
	byKey := map[string]Row{}
	for _, r := range got.Rows {
		byKey[r.Benchmark+" "+r.Unit] = r
	}
	exec := byKey["HTTPExecTrue p50-ms"]
	if exec.Ratio != 2 || exec.Met == nil || !*exec.Met {
		t.Errorf("HTTPExecTrue p50: got ratio %v met %v, want 2 and met", exec.Ratio, exec.Met)
	}
	stream := byKey["ExecStdoutStream MiB/s"]
	if stream.Met == nil || *stream.Met {
		t.Errorf("ExecStdoutStream: 400 MiB/s against a 550 target must be unmet, got %v", stream.Met)
	}
	if !strings.Contains(out.String(), "NO") {
		t.Errorf("table does not flag the unmet target:\n%s", out.String())
	}
}
