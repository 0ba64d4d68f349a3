// The --restart take-over: a new daemon identifies the running one by the
// private semaphore, asks it with SIGUSR2 to stop leaving accounting on, and
// counts itself in the same operation that sees the old one gone; the old
// one hands its source and shadow files over (stop.go), and the new one
// copies on from them. Speaks semtimedop(2), pidfd_open(2),
// pidfd_send_signal(2) and proc(5) (/proc/PID/exe).

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// takeOverLimit bounds how long --restart waits for the running daemon to
// stop.
const takeOverLimit = 30 * time.Second

// takeOver replaces the daemon counted in the private set id (--restart)
// with no gap in accounting. It identifies the daemon: the pid of the set's
// last operation (its count: failed operations leave that pid alone), a
// pidfd for it, the count still held by that pid (so the pidfd names the
// holder, not a recycled pid), and its executable being this program's
// (" (deleted)" after an upgrade replaced it). Then it waits on the set for
// zero and, while it waits, asks the daemon with SIGUSR2 to stop leaving
// accounting on (a daemon that sees no waiter, GETZCNT, ignores SIGUSR2).
// The wait ends once the kernel has undone the old daemon's count at its
// exit, with this daemon counted in the same operation. It returns the old
// daemon's pid.
func takeOver(id int) (pid int, err error) {
	pid, err = semctl(id, 0, getPID, nil)
	if err != nil {
		return pid, os.NewSyscallError("semctl private GETPID", err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return pid, fmt.Errorf("running daemon (pid %d): %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(fd)
	if held, _ := semctl(id, 0, getVal, nil); held > 0 {
		if again, _ := semctl(id, 0, getPID, nil); again != pid {
			return pid, fmt.Errorf("running daemon (pid %d): the private semaphore changed hands (pid %d)", pid, again)
		}
		self, _ := os.Readlink("/proc/self/exe")
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if exe = strings.TrimSuffix(exe, " (deleted)"); err != nil || exe != strings.TrimSuffix(self, " (deleted)") {
			return pid, fmt.Errorf("running daemon (pid %d) runs %q, not %s: stop it, then start this one", pid, exe, self)
		}
	}
	done := make(chan error, 1)
	go func() { done <- semWait(id, takeOverLimit) }()
	for asked := false; ; {
		select {
		case err := <-done:
			if errors.Is(err, unix.EAGAIN) {
				return pid, fmt.Errorf("running daemon (pid %d) did not stop within %s (one older than --restart ignores SIGUSR2): stop it, then start this one", pid, takeOverLimit)
			}
			if err != nil {
				return pid, os.NewSyscallError("semtimedop private", err)
			}
			return pid, nil
		case <-time.After(time.Millisecond):
			if n, _ := semctl(id, 0, getZcnt, nil); n > 0 && !asked {
				if err := unix.PidfdSendSignal(fd, unix.SIGUSR2, nil, 0); err != nil && err != unix.ESRCH {
					return pid, fmt.Errorf("running daemon (pid %d): %w", pid, os.NewSyscallError("pidfd_send_signal", err))
				}
				asked = true
			}
		}
	}
}

// semWait waits up to limit for the private set id to be zero and counts
// this daemon in it, in one operation (EAGAIN once limit has passed). A
// blocking call, made through the runtime (unix.Syscall6) so that the
// other goroutines run meanwhile. EINTR: semtimedop is never restarted
// after a signal handler (signal(7)), and the Go runtime's preemption
// signal (SIGURG) reaches the waiting thread: it waits again, for what is
// left.
func semWait(id int, limit time.Duration) error {
	ops := []sembuf{{0, 0, 0}, {0, 1, semUndo}}
	deadline := time.Now().Add(limit)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.EAGAIN
		}
		timeout := [2]int64{int64(left / time.Second), int64(left % time.Second)} // struct __kernel_timespec
		_, _, errno := unix.Syscall6(sysSemtimedop, uintptr(id), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)), uintptr(unsafe.Pointer(&timeout)), 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// successorWaiting reports whether a daemon started with --restart waits
// on the private set to take over (GETZCNT): only root can, the set being
// mode 0600.
func (s *semaphores) successorWaiting() bool {
	n, err := semctl(s.private, 0, getZcnt, nil)
	return err == nil && n > 0
}
