package snapshot_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/techbossai/techboss/internal/blob/blobtest"
	"github.com/techbossai/techboss/internal/blob/s3"
	"github.com/techbossai/techboss/internal/snapshot"
)

// The benchmark workspace: 10,000 small files plus one 256 MiB file,
// created once per test binary and shared by the benchmarks.
const (
	benchSmallFiles = 10000
	benchLargeSize  = 256 << 20
	benchConc       = 16
)

type fixture struct {
	once  sync.Once
	dir   string
	files []string // relative paths, the large file last
	bytes int64
	err   error
}

var benchFixture fixture

func (f *fixture) get(b *testing.B) *fixture {
	f.once.Do(func() {
		f.dir, f.err = os.MkdirTemp("", "snapbench-")
		if f.err != nil {
			return
		}
		ws := filepath.Join(f.dir, "ws")
		for i := range benchSmallFiles {
			rel := fmt.Sprintf("src/d%03d/file%05d.txt", i%200, i)
			// Unique content per file: a benchmark of deduplication would flatter us.
			data := pseudoRandom(512+(i%64)*64, byte(i))
			copy(data, fmt.Sprintf("file %05d\n", i))
			if f.err = os.MkdirAll(filepath.Join(ws, filepath.Dir(rel)), 0o755); f.err != nil {
				return
			}
			if f.err = os.WriteFile(filepath.Join(ws, rel), data, 0o644); f.err != nil {
				return
			}
			f.files = append(f.files, rel)
			f.bytes += int64(len(data))
		}
		large := pseudoRandom(benchLargeSize, 99)
		if f.err = os.WriteFile(filepath.Join(ws, "large.bin"), large, 0o644); f.err != nil {
			return
		}
		f.files = append(f.files, "large.bin")
		f.bytes += benchLargeSize
	})
	if f.err != nil {
		b.Fatalf("bench fixture: %v", f.err)
	}
	return f
}

func (f *fixture) ws() string { return filepath.Join(f.dir, "ws") }

func (f *fixture) cleanup() {
	if f.dir != "" {
		os.RemoveAll(f.dir)
	}
}

type benchEnv struct {
	o      *s3.Opener
	ctx    context.Context
	seq    int
	client *awss3.Client
}

func newBenchEnv(b *testing.B) *benchEnv {
	v := blobtest.StartVersity(b)
	o, err := s3.NewOpener(context.Background(), s3.Config{
		Endpoint: v.Endpoint, Region: "us-east-1", ForcePathStyle: true,
		AccessKeyID: v.Access, SecretAccessKey: v.Secret,
	})
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{o: o, ctx: context.Background(), client: o.Client()}
}

func (e *benchEnv) bucket(b *testing.B) (string, snapshot.Location) {
	e.seq++
	name := fmt.Sprintf("bench-%d", e.seq)
	if err := e.o.CreateBucket(e.ctx, name); err != nil {
		b.Fatal(err)
	}
	st, err := e.o.Open(name)
	if err != nil {
		b.Fatal(err)
	}
	return name, snapshot.Location{Store: st, Prefix: "ws", ID: "s3:" + name + "/ws"}
}

// rawPut uploads every fixture file with plain PutObject calls, benchConc
// at a time: the floor our snapshot is compared with.
func (e *benchEnv) rawPut(b *testing.B, f *fixture, bucket string, files []string) time.Duration {
	start := time.Now()
	g, ctx := errgroup.WithContext(e.ctx)
	g.SetLimit(benchConc)
	for _, rel := range files {
		g.Go(func() error {
			fh, err := os.Open(filepath.Join(f.ws(), rel))
			if err != nil {
				return err
			}
			defer fh.Close()
			_, err = e.client.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("raw/" + rel), Body: fh})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("raw put: %v", err)
	}
	return time.Since(start)
}

// rawGet downloads the objects rawPut wrote into files under dir.
func (e *benchEnv) rawGet(b *testing.B, bucket string, files []string, dir string) time.Duration {
	start := time.Now()
	g, ctx := errgroup.WithContext(e.ctx)
	g.SetLimit(benchConc)
	for _, rel := range files {
		g.Go(func() error {
			out, err := e.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("raw/" + rel)})
			if err != nil {
				return err
			}
			defer out.Body.Close()
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			fh, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(fh, out.Body)
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("raw get: %v", err)
	}
	return time.Since(start)
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

func newBenchSnapshotter() *snapshot.Snapshotter {
	return snapshot.New(snapshot.Config{Concurrency: benchConc})
}

// BenchmarkSnapshotFirst: the first snapshot of the workspace beside raw
// PutObject of the same files to the same server (into another bucket,
// measured first).
func BenchmarkSnapshotFirst(b *testing.B) {
	f := benchFixture.get(b)
	e := newBenchEnv(b)
	rawBucket, _ := e.bucket(b)
	_, loc := e.bucket(b)
	b.ResetTimer()
	raw := e.rawPut(b, f, rawBucket, f.files)
	start := time.Now()
	r, err := newBenchSnapshotter().Snapshot(e.ctx, loc, f.ws(), snapshot.Options{})
	ours := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if r.Stats.Bytes != f.bytes {
		b.Fatalf("snapshot saw %d bytes, fixture has %d", r.Stats.Bytes, f.bytes)
	}
	b.ReportMetric(mibps(f.bytes, ours), "MiB/s")
	b.ReportMetric(mibps(f.bytes, raw), "floor-MiB/s")
	b.ReportMetric(raw.Seconds()/ours.Seconds(), "ratio")
	b.ReportMetric(float64(ours.Milliseconds()), "ms")
	b.ReportMetric(float64(raw.Milliseconds()), "floor-ms")
}

// snapshotted returns a location holding one snapshot of the fixture,
// taken with the fixture's files older than the snapshot (as in real use).
func snapshotted(b *testing.B, e *benchEnv, f *fixture) (string, snapshot.Location, *snapshot.Result) {
	bucket, loc := e.bucket(b)
	r, err := newBenchSnapshotter().Snapshot(e.ctx, loc, f.ws(), snapshot.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return bucket, loc, r
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkSnapshotNoChange10k: a snapshot of the unchanged workspace by a
// fresh Snapshotter (it reads the previous manifest from S3), p50 of 5.
func BenchmarkSnapshotNoChange10k(b *testing.B) {
	f := benchFixture.get(b)
	e := newBenchEnv(b)
	_, loc, _ := snapshotted(b, e, f)
	b.ResetTimer()
	var ds []time.Duration
	for range 5 {
		start := time.Now()
		r, err := newBenchSnapshotter().Snapshot(e.ctx, loc, f.ws(), snapshot.Options{})
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if r.Stats.UploadedBytes != 0 {
			b.Fatalf("no-change snapshot uploaded %d bytes", r.Stats.UploadedBytes)
		}
	}
	b.ReportMetric(float64(p50(ds).Microseconds())/1000, "p50-ms")
}

// BenchmarkSnapshotChanged1pct: 100 of the 10,000 small files change;
// beside raw PutObject of those 100 files.
func BenchmarkSnapshotChanged1pct(b *testing.B) {
	f := benchFixture.get(b)
	e := newBenchEnv(b)
	bucket, loc, _ := snapshotted(b, e, f)
	var changed []string
	for i := 0; i < benchSmallFiles; i += 100 {
		changed = append(changed, f.files[i])
	}
	b.ResetTimer()
	var ds []time.Duration
	for rep := range 3 {
		b.StopTimer()
		var n int64
		for _, rel := range changed {
			data := pseudoRandom(700, byte(rep+1))
			copy(data, rel)
			n += int64(len(data))
			if err := os.WriteFile(filepath.Join(f.ws(), rel), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		r, err := newBenchSnapshotter().Snapshot(e.ctx, loc, f.ws(), snapshot.Options{})
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if r.Stats.UploadedBlobs != len(changed) {
			b.Fatalf("1%% change uploaded %d blobs, want %d", r.Stats.UploadedBlobs, len(changed))
		}
	}
	raw := e.rawPut(b, f, bucket, changed)
	b.ReportMetric(float64(p50(ds).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(raw.Microseconds())/1000, "floor-p50-ms")
}

// BenchmarkRestore: restoring the workspace into an empty directory beside
// raw GetObject of the same files into files.
func BenchmarkRestore(b *testing.B) {
	f := benchFixture.get(b)
	e := newBenchEnv(b)
	bucket, loc, r := snapshotted(b, e, f)
	e.rawPut(b, f, bucket, f.files)
	b.ResetTimer()
	out := b.TempDir()
	raw := e.rawGet(b, bucket, f.files, filepath.Join(out, "raw"))
	start := time.Now()
	if _, err := newBenchSnapshotter().Restore(e.ctx, loc, r.Manifest.Name, filepath.Join(out, "ours"), snapshot.RestoreOptions{}); err != nil {
		b.Fatal(err)
	}
	ours := time.Since(start)
	b.StopTimer()
	b.ReportMetric(mibps(f.bytes, ours), "MiB/s")
	b.ReportMetric(mibps(f.bytes, raw), "floor-MiB/s")
	b.ReportMetric(raw.Seconds()/ours.Seconds(), "ratio")
}
