//go:build !amd64

package main

import "errors"

var errSkip = errors.New("skip")

func x32Getpid() error  { return errSkip }
func i386Getpid() error { return errSkip }
