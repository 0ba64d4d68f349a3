// The sandbox: after every privileged resource is acquired, the daemon keeps
// CAP_SYS_PACCT alone, sets no_new_privs, confines file access to its top
// directory with Landlock and loads a seccomp allow-list.
// Speaks capabilities(7), prctl(2) (PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE,
// PR_SET_SECUREBITS), setrlimit(2), landlock(7) (landlock_create_ruleset(2),
// landlock_add_rule(2), landlock_restrict_self(2)), seccomp(2)
// (SECCOMP_FILTER_FLAG_TSYNC), include/uapi/linux/landlock.h.

package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// seccompDefault is the action for calls outside the allow-list: "errno"
// (EPERM). Test builds stamp "log" in (-ldflags -X main.seccompDefault=log)
// to find, in the kernel log, any call the list lacks.
var seccompDefault = "errno"

const maxOpenFiles = 64 // RLIMIT_NOFILE: the daemon holds about 15 descriptors

// sandboxConfig names what the sandboxed daemon may still touch.
type sandboxConfig struct {
	top     int    // the top directory: the source files' names and the shadow directory's
	shadow  int    // the shadow directory: everything the daemon writes but the source files
	sources []int  // the source files, which acct(2) opens
	pidfile string // "" when there is none

	// The only arguments the filter lets through (-1: none).
	syslog  int // connect: the syslog socket, re-connected after syslog restarts
	netlink int // sendto: the proc connector socket, leaving its group at stop
	public  int // semctl IPC_RMID: the public semaphore set, removed at stop
}

// Placeholders in the filter's argument conditions (assembled ahead of
// time), replaced at load by the values in sandboxConfig. None is a valid
// descriptor under RLIMIT_NOFILE, and one left in place matches nothing.
const (
	seccompSyslog  = 0x5ec0f001
	seccompNetlink = 0x5ec0f002
	seccompPublic  = 0x5ec0f003
	seccompSelf    = 0x5ec0f004 // tgkill: the daemon's own pid
)

// prepareSandbox makes the Go runtime ask for nothing new once the filter is
// loaded: GOMAXPROCS already pinned at start-up (no cgroup re-reads), the
// netpoller started, the local time zone loaded.
func prepareSandbox() {
	if r, w, err := os.Pipe(); err == nil { // registers with the netpoller
		r.SetReadDeadline(time.Now())
		r.Close()
		w.Close()
	}
	_, _ = time.Now().Zone() // loads /etc/localtime for syslog lines
}

// sandboxFacts is what the sandbox could not do, for the log.
type sandboxFacts struct {
	landlockABI    int   // the Landlock ABI version applied, 0 if none
	noLandlock     error // why Landlock is unavailable; nil: file access is confined
	seccompLogOnly bool  // the allow-list is unverified here: calls outside it are logged, not refused
}

// String says what confines the daemon, for --status.
func (f sandboxFacts) String() string {
	s := "seccomp"
	if f.seccompLogOnly {
		s += " (log only)"
	}
	if f.noLandlock != nil {
		return s + ", no Landlock (" + f.noLandlock.Error() + ")"
	}
	return s + ", Landlock ABI " + strconv.Itoa(f.landlockABI)
}

// sandbox applies, in this order: resource limits, capabilities,
// no_new_privs, Landlock, seccomp. Landlock missing from the kernel is not
// an error, nor an unverified allow-list: the facts say so.
func sandbox(c sandboxConfig) (f sandboxFacts, err error) {
	prepareSandbox()
	for _, l := range []struct {
		res int
		max uint64
	}{{unix.RLIMIT_CORE, 0}, {unix.RLIMIT_NOFILE, maxOpenFiles}} {
		if err := unix.Setrlimit(l.res, &unix.Rlimit{Cur: l.max, Max: l.max}); err != nil {
			return f, fmt.Errorf("setrlimit: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return f, os.NewSyscallError("prctl PR_SET_DUMPABLE", err)
	}
	if err := dropCapabilities(); err != nil {
		return f, fmt.Errorf("drop capabilities: %w", err)
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return f, os.NewSyscallError("prctl PR_SET_NO_NEW_PRIVS", err)
	}
	if f.landlockABI, f.noLandlock, err = landlock(c); err != nil {
		return f, fmt.Errorf("landlock: %w", err)
	}
	f.seccompLogOnly, err = loadSeccomp(map[uint32]int{seccompSyslog: c.syslog, seccompNetlink: c.netlink, seccompPublic: c.public, seccompSelf: os.Getpid()})
	return f, err
}

// sandboxUsable checks, before anything is acquired, that changes can reach
// every thread: in a binary built with cgo, Go's AllThreadsSyscall refuses
// and libcap's psx crashes the process, which must not happen with
// accounting on.
func sandboxUsable() error {
	if err := allThreads(unix.SYS_GETPID, 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: cannot act on every thread (%v): rebuild with CGO_ENABLED=0, or run with --no-sandbox", err)
	}
	return nil
}

// allThreads runs a system call on every thread of the process (Go's
// AllThreadsSyscall, which works because the binary is built without cgo).
func allThreads(trap, a1, a2, a3 uintptr) error {
	if _, _, errno := syscall.AllThreadsSyscall(trap, a1, a2, a3); errno != 0 {
		return errno
	}
	return nil
}

// dropCapabilities leaves CAP_SYS_PACCT alone in the permitted, effective
// and bounding sets, empties the inheritable and ambient sets, and locks the
// secure bits so that uid 0 gains nothing back (libcap applies each change to
// every thread).
func dropCapabilities() error {
	var drop []cap.Value
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if v != cap.SYS_PACCT {
			drop = append(drop, v)
		}
	}
	if err := cap.DropBound(drop...); err != nil {
		return fmt.Errorf("bounding set: %w", err)
	}
	if err := cap.ResetAmbient(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("ambient set: %w", err) // EINVAL: a kernel before 4.3, no ambient set
	}
	bits := cap.SecbitNoRoot | cap.SecbitNoRootLocked | cap.SecbitNoSetUIDFixup | cap.SecbitNoSetUIDFixupLocked |
		cap.SecbitKeepCapsLocked | cap.SecbitNoCapAmbientRaise | cap.SecbitNoCapAmbientRaiseLocked
	if err := bits.Set(); err != nil {
		return fmt.Errorf("secure bits: %w", err)
	}
	set := cap.NewSet()
	if err := set.SetFlag(cap.Permitted, true, cap.SYS_PACCT); err != nil {
		return err
	}
	if err := set.SetFlag(cap.Effective, true, cap.SYS_PACCT); err != nil {
		return err
	}
	return set.SetProc()
}

// Landlock rights by the ABI version that introduced them.
const (
	llFSv1 = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
		unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	llFSv2 = llFSv1 | unix.LANDLOCK_ACCESS_FS_REFER
	llFSv3 = llFSv2 | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	llFSv5 = llFSv3 | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	llNet  = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP // ABI 4

	// What the daemon does to names in its top directory: exchanging the
	// source files' names at each rotation (a rename: make and remove),
	// removing them and the shadow directory at stop. Beneath the top
	// directory it can read, write or list nothing but its own files.
	llTop = unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR
	// What it does in the shadow directory: shadow files, current, status.
	llShadow = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	// What it does to the PID file at stop: read it, and empty it where no
	// rule lets it be removed.
	llPidfile = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	// What acct(2) needs on each source file, which it opens through a
	// private clone of the mount: the walk up from there never meets the
	// rule on the top directory.
	llSource = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE
)

// llRule grants access beneath a directory (by fd or path) or to a file.
type llRule struct {
	path   string
	fd     int
	access uint64
}

// landlock restricts every thread to its own files: the names in the top
// directory (llTop), the shadow directory, the source files and the PID
// file. Abstract unix sockets stay unscoped: $NOTIFY_SOCKET may be one.
func landlock(c sandboxConfig) (abiVersion int, unavailable, err error) {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	// ENOSYS: built without Landlock; EOPNOTSUPP: not enabled at boot;
	// EPERM: a container manager's seccomp filter (systemd-nspawn 252).
	if errno == unix.ENOSYS || errno == unix.EOPNOTSUPP || errno == unix.EPERM {
		return 0, errno, nil
	}
	if errno != 0 {
		return 0, nil, os.NewSyscallError("landlock_create_ruleset", errno)
	}
	attr, size := landlockAttr(abi)
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return 0, nil, os.NewSyscallError("landlock_create_ruleset", errno)
	}
	defer unix.Close(int(fd))
	rules := []llRule{{fd: c.top, access: llTop}, {fd: c.shadow, access: llShadow}}
	for _, fd := range c.sources {
		rules = append(rules, llRule{fd: fd, access: llSource})
	}
	if c.pidfile != "" {
		rules = append(rules, llRule{path: c.pidfile, access: llPidfile})
	}
	for _, r := range rules {
		dirfd := r.fd
		if r.path != "" {
			var err error
			if dirfd, err = unix.Open(r.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
				return 0, nil, fmt.Errorf("open %s: %w", r.path, err)
			}
			defer unix.Close(dirfd)
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: r.access & attr.Handled_access_fs, Parent_fd: int32(dirfd)}
		if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH,
			uintptr(unsafe.Pointer(&rule)), 0, 0, 0); errno != 0 {
			return 0, nil, fmt.Errorf("rule for %s: %w", r.path, os.NewSyscallError("landlock_add_rule", errno))
		}
	}
	if err := allThreads(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); err != nil {
		return 0, nil, os.NewSyscallError("landlock_restrict_self", err)
	}
	return int(abi), nil, nil
}

// landlockAttr is the ruleset for Landlock ABI version abi: every access
// right that version handles, and the size of the struct it knows.
func landlockAttr(abi uintptr) (unix.LandlockRulesetAttr, uintptr) {
	attr := unix.LandlockRulesetAttr{Handled_access_fs: llFSv1}
	size := unsafe.Sizeof(attr.Handled_access_fs)
	switch {
	case abi >= 6:
		attr.Scoped = unix.LANDLOCK_SCOPE_SIGNAL
		size = unsafe.Offsetof(attr.Scoped) + 8
		fallthrough
	case abi >= 4:
		attr.Handled_access_net = llNet
		size = max(size, unsafe.Offsetof(attr.Handled_access_net)+8)
	}
	switch {
	case abi >= 5:
		attr.Handled_access_fs = llFSv5
	case abi >= 3:
		attr.Handled_access_fs = llFSv3
	case abi >= 2:
		attr.Handled_access_fs = llFSv2
	}
	return attr, size
}

// The seccomp allow-list: every call the daemon makes once sandboxed, and
// what the Go runtime needs after start, each with who needs it. Names the
// architecture lacks (poll on arm64, say) are left out.
var allowed = []string{
	// Go runtime: scheduler, memory, signals, timers, netpoller.
	"futex", "nanosleep", "clock_nanosleep", "sched_yield", "mmap", "munmap", "madvise", "mprotect",
	"rt_sigreturn", "rt_sigprocmask", "sigaltstack", "gettid", "getpid", "exit", "exit_group",
	"restart_syscall", "clock_gettime", "gettimeofday", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"epoll_ctl",
	// The loop: wait, events, source, shadow files, current, status, GC.
	"ppoll", "recvmmsg", "pread64", "pwrite64", "read", "write", "openat", "close", "renameat2", "unlinkat", "mkdirat",
	"fstat", "newfstatat", "fstatfs", "ftruncate", "fcntl", "getdents64", "lseek",
	// x/sys's Fstat on arm64 and riscv64 is newfstatat(fd, "", AT_EMPTY_PATH),
	// which go-seccomp-bpf's arm64 table names fstatat.
	"fstatat",
	// Semaphores: the client count, the public lock, re-creating a removed
	// set (semctl: by argument, in seccompPolicy).
	"semtimedop", "semtimedop_time64", "semget",
	// Source rotation and shutdown.
	"acct",
	// The accounting watch: whether exits without a record ended their group.
	"pidfd_open",
	// The same calls under their 32-bit names (386, arm): 64-bit offsets and
	// sizes, 64-bit time, the thread pointer of a new 386 thread.
	"futex_time64", "mmap2", "set_thread_area", "clock_gettime64", "clock_nanosleep_time64", "ppoll_time64", "recvmmsg_time64",
	"fstat64", "fstatat64", "fstatfs64", "ftruncate64", "fcntl64", "_llseek",
}

// killed are calls that only a compromised daemon makes: the process dies at
// once. Everything else outside allowed fails with EPERM, so the daemon's own
// error path switches accounting off and cleans up.
var killed = []string{
	"execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module", "bpf", "mount", "umount2", "pivot_root", "chroot",
}

// The filter itself is assembled from allowed and killed by go-seccomp-bpf
// ahead of time, one program per architecture (zseccomp_GOARCH.go, written by
// make seccomp and checked by TestSeccompFilter): the daemon carries the
// program, not the assembler and its syscall tables for every architecture
// (165 KB of heap from the moment it starts).

// loadSeccomp loads the filter on every thread (TSYNC); threads the runtime
// starts later inherit it. Where the allow-list has not been verified by a
// log-mode soak on that architecture (seccompVerified, written by make
// seccomp), a call it lacks is logged instead of refused: refusing a call
// the runtime needs would crash the daemon later, with accounting on.
// args replaces the placeholders of argument conditions (values below 0
// leave them).
func loadSeccomp(args map[uint32]int) (logOnly bool, err error) {
	if len(seccompFilter) == 0 {
		return false, fmt.Errorf("seccomp: no filter for %s (make seccomp on that architecture, or --no-sandbox)", runtime.GOARCH)
	}
	prog := slices.Clone(seccompFilter)
	for i, ins := range prog {
		if v, ok := args[ins.K]; ok && ins.Code == bpfJeq && v >= 0 {
			prog[i].K = uint32(v)
		}
	}
	logOnly = !seccompVerified && seccompDefault != "log"
	if seccompDefault == "log" || logOnly {
		for i, ins := range prog {
			if ins.Code == bpfRet && ins.K == seccompRetEPERM {
				prog[i].K = unix.SECCOMP_RET_LOG
			}
		}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// With TSYNC a positive return is the thread that could not follow.
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return false, os.NewSyscallError("seccomp", errno)
	}
	if tid != 0 {
		return false, fmt.Errorf("seccomp: thread %d cannot take the filter", tid)
	}
	return logOnly, nil
}

const (
	bpfRet          = unix.BPF_RET | unix.BPF_K
	bpfJeq          = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	seccompRetEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM) // the default action
)
