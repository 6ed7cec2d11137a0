package s3

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Scope is where this server writes in a bucket: the sweeper lists and
// aborts multipart uploads only under the key directory Prefix ("a/b"
// covers "a/b/..." but not "a/bc/..."; "" is the whole bucket), never
// other tenants' keys.
type Scope struct {
	Bucket string
	Prefix string
}

// SweeperConfig configures a Sweeper.
type SweeperConfig struct {
	// Scopes returns the bucket prefixes this server writes under (the
	// sandboxes' s3_bucket_name/s3_key_prefix, the default bucket).
	Scopes func(ctx context.Context) ([]Scope, error)
	// MaxAge is how old an unfinished multipart upload must be to be
	// aborted (default 1 h): younger ones may still be in progress.
	MaxAge time.Duration
	// Interval is the time between sweeps (default 10 min).
	Interval time.Duration
	Logger   *slog.Logger
	Clock    func() time.Time
}

// Sweeper aborts multipart uploads of ours that were left behind: those
// whose abort failed when they failed (the endpoint was down), and any
// under our prefixes older than MaxAge (a crash mid-upload). A bucket
// lifecycle rule (AbortIncompleteMultipartUpload) is the second line of
// defence; see the README.
type Sweeper struct {
	o   *Opener
	cfg SweeperConfig
}

// NewSweeper returns a Sweeper over o's client.
func NewSweeper(o *Opener, cfg SweeperConfig) *Sweeper {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Sweeper{o: o, cfg: cfg}
}

// Run sweeps every Interval (the first time at once) until ctx is done.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "s3 multipart sweep", "aborted", n, "err", err)
		} else if n > 0 {
			s.cfg.Logger.InfoContext(ctx, "s3 multipart sweep", "aborted", n)
		}
		t.Reset(s.cfg.Interval)
	}
}

// Sweep retries the pending aborts, then aborts every multipart upload
// under the scopes initiated more than MaxAge ago. It returns how many it
// aborted; errors are joined, and what failed is retried on the next sweep.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	n := 0
	var errList []error
	for _, u := range s.o.aborts.take() {
		if err := s.o.abortNow(ctx, u); err != nil {
			s.o.aborts.add(u)
			errList = append(errList, err)
			continue
		}
		n++
	}
	if s.cfg.Scopes == nil {
		return n, errors.Join(errList...)
	}
	scopes, err := s.cfg.Scopes(ctx)
	if err != nil {
		return n, errors.Join(append(errList, fmt.Errorf("sweep scopes: %w", err))...)
	}
	cutoff := s.cfg.Clock().Add(-s.cfg.MaxAge)
	for _, sc := range scopes {
		m, err := s.sweepScope(ctx, sc, cutoff)
		n += m
		if err != nil {
			errList = append(errList, err)
		}
	}
	return n, errors.Join(errList...)
}

func (s *Sweeper) sweepScope(ctx context.Context, sc Scope, cutoff time.Time) (int, error) {
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(sc.Bucket)}
	if sc.Prefix != "" {
		in.Prefix = aws.String(strings.TrimSuffix(sc.Prefix, "/") + "/")
	}
	for {
		out, err := s.o.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, mapErr(sc.Bucket, "", err)
		}
		for _, u := range out.Uploads {
			if u.Initiated == nil || u.Initiated.After(cutoff) || u.Key == nil || u.UploadId == nil {
				continue
			}
			if err := s.o.abortNow(ctx, upload{bucket: sc.Bucket, key: *u.Key, id: *u.UploadId}); err != nil {
				return n, err
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
