//go:build !unix

package main

import (
	"context"
	"errors"
)

func shellCmd(ctx context.Context, e *env, args []string) error {
	return errors.New("shell: needs a Unix terminal")
}

func shellList(ctx context.Context, e *env, args []string) error {
	return errors.New("shell: needs a Unix terminal")
}
