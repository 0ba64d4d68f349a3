//go:build linux && (amd64 || arm64 || loong64 || mips64 || mips64le || ppc64 || ppc64le || riscv64 || s390x || sparc64)

package main

import "golang.org/x/sys/unix"

// sysSemtimedop is semtimedop(2) on 64-bit architectures.
const sysSemtimedop = unix.SYS_SEMTIMEDOP
