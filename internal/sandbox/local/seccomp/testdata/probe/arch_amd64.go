package main

import "golang.org/x/sys/unix"

// x32Getpid calls getpid through the x32 ABI (__X32_SYSCALL_BIT).
func x32Getpid() error { return raw(0x40000000|unix.SYS_GETPID, 0, 0, 0) }

// i386Getpid calls getpid (20 in the i386 table) through int 0x80.
func i386Getpid() error {
	if r := int80(20); r > -4096 && r < 0 {
		return unix.Errno(-r)
	}
	return nil
}

// int80 is in arch_amd64.s.
func int80(nr uintptr) int64
