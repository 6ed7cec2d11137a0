package diskimg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Run with a fixed count, e.g.:
//
//	go test -run XXX -bench . -benchtime 30x ./internal/sandbox/local/diskimg/
//
// Each reports the median and 90th percentile of one operation (ms).

var benchSizes = []int64{512, 10240}

// quantiles reports p50 and p90 of ds in milliseconds.
func quantiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	ms := func(q float64) float64 {
		return float64(ds[int(q*float64(len(ds)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.9), "p90-ms")
}

func BenchmarkCreate(b *testing.B) {
	requireLoop(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dM", size), func(b *testing.B) {
			dir := b.TempDir()
			var ds []time.Duration
			for i := 0; i < b.N; i++ {
				img := filepath.Join(dir, fmt.Sprint(i))
				t0 := time.Now()
				if err := Create(b.Context(), img, size); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				b.StopTimer()
				_ = os.Remove(img)
				b.StartTimer()
			}
			quantiles(b, ds)
		})
	}
}

// BenchmarkMountUnmount mounts and unmounts fresh images, as each sandbox
// start and teardown does.
func BenchmarkMountUnmount(b *testing.B) {
	requireLoop(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dM", size), func(b *testing.B) {
			dir := b.TempDir()
			mnt := filepath.Join(dir, "mnt")
			if err := os.Mkdir(mnt, 0o700); err != nil {
				b.Fatal(err)
			}
			var mounts, unmounts []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				img := filepath.Join(dir, fmt.Sprint(i))
				if err := Create(b.Context(), img, size); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				d, err := Mount(img, mnt)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := d.Unmount(b.Context()); err != nil {
					b.Fatal(err)
				}
				mounts, unmounts = append(mounts, t1.Sub(t0)), append(unmounts, time.Since(t1))
				b.StopTimer()
				_ = os.Remove(img)
				b.StartTimer()
			}
			quantiles(b, mounts)
			slices.Sort(unmounts)
			b.ReportMetric(float64(unmounts[len(unmounts)/2])/float64(time.Millisecond), "unmount-p50-ms")
		})
	}
}

// BenchmarkStart is a sandbox start's share: get a fresh image of the
// size into place and mount it. "pool" takes a ready one, "mkfs" formats
// on demand, "template" copies a formatted template sparsely (the
// alternative to a pool on filesystems without reflinks, like ext4).
func BenchmarkStart(b *testing.B) {
	requireLoop(b)
	for _, size := range benchSizes {
		for _, how := range []string{"pool", "mkfs", "template"} {
			b.Run(fmt.Sprintf("%s/%dM", how, size), func(b *testing.B) {
				dir := b.TempDir()
				mnt := filepath.Join(dir, "mnt")
				if err := os.Mkdir(mnt, 0o700); err != nil {
					b.Fatal(err)
				}
				p, err := NewPool(filepath.Join(dir, "pool"), size, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				tmpl := filepath.Join(dir, "template.img")
				if err := Create(b.Context(), tmpl, size); err != nil {
					b.Fatal(err)
				}
				var ds []time.Duration
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					if how == "pool" {
						if err := p.make(b.Context()); err != nil {
							b.Fatal(err)
						}
					}
					img := filepath.Join(dir, fmt.Sprint(i))
					b.StartTimer()
					t0 := time.Now()
					switch how {
					case "pool":
						err = p.Take(b.Context(), img, size)
					case "mkfs":
						err = Create(b.Context(), img, size)
					case "template":
						err = sparseCopy(tmpl, img)
					}
					if err != nil {
						b.Fatal(err)
					}
					d, err := Mount(img, mnt)
					if err != nil {
						b.Fatal(err)
					}
					ds = append(ds, time.Since(t0))
					b.StopTimer()
					if err := d.Unmount(b.Context()); err != nil {
						b.Fatal(err)
					}
					_ = os.Remove(img)
					b.StartTimer()
				}
				quantiles(b, ds)
			})
		}
	}
}

// sparseCopy copies src's data extents to a new dst of the same size.
func sparseCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	ifd, ofd := int(in.Fd()), int(out.Fd())
	for pos := int64(0); pos < fi.Size(); {
		start, err := unix.Seek(ifd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return err
		}
		end, err := unix.Seek(ifd, start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for off := start; off < end; {
			roff, woff := off, off
			n, err := unix.CopyFileRange(ifd, &roff, ofd, &woff, int(end-off), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return errors.New("short copy")
			}
			off += int64(n)
		}
		pos = end
	}
	return out.Close()
}
