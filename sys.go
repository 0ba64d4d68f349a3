// The raw system call wrappers every duty uses: *at(2) calls on
// NUL-terminated names and read(2)/write(2) as raw calls, none of which
// allocates or logs; each returns a bare errno.
// Speaks openat(2), unlinkat(2), renameat2(2), read(2), write(2), close(2).

package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// cstr returns s NUL-terminated, built once for the raw *at wrappers.
func cstr(s string) []byte { return append([]byte(s), 0) }

// cname returns a cstr as a Go string, for messages.
func cname(b []byte) string { return string(b[:len(b)-1]) }

// openat wraps openat(2) for a NUL-terminated name; it does not allocate.
func openat(dir int, name []byte, flags int, mode uint32) (int, error) {
	fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dir), uintptr(unsafe.Pointer(&name[0])),
		uintptr(flags|unix.O_CLOEXEC), uintptr(mode), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// createFile opens name in dir for writing, creating it (mode), emptied
// with trunc. What is planted there by mistake is never used nor followed:
// a symbolic link, FIFO, device or a hard link to another file (link count
// above 1) is unlinked and a new file made in its place; opening never
// blocks (O_NONBLOCK) and never truncates before the check. It does not
// allocate.
func createFile(dir int, name []byte, trunc bool, mode uint32) (int, error) {
	const flags = unix.O_WRONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK
	fd, err := openat(dir, name, flags|unix.O_CREAT, mode)
	var st unix.Stat_t
	if err == nil && unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 {
		if trunc {
			if err := unix.Ftruncate(fd, 0); err != nil {
				unix.Close(fd)
				return -1, err
			}
		}
		return fd, nil
	}
	if err == nil {
		unix.Close(fd)
	}
	// ELOOP: a symlink (O_NOFOLLOW); ENXIO: a FIFO with no reader.
	if err := unlinkat(dir, name, 0); err != nil && err != unix.ENOENT {
		return -1, err
	}
	return openat(dir, name, flags|unix.O_CREAT|unix.O_EXCL, mode)
}

// rawWrite is write(2) as a raw system call (see rawRead).
func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// unlinkat wraps unlinkat(2) for a NUL-terminated name.
func unlinkat(dir int, name []byte, flags int) error {
	_, _, errno := unix.Syscall(unix.SYS_UNLINKAT, uintptr(dir), uintptr(unsafe.Pointer(&name[0])), uintptr(flags))
	if errno != 0 {
		return errno
	}
	return nil
}

// renameat is renameat2(2) with no flags (plain renameat(2) is missing on
// arm64 and riscv64).
func renameat(fromDir int, from []byte, toDir int, to []byte) error {
	return renameat2(fromDir, from, toDir, to, 0)
}

// renameat2 wraps renameat2(2) for NUL-terminated names.
func renameat2(fromDir int, from []byte, toDir int, to []byte, flags uint) error {
	_, _, errno := unix.Syscall6(unix.SYS_RENAMEAT2, uintptr(fromDir), uintptr(unsafe.Pointer(&from[0])),
		uintptr(toDir), uintptr(unsafe.Pointer(&to[0])), uintptr(flags), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// rawRead is read(2) as a raw system call, which the Go runtime does not
// track. Each tracked call of a loop turn wakes the runtime's monitor from
// its sleep (the daemon was idle in the netpoller), and the monitor then
// polls every 20 µs for a while: at a few hundred exits a second that cost
// more CPU than the copying. The hot path's calls return at once (a regular
// file, MSG_DONTWAIT, IPC_NOWAIT, a zero timeout); should one wait for a
// disk, only the daemon's own signal goroutine waits with it.
func rawRead(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// closeAll closes the open descriptors among fds and marks them -1.
func closeAll(fds []int) {
	for i, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
			fds[i] = -1
		}
	}
}
