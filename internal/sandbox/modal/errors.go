package modal

import (
	"context"
	"errors"
	"fmt"
	"strings"

	modalsdk "github.com/modal-labs/modal-client/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/techbossai/techboss/internal/errs"
)

// mapErr turns an SDK or gRPC error into an errs kind, so the API answers
// 404/422/424/429/503 rather than 500. what names the operation.
func mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	if _, ok := errs.Public(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("modal %s: %w", what, err)
	}
	prefix := "modal"
	if what != "" {
		prefix = "modal " + what
	}
	msg := func(detail string) string {
		detail = strings.Join(strings.Fields(detail), " ")
		if len(detail) > 500 {
			detail = detail[:500] + "…"
		}
		return prefix + ": " + detail
	}
	var (
		notFound  modalsdk.NotFoundError
		conflict  modalsdk.ConflictError
		invalid   modalsdk.InvalidError
		exhausted modalsdk.ResourceExhaustedError
		exists    modalsdk.AlreadyExistsError
		remote    modalsdk.RemoteError
		closed    modalsdk.ClientClosedError
		execTO    modalsdk.ExecTimeoutError
		fsNF      modalsdk.SandboxFilesystemNotFoundError
		fsNotDir  modalsdk.SandboxFilesystemNotADirectoryError
		fsIsDir   modalsdk.SandboxFilesystemIsADirectoryError
		fsPerm    modalsdk.SandboxFilesystemPermissionError
		fsExists  modalsdk.SandboxFilesystemPathAlreadyExistsError
		fsNotEmp  modalsdk.SandboxFilesystemDirectoryNotEmptyError
		fsBig     modalsdk.SandboxFilesystemFileTooLargeError
		fsOther   modalsdk.SandboxFilesystemError
	)
	switch {
	case errors.As(err, &notFound):
		return errs.Wrap(errs.NotFound, err, msg(notFound.Exception))
	case errors.As(err, &conflict):
		// The SDK's ConflictError: the sandbox has already finished.
		return errs.Wrap(errs.NotFound, err, prefix+": sandbox is no longer running")
	case errors.As(err, &invalid):
		return errs.Wrap(errs.Invalid, err, msg(invalid.Exception))
	case errors.As(err, &exhausted):
		return &errs.Error{Kind: errs.TooMany, Message: msg(exhausted.Exception), RetryAfter: 30, Err: err}
	case errors.As(err, &exists):
		return errs.Wrap(errs.Conflict, err, msg(exists.Exception))
	case errors.As(err, &remote):
		// Image builds report a bad image_base or a failing
		// dockerfile_commands line this way.
		return errs.Wrap(errs.Invalid, err, msg(remote.Exception))
	case errors.As(err, &closed):
		return errs.Wrap(errs.Unavailable, err, prefix+": connection to the sandbox closed")
	case errors.As(err, &execTO):
		return errs.Wrap(errs.Unavailable, err, msg(execTO.Exception))
	case errors.As(err, &fsNF):
		return errs.Wrap(errs.NotFound, err, msg(fsNF.Exception))
	case errors.As(err, &fsNotDir):
		return errs.Wrap(errs.Invalid, err, msg(fsNotDir.Exception))
	case errors.As(err, &fsIsDir):
		return errs.Wrap(errs.Invalid, err, msg(fsIsDir.Exception))
	case errors.As(err, &fsPerm):
		return errs.Wrap(errs.Forbidden, err, msg(fsPerm.Exception))
	case errors.As(err, &fsExists):
		return errs.Wrap(errs.Conflict, err, msg(fsExists.Exception))
	case errors.As(err, &fsNotEmp):
		return errs.Wrap(errs.Conflict, err, msg(fsNotEmp.Exception))
	case errors.As(err, &fsBig):
		return errs.Wrap(errs.TooLarge, err, msg(fsBig.Exception))
	case errors.As(err, &fsOther):
		return errs.Wrap(errs.BadGateway, err, msg(fsOther.Exception))
	}
	st, ok := status.FromError(err)
	if !ok {
		// Local validation errors from the SDK (bad GPU string, timeouts,
		// env names) are plain errors raised before any call.
		if strings.Contains(err.Error(), "invalid") || strings.Contains(err.Error(), "must be") {
			return errs.Wrap(errs.Invalid, err, msg(err.Error()))
		}
		return fmt.Errorf("%s: %w", prefix, err)
	}
	switch st.Code() {
	case codes.NotFound:
		return errs.Wrap(errs.NotFound, err, msg(st.Message()))
	case codes.InvalidArgument, codes.OutOfRange:
		return errs.Wrap(errs.Invalid, err, msg(st.Message()))
	case codes.FailedPrecondition:
		return errs.Wrap(errs.Conflict, err, msg(st.Message()))
	case codes.AlreadyExists:
		return errs.Wrap(errs.Conflict, err, msg(st.Message()))
	case codes.ResourceExhausted:
		return &errs.Error{Kind: errs.TooMany, Message: msg("quota or capacity exhausted: " + st.Message()), RetryAfter: 30, Err: err}
	case codes.Unauthenticated, codes.PermissionDenied:
		return errs.Wrap(errs.Dependency, err, prefix+": Modal rejected the credentials or permissions")
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return errs.Wrap(errs.Unavailable, err, msg("Modal is unavailable: "+st.Message()))
	case codes.Canceled:
		return fmt.Errorf("%s: %w", prefix, context.Canceled)
	}
	return errs.Wrap(errs.BadGateway, err, msg(st.Message()))
}

// secretErr reports a missing or unreadable Modal secret as a failed
// dependency naming the secret, never its contents.
func secretErr(err error, name string) error {
	m := mapErr(err, "secret "+name)
	if errs.KindOf(m) == errs.NotFound {
		return errs.Wrap(errs.Dependency, err, fmt.Sprintf("modal: secret %q not found; create it in Modal or configure another name", name))
	}
	return m
}
