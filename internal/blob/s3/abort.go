package s3

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// abortTimeout bounds one AbortMultipartUpload. It runs on a context
// detached from the failed upload's, so a cancelled request still cleans up.
const abortTimeout = 30 * time.Second

// maxPendingAborts bounds the aborts kept for retry. Beyond it the oldest is
// forgotten and left to the Sweeper's age-based pass (and to the bucket's
// AbortIncompleteMultipartUpload lifecycle rule).
const maxPendingAborts = 10000

// upload names one multipart upload.
type upload struct{ bucket, key, id string }

// pendingAborts are uploads whose abort failed, oldest first.
type pendingAborts struct {
	mu   sync.Mutex
	list []upload
}

func (p *pendingAborts) add(u upload) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.list) >= maxPendingAborts {
		p.list = p.list[1:]
	}
	p.list = append(p.list, u)
}

// take removes and returns every pending abort.
func (p *pendingAborts) take() []upload {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.list
	p.list = nil
	return l
}

// PendingAborts reports how many failed multipart uploads still wait for
// their abort (the endpoint was unreachable when they failed).
func (o *Opener) PendingAborts() int {
	o.aborts.mu.Lock()
	defer o.aborts.mu.Unlock()
	return len(o.aborts.list)
}

// abort aborts a failed multipart upload so its parts do not linger (and
// bill). A failure other than "already gone" is kept for the Sweeper.
func (o *Opener) abort(ctx context.Context, u upload) {
	if err := o.abortNow(context.WithoutCancel(ctx), u); err != nil {
		o.aborts.add(u)
	}
}

func (o *Opener) abortNow(ctx context.Context, u upload) error {
	ctx, cancel := context.WithTimeout(ctx, abortTimeout)
	defer cancel()
	_, err := o.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(u.bucket), Key: aws.String(u.key), UploadId: aws.String(u.id),
	})
	if err != nil && !isNoSuchUpload(err) {
		return fmt.Errorf("abort multipart upload of %s/%s: %w", u.bucket, u.key, err)
	}
	return nil
}

// isNoSuchUpload reports an upload that is already aborted or completed.
func isNoSuchUpload(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload"
}
