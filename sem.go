// System V semaphores: how clients find the daemon and register with it.
// Speaks semget(2), semop(2), semctl(2), include/uapi/linux/sem.h and the
// key/value contract in docs/PROTOCOL.md ("Semaphores").

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	privateKey = 1071979 // 0x105b6b: number of running daemons
	publicKey  = 1071980 // 0x105b6c: sem 0 = 100 - clients, sem 1 = binary lock
	maxClients = 100

	semClients = 0 // index of the client counter in the public set
	semLock    = 1 // index of the binary lock in the public set

	// include/uapi/linux/sem.h
	semUndo = 0x1000 // #define SEM_UNDO 0x1000
	getPID  = 11     // #define GETPID 11
	getVal  = 12     // #define GETVAL 12
	getAll  = 13     // #define GETALL 13
	getNcnt = 14     // #define GETNCNT 14
	getZcnt = 15     // #define GETZCNT 15
	setAll  = 17     // #define SETALL 17

	// createTries bounds how often the start removes a public set that a
	// local user creates again at once.
	createTries = 100
)

// sembuf is struct sembuf from include/uapi/linux/sem.h.
type sembuf struct {
	num uint16 // sem_num
	op  int16  // sem_op
	flg int16  // sem_flg
}

const sizeofSembuf = 6

// The wrappers below are raw system calls, which the Go runtime does not
// track (see rawRead in sys.go): none of them blocks as the daemon uses
// them (IPC_NOWAIT, or a +1). takeOver's wait alone blocks (semWait).

// semget wraps semget(2).
func semget(key, nsems, flag int) (int, error) {
	id, _, errno := unix.RawSyscall(unix.SYS_SEMGET, uintptr(key), uintptr(nsems), uintptr(flag))
	if errno != 0 {
		return -1, errno
	}
	return int(id), nil
}

// semop wraps semop(2), which is semtimedop(2) with no timeout on every
// architecture (sysSemtimedop, in sem_*bit.go, is the one difference).
func semop(id int, ops []sembuf) error {
	_, _, errno := unix.RawSyscall6(sysSemtimedop, uintptr(id), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// semctl wraps semctl(2); arg is the union semun, passed as a pointer for
// GETALL and SETALL (never SETVAL with a plain int: wrong on 64-bit big-endian).
// The daemon uses GETPID, GETVAL, GETALL, GETZCNT and IPC_RMID only (the
// tests SETALL too): none passes a semid_ds, so no architecture needs the
// IPC_64 flag.
func semctl(id, num, cmd int, arg unsafe.Pointer) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

var errAlreadyRunning = errors.New("another atopacctd is running (semaphore 1071979 is taken)")

// semaphores owns the daemon's two sets and a preallocated GETALL buffer.
type semaphores struct {
	private int // set ids, -1 until acquired (0 is a valid id)
	public  int
	vals    [2]uint16
	lockOps [1]sembuf
}

// daemonRunning reports whether a daemon holds the private set; it only
// reads. A set that is not provably a daemon's (privateVerdict: any local
// user may create the key first) holds no daemon: the start replaces it.
func daemonRunning() (bool, error) {
	id, err := trustedPrivate()
	if id < 0 || err != nil {
		return false, err
	}
	v, err := semctl(id, 0, getVal, nil)
	if err != nil {
		return false, os.NewSyscallError("semctl", err)
	}
	return v > 0, nil
}

// trustedPrivate returns the private set's id if it is provably a daemon's,
// else -1.
func trustedPrivate() (int, error) {
	id, err := semget(privateKey, 0, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, nil
	}
	if err != nil {
		return -1, os.NewSyscallError("semget", err)
	}
	if set, err := readIPCSet(id); err == nil && privateVerdict(set) != "" {
		return -1, nil
	}
	return id, nil // provably a daemon's, or /proc/sysvipc/sem unreadable: trusted as before
}

// privateVerdict decides whether a private set is provably a daemon's: made
// and owned by root, mode 0600, one semaphore. Only then are its value (the
// daemons running) and its last operation's pid (which daemon) root's to
// set. It returns why not ("" when it is).
func privateVerdict(set ipcSet) string { return set.unlike(0o600, 1) }

// unlike says how set differs from one root made and owns with mode perms
// and nsems semaphores ("" if it does not).
func (set ipcSet) unlike(perms uint32, nsems int) string {
	switch {
	case set.uid != 0 || set.cuid != 0:
		return fmt.Sprintf("owned by uid %d, made by uid %d", set.uid, set.cuid)
	case set.perms != perms:
		return fmt.Sprintf("mode %04o, not %04o", set.perms, perms)
	case set.nsems != nsems:
		return fmt.Sprintf("%d semaphores, not %d", set.nsems, nsems)
	}
	return ""
}

// semFacts is what acquiring the semaphores found, for the log.
type semFacts struct {
	tookOver   int    // the pid of the daemon taken over from (--restart), 0 if none
	forged     string // why a private set found was not a daemon's (removed), "" if none was
	removed    ipcSet // a public set not root's that the start removed (uid or cuid not 0)
	adopted    bool   // the public set a previous daemon left was adopted
	clients    int    // the clients registered in it
	notAdopted string // why a public set found was not adopted, "" if none was
}

// acquire counts this daemon in the private set (undone by the kernel when the
// process dies), taking over from a running daemon with restart (takeOver),
// then adopts the public set a previous daemon left (adoptPublic) or creates
// it anew with the values [100, 1]. A private set that is not provably a
// daemon's is removed and made anew first: a local user's set would let them
// refuse every start, or make --restart start a second daemon.
func (s *semaphores) acquire(restart bool) (f semFacts, err error) {
	if f.forged, err = s.ownPrivate(); err != nil {
		return f, err
	}
	id := s.private
	// Wait-for-zero and +1 in one atomic semop: two daemons starting at once
	// cannot both succeed.
	err = semop(id, []sembuf{{0, 0, unix.IPC_NOWAIT}, {0, 1, semUndo}})
	switch {
	case errors.Is(err, unix.EAGAIN) && restart:
		if f.tookOver, err = takeOver(id); err != nil {
			return semFacts{}, err
		}
	case errors.Is(err, unix.EAGAIN):
		return f, errAlreadyRunning
	case err != nil:
		return f, os.NewSyscallError("semop private", err)
	}
	if id, err = semget(publicKey, 0, 0); err != nil { // nsems 0: whatever its size
		f.removed, err = s.createPublic() // none, unless one was made since
		return f, err
	}
	if f.notAdopted = s.adoptPublic(id); f.notAdopted == "" {
		f.adopted = true
		f.clients, _, _ = s.values()
		return f, nil
	}
	f.removed, err = s.createPublic()
	return f, err
}

// ownPrivate finds the private set, or makes it (root's, mode 0600). A set
// that is not provably a daemon's (privateVerdict) is removed and made anew
// (as root, any set can be removed), up to createTries times should a
// local user create it again meanwhile; it returns why the first was not a
// daemon's. A daemon's set is never removed: two daemons starting at once
// find or make the same set, and the semop that counts them decides.
func (s *semaphores) ownPrivate() (forged string, err error) {
	for try := 0; try < createTries; try++ {
		id, err := semget(privateKey, 1, unix.IPC_CREAT|0o600)
		if err != nil {
			return forged, os.NewSyscallError("semget private", err)
		}
		why := ""
		if set, err := readIPCSet(id); err == nil { // unreadable (no /proc): trusted, as before
			why = privateVerdict(set)
		}
		if why == "" {
			s.private = id
			return forged, nil
		}
		if forged == "" {
			forged = why
		}
		if _, err := semctl(id, 0, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			return forged, os.NewSyscallError("semctl IPC_RMID private", err)
		}
	}
	return forged, fmt.Errorf("semget private: re-created by another process %d times in a row", createTries)
}

// ipcSet is what /proc/sysvipc/sem says of one semaphore set.
type ipcSet struct {
	perms     uint32 // permission bits
	nsems     int
	uid, cuid uint32
}

// publicVerdict decides whether a public set is provably a daemon's: made
// and owned by root, mode 0666, two semaphores, the client count within
// [0, 100] and the lock 0 or 1. It returns why not ("" when adoptable);
// vals is read only once nsems is known to be 2.
func publicVerdict(set ipcSet, vals func() ([2]uint16, error)) string {
	if why := set.unlike(0o666, 2); why != "" {
		return why
	}
	v, err := vals()
	switch {
	case err != nil:
		return err.Error()
	case v[semClients] > maxClients || v[semLock] > 1:
		return fmt.Sprintf("values %d and %d out of range", v[semClients], v[semLock])
	case v[semClients] == maxClients && v[semLock] == 0:
		return "locked with no client registered" // no client attaches so: removePublic left it
	}
	return ""
}

// adoptPublic keeps set id as the public set when publicVerdict says it is
// a daemon's: the SEM_UNDO registrations of the clients that attached to
// the previous daemon live in it. It returns why not ("" when adopted).
func (s *semaphores) adoptPublic(id int) string {
	set, err := readIPCSet(id)
	if err != nil {
		return err.Error()
	}
	why := publicVerdict(set, func() ([2]uint16, error) {
		var v [2]uint16
		_, err := semctl(id, 0, getAll, unsafe.Pointer(&v[0]))
		return v, os.NewSyscallError("semctl GETALL", err)
	})
	if why == "" {
		s.public = id
	}
	return why
}

// readIPCSet finds set id in /proc/sysvipc/sem (ipc/util.c: a header line
// naming the columns, one line per set, permissions in octal). It is read
// as text: struct semid64_ds has a layout per architecture.
func readIPCSet(id int) (ipcSet, error) {
	b, err := os.ReadFile("/proc/sysvipc/sem")
	if err != nil {
		return ipcSet{}, err
	}
	lines := strings.Split(string(b), "\n")
	col := map[string]int{}
	for i, name := range strings.Fields(lines[0]) {
		col[name] = i
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < len(col) || f[col["semid"]] != strconv.Itoa(id) {
			continue
		}
		num := func(name string, base int) uint64 {
			v, _ := strconv.ParseUint(f[col[name]], base, 32)
			return v
		}
		return ipcSet{perms: uint32(num("perms", 8)), nsems: int(num("nsems", 10)),
			uid: uint32(num("uid", 10)), cuid: uint32(num("cuid", 10))}, nil
	}
	return ipcSet{}, fmt.Errorf("semaphore set %d not in /proc/sysvipc/sem", id)
}

// createPublic removes any public set and makes it anew (recreate), at
// start (as root: any set can be removed). A local user may create the key
// again between the two: it tries up to createTries times. It returns the
// first set it removed that was not root's (uid and cuid 0 if none).
func (s *semaphores) createPublic() (removed ipcSet, err error) {
	for try := 0; try < createTries; try++ {
		if id, err := semget(publicKey, 0, 0); err == nil {
			if set, err := readIPCSet(id); err == nil && (set.uid != 0 || set.cuid != 0) && removed == (ipcSet{}) {
				removed = set
			}
			if _, err := semctl(id, 0, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
				return removed, os.NewSyscallError("semctl IPC_RMID public", err)
			}
		}
		if made, err := s.recreate(); made || err != nil {
			return removed, err
		}
	}
	return removed, fmt.Errorf("semget public: re-created by another process %d times in a row", createTries)
}

// recreate makes the public set anew, at start and at run time after
// someone removed it (ipcrm), with what the sandbox allows: semget, and a
// semop that brings a new set's [0, 0] to [100, 1]. made is false while another process's set
// holds the key, which only CAP_SYS_ADMIN could remove: the daemon then
// has no public set (public is -1), and tries again later.
func (s *semaphores) recreate() (made bool, err error) {
	id, err := semget(publicKey, 2, unix.IPC_CREAT|unix.IPC_EXCL|0o666)
	if errors.Is(err, unix.EEXIST) {
		s.public = -1
		return false, nil
	}
	if err != nil {
		return false, os.NewSyscallError("semget public", err)
	}
	s.public = id
	return true, os.NewSyscallError("semop public", semop(id, []sembuf{{semClients, maxClients, 0}, {semLock, 1, 0}}))
}

// values reads both public semaphores with one semctl.
func (s *semaphores) values() (clients int, lockFree bool, err error) {
	if _, err := semctl(s.public, 0, getAll, unsafe.Pointer(&s.vals[0])); err != nil {
		return 0, false, os.NewSyscallError("semctl GETALL public", err)
	}
	return maxClients - int(s.vals[semClients]), s.vals[semLock] > 0, nil
}

// lastOp returns the pid of the last operation on the client count (GETPID;
// 0 if unknown): a client registering or leaving, or a user setting it.
func (s *semaphores) lastOp() int {
	pid, _ := semctl(s.public, semClients, getPID, nil)
	return pid
}

// lockForged reports whether the last values read a lock above 1, which no
// daemon or client makes: a local user raised it (the set is mode 0666).
func (s *semaphores) lockForged() bool { return s.vals[semLock] > 1 }

// tryLock takes the binary lock without waiting; false means a client holds it.
func (s *semaphores) tryLock() (bool, error) {
	s.lockOps[0] = sembuf{semLock, -1, semUndo | unix.IPC_NOWAIT}
	err := semop(s.public, s.lockOps[:])
	if errors.Is(err, unix.EAGAIN) {
		return false, nil
	}
	if err != nil {
		return false, os.NewSyscallError("semop lock", err)
	}
	return true, nil
}

// unlock releases the binary lock taken by tryLock.
func (s *semaphores) unlock() error {
	s.lockOps[0] = sembuf{semLock, 1, semUndo}
	if err := semop(s.public, s.lockOps[:]); err != nil {
		return os.NewSyscallError("semop unlock", err)
	}
	return nil
}

// removePublic deletes the public set so that clients stop finding a
// daemon. The sandbox lets only the set of the start be removed (seccomp,
// by argument): one recreated since is locked instead, without undo, so
// that no client registers with a daemon that is gone, and the next daemon
// replaces it (publicVerdict). It returns the error of a set left so.
func (s *semaphores) removePublic() error {
	if s.public < 0 {
		return nil
	}
	id := s.public
	s.public = -1
	if _, err := semctl(id, 0, unix.IPC_RMID, nil); err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
		return nil
	}
	s.lockOps[0] = sembuf{semLock, -1, unix.IPC_NOWAIT}
	if err := semop(id, s.lockOps[:]); err != nil {
		return fmt.Errorf("public semaphore set %d: neither removed nor locked: %w", publicKey, os.NewSyscallError("semop", err))
	}
	return fmt.Errorf("public semaphore set %d recreated since start: the sandbox lets it not be removed: locked for the next daemon to replace", publicKey)
}

// publicClients reads the number of registered clients without owning the
// set: for --status, which any user may run (the set is mode 0666).
func publicClients() (int, error) {
	id, err := semget(publicKey, 2, 0)
	if err != nil {
		return 0, os.NewSyscallError("semget public", err)
	}
	s := semaphores{public: id}
	n, _, err := s.values()
	return n, err
}
