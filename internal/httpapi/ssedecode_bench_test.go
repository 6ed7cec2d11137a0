package httpapi

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/techbossai/techboss/internal/sandbox"
)

// sseDecoder reads an exec SSE stream the way a client must to get the
// command's bytes: the JSON form decodes each event's JSON (base64 for
// data_b64); the text form joins data lines (base64 only in *_b64 events).
// It returns the stdout byte count.
func sseDecode(r io.Reader, text bool) (int64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var (
		n      int64
		event  []byte
		data   []byte
		lines  int
		exited bool
		long   []byte // a line longer than br's buffer
	)
	var chunk struct {
		Data    string `json:"data"`
		DataB64 string `json:"data_b64"`
	}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			if exited {
				return n, nil
			}
			return n, err
		}
		line = line[:len(line)-1]
		switch {
		case len(line) == 0:
			switch string(event) {
			case "stdout":
				if text {
					n += int64(len(data))
				} else {
					chunk.Data, chunk.DataB64 = "", ""
					if err := json.Unmarshal(data, &chunk); err != nil {
						return n, err
					}
					if chunk.DataB64 != "" {
						b, err := base64.StdEncoding.DecodeString(chunk.DataB64)
						if err != nil {
							return n, err
						}
						n += int64(len(b))
					} else {
						n += int64(len(chunk.Data))
					}
				}
			case "stdout_b64":
				b, err := base64.StdEncoding.DecodeString(string(data))
				if err != nil {
					return n, err
				}
				n += int64(len(b))
			case "exit":
				exited = true
			}
			event, data, lines = event[:0], data[:0], 0
		case bytes.HasPrefix(line, []byte("event: ")):
			event = append(event[:0], line[7:]...)
		case bytes.HasPrefix(line, []byte("data: ")):
			if lines > 0 {
				data = append(data, '\n')
			}
			data = append(data, line[6:]...)
			lines++
		}
	}
}

// BenchmarkExecSSEDecode: 256 MiB of text (textCmd) through the SSE form
// of exec, decoded to bytes by a Go client as above, in the JSON form and
// in the text form (?format=text); MiB/s end to end and the CPU seconds
// server and client spent together per 256 MiB (one process), beside the
// raw pipe. The median of streamSamples each.
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
	body, _ := json.Marshal(execRequest{Command: []string{"sh", "-c", textCmd}})
	b.ResetTimer()
	for _, form := range []struct {
		unit  string
		query string
		text  bool
	}{{"json", "", false}, {"text", "?format=text", true}} {
		var walls, cpus []time.Duration
		for range max(b.N, streamSamples) {
			start, c0 := time.Now(), cpuTime()
			res, err := e.client.Do(e.req(b, "POST", "/sandbox/"+id+"/exec"+form.query, bytes.NewReader(body)))
			if err != nil {
				b.Fatal(err)
			}
			n, err := sseDecode(res.Body, form.text)
			res.Body.Close()
			if err != nil || n != streamBytes {
				b.Fatalf("%s form: %d bytes decoded, %v", form.unit, n, err)
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
	b.ReportMetric(medianMiBps(streamBytes, floor), "floor-MiB/s")
	b.ReportMetric(0, "ns/op")
}
