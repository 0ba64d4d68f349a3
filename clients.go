// Clients: whether any is registered (the public semaphores, read at every
// copy), the reset of the shadow files when the last one left, and the
// collection of shadow files no client reads any more, under the public
// lock, which spares files a client holds a read lock on.
// Speaks semop(2)/semctl(2) through sem.go, fcntl(2) (F_SETLK: a write lock
// that fails says a client holds a read lock), getdents64(2) and
// docs/PROTOCOL.md ("Semaphores", "The daemon's duties").

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// lockHeld: the public lock held longer is no client attaching (collect).
const lockHeld = 10 * time.Second

// clientWatch is what the daemon remembers of its clients between turns.
type clientWatch struct {
	nextGC    time.Time // the next collection
	lockBusy  time.Time // since when collection has found the public lock taken
	lockStuck bool      // collecting without the lock (logged once)
	tampered  tamper    // the kinds of tampering seen (each logged once)
	foreign   bool      // another process's set holds the public key (logged once)

	lockLook time.Time // when the shadow files were last looked at for read locks (readLocked)
	lockSeen bool      // whether that look found one
	lookOp   int       // the pid of the last operation on the client count then

	dropped uint64 // records dropped for want of a client, since start
}

// drop counts n records dropped for want of a client.
func (c *clientWatch) drop(n uint64) { c.dropped += n }

// looked records a look for read locks at now, what it found, and op, the
// pid of the last operation on the client count then.
func (c *clientWatch) looked(now time.Time, found bool, op int) {
	c.lockLook, c.lockSeen, c.lookOp = now, found, op
}

// lookedSince reports whether the last look for read locks still holds at
// now, with op the pid of the last operation on the client count, and what
// it found: a lock found, for a second; none found, for a second unless the
// count has been operated on since (a client registered, or a user set it).
func (c *clientWatch) lookedSince(now time.Time, op int) (holds, found bool) {
	recent := !c.lockLook.IsZero() && now.Sub(c.lockLook) < tick
	return recent && (c.lockSeen || op == c.lookOp), c.lockSeen
}

// gcAt sets the time of the next collection.
func (c *clientWatch) gcAt(t time.Time) { c.nextGC = t }

// tamper is a kind of tampering with the public set, which any local user
// can do (it is mode 0666).
type tamper uint8

const (
	tamperCount tamper = 1 << iota // the client count raised above 100
	tamperLock                     // the lock raised above 1
	tamperOps                      // taking or releasing the lock failed (ERANGE: the lock pushed to 32767)
)

// sawTampering says whether tampering of kind k is seen for the first time.
func (c *clientWatch) sawTampering(k tamper) bool {
	first := c.tampered&k == 0
	c.tampered |= k
	return first
}

// publicMade records whether the daemon's last try made the public set,
// and returns whether another process's set held the key before it.
func (c *clientWatch) publicMade(made bool) (wasForeign bool) {
	wasForeign, c.foreign = c.foreign, !made
	return wasForeign
}

// clientVerdict is what the public semaphores say of clients (presence).
type clientVerdict int

const (
	clientsCopy  clientVerdict = iota // a client is registered or attaching: copy
	clientsDrop                       // none, and the shadow files are client-less already: drop
	clientsReset                      // none: take the lock, look again, reset the shadow files
)

func (v clientVerdict) String() string { return [...]string{"copy", "drop", "reset"}[v] }

// presence decides from one GETALL: the registered clients, whether the lock
// is free, and whether the shadow files are in their client-less state. A
// count below zero (the client semaphore raised above 100 by hand: the set
// is mode 0666) is tampering, not an absence of clients: copying goes on.
func presence(clients int, lockFree, empty bool) clientVerdict {
	switch {
	case clients != 0 || !lockFree:
		return clientsCopy
	case empty:
		return clientsDrop
	}
	return clientsReset
}

// clientsPresent decides whether records are copied. Only when the lock is
// free and no client counts does the daemon take the lock, look again and
// reset the shadow files to their client-less state, holding the lock as
// briefly as that takes: the other files are removed after it.
func (d *daemon) clientsPresent() (bool, error) {
	if d.sem.public < 0 {
		return true, nil // another process's set holds the key: copy on (reclaimPublic)
	}
	clients, lockFree, err := d.sem.values()
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
		// Someone removed the public set (ipcrm): clients can no longer
		// find the daemon. Create it anew; until one registers, none exist.
		d.log.warnf("public semaphore set %d removed: creating it anew", publicKey)
		return !d.reclaimPublic(), nil
	}
	if err != nil {
		return false, err
	}
	if clients < 0 && d.clients.sawTampering(tamperCount) {
		d.log.warnf("public semaphore set %d: client count %d, below zero: tampered with by a local user; copying on", publicKey, clients)
	}
	if d.sem.lockForged() && d.clients.sawTampering(tamperLock) {
		d.log.warnf("public semaphore set %d: lock above 1: tampered with by a local user; treated as free", publicKey)
	}
	switch presence(clients, lockFree, d.sh.empty()) {
	case clientsCopy:
		return true, nil
	case clientsDrop:
		busy, _ := d.readLocked(false) // a failed look: no client to copy for
		return busy, nil
	}
	if holds, found := d.clients.lookedSince(d.turn.now, 0); holds && found { // a lock found holds whatever op
		return true, nil
	}
	if !d.lock() {
		return true, nil // a client took the lock meanwhile: it is attaching
	}
	clients, _, err = d.sem.values()
	if err == nil && clients == 0 {
		// Any local user can set the count to 100 (the set is mode 0666):
		// a read-locked file is a client, whatever the count says.
		var busy bool
		if busy, err = d.readLocked(true); busy {
			clients = 1
		} else if err == nil {
			err = d.sh.reset()
		}
	}
	d.release()
	if err == nil && clients == 0 {
		err = d.sh.dropOthers()
	}
	return clients > 0, err
}

// readLocked reports whether a client read-locks a shadow file, which
// stands for a client whatever the count says: any local user can set it
// to zero (the set is mode 0666). A look opens the files (and lists the
// directory): the last one's answer is taken while it holds (lookedSince),
// but before a reset, which empties the files, only a lock found is.
func (d *daemon) readLocked(fresh bool) (bool, error) {
	op := d.sem.lastOp()
	if holds, found := d.clients.lookedSince(d.turn.now, op); holds && (found || !fresh) {
		return found, nil
	}
	busy, err := d.sh.anyInUse()
	d.clients.looked(d.turn.now, busy, op)
	return busy, err
}

// reclaimPublic makes the public set anew (semaphores.recreate) and says
// whether it did. While another process's set holds the key, clients that
// register there are not this daemon's to count: it copies on, collects
// without the lock, and tries again every second (periodic).
func (d *daemon) reclaimPublic() bool {
	made, err := d.sem.recreate()
	if err != nil {
		d.log.warnf("%v: trying again in %s", err, tick)
		return false
	}
	switch wasForeign := d.clients.publicMade(made); {
	case !made && !wasForeign:
		d.log.warnf("public semaphore set %d: made by another process before this daemon could make it anew (only root can remove it: ipcrm -S %d); copying on, trying again every %s", publicKey, publicKey, tick)
	case made && wasForeign:
		d.log.noticef("public semaphore set %d made anew", publicKey)
	}
	return made
}

// collect removes unused shadow files under the public lock, so that a
// client between reading current and locking its file is never robbed.
// A lock held longer than lockHeld is no client attaching (atop holds it
// until its probe's record arrives, 2 s at most) but a local user keeping
// it (the set is mode 0666): collection then goes on without it, as the
// C daemon's always does. It never removes the file current names, the
// one an attaching client opens.
func (d *daemon) collect() {
	locked := d.sem.public >= 0 && d.lock()
	switch {
	case locked:
		d.clients.lockTaken()
	case d.sem.public < 0 || d.clients.lockFailed():
		// No set of its own (reclaimPublic), or a lock a local user has made
		// fail: as with a kept lock.
	case !d.clients.lockKept(d.turn.now, d.log):
		d.clients.gcAt(d.turn.now.Add(tick)) // a client is attaching: try again soon
		return
	}
	removed, forced, holder, err := d.sh.collect()
	if locked {
		d.release()
	}
	d.clients.gcAt(d.turn.now.Add(d.opts.gcInterval))
	if err != nil {
		d.log.warnf("garbage collection: %v", err)
	}
	if forced > 0 {
		d.log.warnf("shadow files above %d bytes: removed %d read-locked by a client (pid %d among them); it re-attaches at its next sample (atop >= 2.9; atop 2.8 reads no more until restarted)",
			d.sh.limit, forced, holder)
	}
	if removed > 0 {
		d.log.infof("removed %d unused shadow files", removed)
	}
	d.mem.shed() // what rare paths paged in since: the resident set stays the loop's
}

// lock takes the public lock without waiting; false means a client holds
// it. A failure is never fatal, nor is release's: any local user can make
// either fail (the set is mode 0666: ERANGE once they push the lock to
// 32767, or once the daemon's undo value is out of range); it is logged
// once, and the daemon goes on without the lock, as with one kept
// (lockKept).
func (d *daemon) lock() bool {
	locked, err := d.sem.tryLock()
	if err != nil {
		d.sawOpsFail(err)
	}
	return locked
}

// release lets go of the public lock lock took.
func (d *daemon) release() {
	if err := d.sem.unlock(); err != nil {
		d.sawOpsFail(err)
	}
}

// sawOpsFail logs, once, a lock operation a local user made fail.
func (d *daemon) sawOpsFail(err error) {
	if d.clients.sawTampering(tamperOps) {
		d.log.warnf("public semaphore set %d: %v: tampered with by a local user; going on without the lock", publicKey, err)
	}
}

// lockFailed reports whether taking or releasing the lock has failed.
func (c *clientWatch) lockFailed() bool { return c.tampered&tamperOps != 0 }

// lockKept reports, of a public lock collect found taken at now, whether it
// has been taken for over lockHeld (said once).
func (c *clientWatch) lockKept(now time.Time, log *logger) bool {
	if c.lockBusy.IsZero() {
		c.lockBusy = now
	}
	if now.Sub(c.lockBusy) < lockHeld {
		return false
	}
	if !c.lockStuck {
		c.lockStuck = true
		log.warnf("public semaphore set %d: lock held for over %s, by no attaching client: collecting without it", publicKey, lockHeld)
	}
	return true
}

// lockTaken forgets a kept lock: collect took it.
func (c *clientWatch) lockTaken() { c.lockBusy, c.lockStuck = time.Time{}, false }

// registered reads the public set: the clients it counts, and whether its
// lock is held (a client attaching).
func (d *daemon) registered() (clients int, held bool) {
	if d.sem.public < 0 {
		return 0, false
	}
	clients, lockFree, err := d.sem.values()
	return clients, err == nil && !lockFree
}

// reset returns to the client-less state: file 0 emptied, current = 0/max.
// The caller holds the public lock (a client attaching meanwhile would get
// no accounting), and once it has let go, calls dropOthers.
func (s *shadow) reset() error {
	s.oldest = 0
	return s.start(0)
}

// dropOthers removes every shadow file but 0 after a reset: current names
// file 0, so a client that attaches from then on never opens another.
func (s *shadow) dropOthers() error {
	seqs, err := s.list()
	for _, seq := range seqs {
		if seq != 0 {
			unlinkat(s.dir, formatName(s.name[:], seq), 0)
		}
	}
	return err
}

// list returns the sequence numbers of the shadow files, oldest first.
// It reads the directory into buffers kept between calls: collection runs
// for as long as the daemon does, and garbage would only grow its memory.
func (s *shadow) list() ([]int64, error) {
	fd, err := openat(s.dir, s.dot, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", shadowDir, os.NewSyscallError("openat", err))
	}
	defer unix.Close(fd)
	s.seqs = s.seqs[:0]
	for {
		n, err := unix.Getdents(fd, s.dirBuf[:])
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", shadowDir, os.NewSyscallError("getdents64", err))
		}
		if n == 0 {
			break
		}
		// struct linux_dirent64: d_ino, d_off, d_reclen (u16), d_type, d_name.
		for off := 0; off+direntName < n; {
			reclen := int(binary.NativeEndian.Uint16(s.dirBuf[off+direntReclen:]))
			name := s.dirBuf[off+direntName : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if seq, ok := parseName(name); ok {
				s.seqs = append(s.seqs, seq)
			}
			off += reclen
		}
	}
	slices.Sort(s.seqs)
	return s.seqs, nil
}

// collect removes unused shadow files, oldest first, never the current one: a
// file is unused when no client read-locks it (lockHolder); it stops at the
// first file a client still read-locks, unless the files from there on take
// more than the limit: then it removes read-locked files too, until they do
// not, and says how many (forced) and the pid of one lock holder. The caller
// holds the public lock.
func (s *shadow) collect() (removed, forced, holder int, err error) {
	seqs, err := s.list()
	s.oldest = s.seq
	for _, seq := range seqs {
		if seq >= s.seq {
			break
		}
		s.oldest = seq
		name := formatName(s.name[:], seq)
		if pid := s.lockHolder(name); pid != 0 {
			if s.sizeFrom(seq) <= s.limit {
				break
			}
			forced, holder = forced+1, pid
		}
		if unlinkat(s.dir, name, 0) == nil {
			removed++
		}
		s.oldest = seq + 1
	}
	if err2 := s.removeStale(); err == nil {
		err = err2
	}
	return removed, forced, holder, err
}

// sizeFrom is the size of shadow files seq to the current one, as written.
func (s *shadow) sizeFrom(seq int64) int64 {
	return ((s.seq-seq)*s.max + s.n) * int64(s.recSize)
}

// lockHolder returns the pid of a client that read-locks the shadow file
// name (F_GETLK for a write lock on its first byte), -1 when it has none
// to give (an open file description lock, or F_GETLK failed: in use, to be
// safe), 0 if none does. A file that cannot be opened (removed meanwhile)
// is not in use.
func (s *shadow) lockHolder(name []byte) int {
	fd, err := openat(s.dir, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	err = unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk)
	unix.Close(fd)
	switch {
	case err != nil:
		return -1
	case lk.Type == unix.F_UNLCK:
		return 0
	case lk.Pid <= 0:
		return -1
	}
	return int(lk.Pid)
}

// anyInUse reports whether a client read-locks any shadow file.
func (s *shadow) anyInUse() (bool, error) {
	seqs, err := s.list()
	for _, seq := range seqs {
		if s.lockHolder(formatName(s.name[:], seq)) != 0 {
			return true, err
		}
	}
	return false, err
}
