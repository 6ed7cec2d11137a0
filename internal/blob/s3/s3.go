// Package s3 is the S3 blob.Store over aws-sdk-go-v2 and its upload
// manager (multipart above the part size). It works with AWS S3 and
// S3-compatible servers (MinIO, R2, versitygw) through Config.Endpoint and
// Config.ForcePathStyle.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/techbossai/techboss/internal/blob"
	"github.com/techbossai/techboss/internal/errs"
)

var (
	_ blob.Store  = (*Store)(nil)
	_ blob.Ranger = (*Store)(nil)
)

// Config is how to reach an S3-compatible service. Zero values mean the
// AWS defaults: the default credential chain, region from the environment
// (else us-east-1), virtual-hosted addressing.
type Config struct {
	Endpoint        string // S3_ENDPOINT, e.g. http://127.0.0.1:7070
	Region          string
	ForcePathStyle  bool   // S3_FORCE_PATH_STYLE
	AccessKeyID     string // static credentials; empty = default AWS chain
	SecretAccessKey string `json:"-"`
	SessionToken    string `json:"-"`
	// PartSize is the multipart threshold and part size (default 16 MiB,
	// minimum 5 MiB).
	PartSize int64
	// Concurrency is the parts uploaded at once per object (default 4).
	Concurrency int
	// ListPageSize is the keys fetched per List request (default 1000).
	ListPageSize int32
	// MaxAttempts is the SDK's retry budget per request (default 3).
	MaxAttempts int
}

// Opener holds one configured S3 client and opens a Store per bucket; the
// bucket is chosen per sandbox (s3_bucket_name).
type Opener struct {
	client   *s3.Client
	uploader *manager.Uploader //lint:ignore SA1019 the upload manager is the SDK's stable multipart API; transfermanager is still v0
	cfg      Config
	// aborts are the failed multipart uploads whose abort failed too (the
	// server was unreachable); the Sweeper retries them.
	aborts pendingAborts
}

// NewOpener builds the client. It does no network I/O.
func NewOpener(ctx context.Context, c Config) (*Opener, error) {
	if c.PartSize == 0 {
		c.PartSize = 16 << 20
	}
	if c.PartSize < manager.MinUploadPartSize {
		return nil, errs.E(errs.Invalid, "s3 part size %d below the 5 MiB minimum", c.PartSize)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.ListPageSize <= 0 {
		c.ListPageSize = 1000
	}
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = 64
			t.WriteBufferSize = 256 << 10
			t.ReadBufferSize = 256 << 10
		})),
		// Only what S3 requires: keeps older S3-compatible servers working
		// and spares a pass over every body.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	if c.MaxAttempts > 0 {
		opts = append(opts, config.WithRetryMaxAttempts(c.MaxAttempts))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.ForcePathStyle
	})
	//lint:ignore SA1019 see Opener.uploader
	up := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = c.PartSize
		u.Concurrency = c.Concurrency
		// Put aborts a failed multipart upload itself: the manager's own
		// abort uses the upload's context, which fails when that context
		// was cancelled, and is not retried when the server was down.
		u.LeavePartsOnError = true
	})
	return &Opener{client: client, uploader: up, cfg: c}, nil
}

// Client returns the underlying SDK client (benchmarks compare against it).
func (o *Opener) Client() *s3.Client { return o.client }

// Open returns the Store for bucket. The name is validated (errs.Invalid
// naming s3_bucket_name); reachability is not checked (see Check).
func (o *Opener) Open(bucket string) (*Store, error) {
	if err := blob.ValidateBucket("s3_bucket_name", bucket); err != nil {
		return nil, err
	}
	return &Store{o: o, bucket: bucket}, nil
}

// Check verifies the bucket exists and the credentials reach it. A refusal
// or an unreachable endpoint is errs.Dependency (424) with a clear message.
func (o *Opener) Check(ctx context.Context, bucket string) error {
	if err := blob.ValidateBucket("s3_bucket_name", bucket); err != nil {
		return err
	}
	_, err := o.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
	if err != nil {
		if isNotFound(err) {
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q does not exist", bucket))
		}
		return mapErr(bucket, "", err)
	}
	return nil
}

// CreateBucket creates bucket (tests and first-run setup).
func (o *Opener) CreateBucket(ctx context.Context, bucket string) error {
	if err := blob.ValidateBucket("s3_bucket_name", bucket); err != nil {
		return err
	}
	_, err := o.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && (ae.ErrorCode() == "BucketAlreadyOwnedByYou" || ae.ErrorCode() == "BucketAlreadyExists") {
			return nil
		}
		return mapErr(bucket, "", err)
	}
	return nil
}

// Store is one bucket.
type Store struct {
	o      *Opener
	bucket string
}

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.bucket }

type readerAtSeeker interface {
	io.ReaderAt
	io.ReadSeeker
}

// Put uploads through the upload manager: one PutObject below the part
// size, a multipart upload (aborted on failure) above it. A body that is an
// io.ReaderAt and io.Seeker (an *os.File, a *bytes.Reader) is sent without
// copying.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	body := blob.ExactReader(r, size)
	if ras, ok := r.(readerAtSeeker); ok && size >= 0 {
		cur, err := ras.Seek(0, io.SeekCurrent)
		if err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		end, err := ras.Seek(0, io.SeekEnd)
		if err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		if _, err := ras.Seek(cur, io.SeekStart); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		if end-cur != size {
			return errs.E(errs.Invalid, "put %s: body is %d bytes, declared %d", key, end-cur, size)
		}
		body = io.NewSectionReader(ras, cur, size)
	}
	//lint:ignore SA1019 see Opener.uploader
	_, err := s.o.uploader.Upload(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(key),
		Body:   body,
	})
	if err != nil {
		//lint:ignore SA1019 see Opener.uploader
		var mu manager.MultiUploadFailure
		if errors.As(err, &mu) && mu.UploadID() != "" {
			s.o.abort(ctx, upload{bucket: s.bucket, key: key, id: mu.UploadID()})
		}
		return mapErr(s.bucket, key, err)
	}
	return nil
}

// Get streams the object.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return s.GetRange(ctx, key, 0, -1)
}

// GetRange streams part of the object.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	switch {
	case offset < 0:
		return nil, errs.E(errs.Invalid, "negative range start")
	case length == 0:
		if _, err := s.Head(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.o.client.GetObject(ctx, in)
	if err != nil {
		return nil, mapErr(s.bucket, key, err)
	}
	return out.Body, nil
}

// Head returns the object's size and modification time.
func (s *Store) Head(ctx context.Context, key string) (blob.Info, error) {
	if err := blob.ValidateKey(key); err != nil {
		return blob.Info{}, err
	}
	out, err := s.o.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return blob.Info{}, mapErr(s.bucket, key, err)
	}
	in := blob.Info{Key: key, Size: aws.ToInt64(out.ContentLength)}
	if out.LastModified != nil {
		in.ModTime = out.LastModified.UTC()
	}
	return in, nil
}

// List pages through ListObjectsV2.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		p := s3.NewListObjectsV2Paginator(s.o.client, &s3.ListObjectsV2Input{
			Bucket:  aws.String(s.bucket),
			Prefix:  aws.String(prefix),
			MaxKeys: aws.Int32(s.o.cfg.ListPageSize),
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(blob.Info{}, mapErr(s.bucket, prefix, err))
				return
			}
			for _, o := range page.Contents {
				in := blob.Info{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size)}
				if o.LastModified != nil {
					in.ModTime = o.LastModified.UTC()
				}
				if !yield(in, nil) {
					return
				}
			}
		}
	}
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	_, err := s.o.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil && !isNotFound(err) {
		return mapErr(s.bucket, key, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchBucket":
			return true
		}
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// mapErr classifies an SDK error: a missing key is errs.ErrNotFound; a
// refused or missing bucket and an unreachable endpoint are errs.Dependency
// (424) and a full S3 server is errs.InsufficientStorage (507), each with a
// message naming the bucket (never the credentials).
func mapErr(bucket, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			if key != "" {
				return fmt.Errorf("s3 object %q: %w", key, errs.ErrNotFound)
			}
		case "NoSuchBucket":
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q does not exist", bucket))
		case "AccessDenied", "Forbidden", "AllAccessDisabled", "AccountProblem":
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: access denied", bucket))
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: credentials rejected (%s)", bucket, ae.ErrorCode()))
		case "InsufficientStorage", "XMinioStorageFull", "QuotaExceeded":
			// versitygw answers ENOSPC with 507 InsufficientStorage and
			// EDQUOT with 403 QuotaExceeded; MinIO with XMinioStorageFull.
			return errs.Wrap(errs.InsufficientStorage, err, fmt.Sprintf("s3 bucket %q is full (the S3 server has no space left)", bucket))
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: wrong region or endpoint (%s)", bucket, ae.ErrorCode()))
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			if key != "" {
				return fmt.Errorf("s3 object %q: %w", key, errs.ErrNotFound)
			}
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q does not exist", bucket))
		case http.StatusForbidden:
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: access denied", bucket))
		case http.StatusInsufficientStorage:
			return errs.Wrap(errs.InsufficientStorage, err, fmt.Sprintf("s3 bucket %q is full (the S3 server has no space left)", bucket))
		case http.StatusMovedPermanently, http.StatusBadRequest:
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: request refused (status %d)", bucket, re.HTTPStatusCode()))
		}
		if re.HTTPStatusCode() >= 500 {
			return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: server error (status %d)", bucket, re.HTTPStatusCode()))
		}
	}
	var se *smithyhttp.RequestSendError
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &se) || errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errs.Wrap(errs.Dependency, err, fmt.Sprintf("s3 bucket %q: endpoint unreachable", bucket))
	}
	var pe *errs.Error
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("s3 %s/%s: %w", bucket, key, err)
}

// OpenBucket is Open for callers that consume a small interface returning
// blob.Store (snapshot.Buckets).
func (o *Opener) OpenBucket(ctx context.Context, bucket string) (blob.Store, error) {
	s, err := o.Open(bucket)
	if err != nil {
		return nil, err
	}
	return s, nil
}
