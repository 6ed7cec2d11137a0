package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/sandbox"
)

// sseOnly makes the Go client's exec streams come as SSE (a proxy that
// passes only text/event-stream, say), and with json in the JSON form, as
// a server without the text form answers.
type sseOnly struct {
	next http.RoundTripper
	json bool
}

func (t sseOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Accept", "text/event-stream")
	if t.json {
		req.URL.RawQuery = ""
	}
	return t.next.RoundTrip(req)
}

// countWriter counts what the client writes.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// BenchmarkExecSSEDecode: 256 MiB of text (textCmd) through the SSE form
// of exec, decoded to bytes by the Go client (client.ExecStream over SSE):
// in the JSON form (as from a server without the text form) and in the
// text form (?format=text, which the client asks for); MiB/s end to end
// and the CPU seconds server and client spent together per 256 MiB (one
// process), beside the raw pipe. The median of streamSamples each.
func BenchmarkExecSSEDecode(b *testing.B) {
	e := newPerfEnv(b, nil)
	id := e.sandboxWith(b, sandbox.Spec{CPU: 2})
	mkText := pipelineCmd + " > " + streamTextFile
	mk, _ := json.Marshal(execRequest{Command: []string{"sh", "-c", mkText}})
	if code, out := e.call(b, "POST", "/sandbox/"+id+"/exec?wait=true", bytes.NewReader(mk)); code != 200 {
		b.Fatalf("write %s: %d %s", streamTextFile, code, out)
	}
	hostDir := b.TempDir()
	if out, err := exec.Command("sh", "-c", "cd "+hostDir+" && "+mkText).CombinedOutput(); err != nil {
		b.Fatalf("host file: %v %s", err, out)
	}
	b.ResetTimer()
	for _, form := range []struct {
		unit string
		json bool
	}{{"json", true}, {"text", false}} {
		c, err := client.New(e.srv.URL, client.WithToken(e.token), client.WithHTTPClient(&http.Client{Transport: sseOnly{next: e.client.Transport, json: form.json}}))
		if err != nil {
			b.Fatal(err)
		}
		var walls, cpus []time.Duration
		for range max(b.N, streamSamples) {
			start, c0 := time.Now(), cpuTime()
			var out countWriter
			exit, err := c.ExecStream(context.Background(), id, client.ExecRequest{Command: []string{"sh", "-c", textCmd}}, &out, nil)
			if err != nil || exit.ExitCode != 0 || out.n != streamBytes {
				b.Fatalf("%s form: %d bytes decoded, %+v, %v", form.unit, out.n, exit, err)
			}
			walls, cpus = append(walls, time.Since(start)), append(cpus, cpuTime()-c0)
		}
		b.ReportMetric(medianMiBps(streamBytes, walls), form.unit+"-MiB/s")
		b.ReportMetric(pctl(cpus, .5)/1000, form.unit+"-cpu-s")
	}
	var floor []time.Duration
	for range streamSamples {
		floor = append(floor, rawPipe(b, hostDir, textCmd))
	}
	// One floor for both forms, named for each so the report pairs them.
	for _, unit := range []string{"json", "text"} {
		b.ReportMetric(medianMiBps(streamBytes, floor), "floor-"+unit+"-MiB/s")
	}
	b.ReportMetric(0, "ns/op")
}
