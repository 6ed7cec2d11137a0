// Command benchreport reads `go test -bench` output on stdin, prints the
// table of metric, ours, floor (measured in the same run), ratio and target,
// and writes the same rows as JSON to the file named by -json.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// Row is one metric of one benchmark.
type Row struct {
	Benchmark string  `json:"benchmark"`
	Metric    string  `json:"metric"`
	Unit      string  `json:"unit"`
	Ours      float64 `json:"ours"`
	Floor     float64 `json:"floor,omitempty"`
	Ratio     float64 `json:"ratio,omitempty"`
	Target    string  `json:"target,omitempty"`
	Met       *bool   `json:"met,omitempty"`
}

// target is a goal on one metric: ours (op) value, e.g. p50-ms <= 50.
type target struct {
	unit  string
	op    string // "<", "<=", ">=" or "ratio>=" (ours/floor for throughput)
	value float64
}

// targets maps a benchmark name (without the Benchmark prefix and -N
// suffix) to its goals, from issue 9.
var targets = map[string][]target{
	"HTTPCreateFirstExec":     {{"p50-ms", "<=", 50}},
	"HTTPCreateFirstExecWarm": {{"p50-ms", "<=", 5}},
	"HTTPExecTrue":            {{"p50-ms", "<=", 10}},
	"ExecStdoutStream":        {{"MiB/s", ">=", 550}},
	"FileUpload":              {{"MiB/s", ">=", 900}},
	"FileDownload":            {{"MiB/s", ">=", 900}},
	"SSEFanout":               {{"p99-ms", "<", 50}, {"B/sub", "<", 64 << 10}},
	"SnapshotNoChange10k":     {{"p50-ms", "<", 1000}},
	"SnapshotFirst":           {{"MiB/s", "ratio>=", 0.70}},
	"Restore":                 {{"MiB/s", "ratio>=", 0.70}},
	"CLILineToSSE":            {{"p99-ms", "<=", 2}},
	"CLIDeltaToSSE":           {{"p99-ms", "<=", 2}},
	"PreviewProxy":            {{"added-p50-ms", "<=", 1}},
	"IdleRSS":                 {{"rss-MiB", "<=", 40}},
	"SandboxMemory":           {{"pss-MiB", "<=", 4}},
	"Density":                 {{"host-MiB", "<=", 4}},
}

var lineRE = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func run(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	jsonPath := fs.String("json", "", "write rows as JSON here")
	mdPath := fs.String("md", "", "write the table as Markdown here (for the README)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var rows []Row
	cpu := ""
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "cpu: "); ok {
			cpu = v
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rows = append(rows, parse(m[1], m[3])...)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Benchmark < rows[j].Benchmark })
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\tmetric\tours\tfloor\tratio\ttarget\tmet\t")
	for _, r := range rows {
		met := ""
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Benchmark, r.Unit, num(r.Ours), num(r.Floor), num(r.Ratio), r.Target, met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *jsonPath != "" {
		b, err := json.MarshalIndent(map[string]any{"time": time.Now().UTC().Format(time.RFC3339), "cpu": cpu, "rows": rows}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonPath, b, 0o644); err != nil {
			return err
		}
	}
	if *mdPath != "" {
		var b strings.Builder
		b.WriteString("| benchmark | metric | ours | floor | ratio | target | met |\n|---|---|--:|--:|--:|---|---|\n")
		for _, r := range rows {
			met := ""
			if r.Met != nil {
				met = map[bool]string{true: "yes", false: "**no**"}[*r.Met]
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Benchmark, r.Unit, num(r.Ours), num(r.Floor), num(r.Ratio), strings.ReplaceAll(r.Target, "<", "&lt;"), met)
		}
		if err := os.WriteFile(*mdPath, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// parse turns "12 ns/op 3.4 p50-ms 2.1 floor-p50-ms" into rows, pairing
// each metric with its floor-* counterpart.
func parse(name, rest string) []Row {
	f := strings.Fields(rest)
	vals := map[string]float64{}
	var units []string
	for i := 0; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			continue
		}
		u := f[i+1]
		if u == "ns/op" || u == "B/op" || u == "allocs/op" {
			continue
		}
		vals[u] = v
		if !strings.HasPrefix(u, "floor-") && u != "ratio" {
			units = append(units, u)
		}
	}
	var rows []Row
	for _, u := range units {
		r := Row{Benchmark: name, Metric: u, Unit: u, Ours: vals[u], Floor: vals["floor-"+u]}
		if r.Floor > 0 && r.Ours > 0 {
			r.Ratio = r.Ours / r.Floor
		}
		for _, t := range targets[name] {
			if t.unit != u {
				continue
			}
			var ok bool
			switch t.op {
			case "<":
				ok = r.Ours < t.value
				r.Target = fmt.Sprintf("< %s", num(t.value))
			case "<=":
				ok = r.Ours <= t.value
				r.Target = fmt.Sprintf("<= %s", num(t.value))
			case ">=":
				ok = r.Ours >= t.value
				r.Target = fmt.Sprintf(">= %s", num(t.value))
			case "ratio>=":
				ok = r.Ratio >= t.value
				r.Target = fmt.Sprintf("ratio >= %s", num(t.value))
			}
			r.Met = &ok
		}
		rows = append(rows, r)
	}
	return rows
}
