//go:build linux && (386 || arm || mips || mipsle || ppc)

package main

import "golang.org/x/sys/unix"

// sysSemtimedop is semtimedop_time64(2) on 32-bit architectures (Linux >= 5.1);
// with a nil timeout it behaves as semop(2).
const sysSemtimedop = unix.SYS_SEMTIMEDOP_TIME64
