// Clients: whether any is registered (the public semaphores, read at every
// copy), the reset of the shadow files when the last one left, and the
// collection of shadow files no client reads any more, under the public
// lock. Speaks semop(2)/semctl(2) through sem.go, fcntl(2) read locks
// through shadow.go, and PROTOCOL.md ("Semaphores", "The daemon's duties").

package main

import (
	"errors"
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
	tampered  bool      // a client count out of range was seen (logged once)
	foreign   bool      // another process's set holds the public key (logged once)
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
	if clients < 0 && !d.clients.tampered {
		d.clients.tampered = true
		d.log.warnf("public semaphore set %d: client count %d, below zero: tampered with by a local user; copying on", publicKey, clients)
	}
	switch presence(clients, lockFree, d.sh.empty()) {
	case clientsCopy:
		return true, nil
	case clientsDrop:
		return false, nil
	}
	locked, err := d.sem.tryLock()
	if err != nil || !locked {
		return true, err // a client took the lock meanwhile: it is attaching
	}
	clients, _, err = d.sem.values()
	if err == nil && clients == 0 {
		// Any local user can set the count to 100 (the set is mode 0666):
		// a read-locked file is a client, whatever the count says.
		var busy bool
		if busy, err = d.sh.anyInUse(); busy {
			clients = 1
		} else if err == nil {
			err = d.sh.reset()
		}
	}
	if uerr := d.sem.unlock(); err == nil {
		err = uerr
	}
	if err == nil && clients == 0 {
		err = d.sh.dropOthers()
	}
	return clients > 0, err
}

// reclaimPublic makes the public set anew (semaphores.recreate) and says
// whether it did. While another process's set holds the key, clients that
// register there are not this daemon's to count: it copies on, collects
// without the lock, and tries again every second (periodic).
func (d *daemon) reclaimPublic() bool {
	made, err := d.sem.recreate()
	switch {
	case err != nil:
		d.log.warnf("%v: trying again in %s", err, tick)
		return false
	case !made && !d.clients.foreign:
		d.log.warnf("public semaphore set %d: made by another process before this daemon could make it anew (only root can remove it: ipcrm -S %d); copying on, trying again every %s", publicKey, publicKey, tick)
	case made && d.clients.foreign:
		d.log.noticef("public semaphore set %d made anew", publicKey)
	}
	d.clients.foreign = !made
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
	locked, err := d.sem.tryLock()
	switch {
	case d.sem.public < 0: // no set of its own (reclaimPublic), so no lock: as with a kept lock
	case err != nil:
		d.clients.nextGC = d.now.Add(tick)
		return
	case locked:
		d.clients.lockTaken()
	case !d.clients.lockKept(d.now, d.log):
		d.clients.nextGC = d.now.Add(tick) // a client is attaching: try again soon
		return
	}
	removed, err := d.sh.collect()
	if locked {
		d.sem.unlock()
	}
	d.clients.nextGC = d.now.Add(d.opts.gcInterval)
	if err != nil {
		d.log.warnf("garbage collection: %v", err)
	}
	if removed > 0 {
		d.log.infof("removed %d unused shadow files", removed)
	}
	d.mem.shed() // what rare paths paged in since: the resident set stays the loop's
}

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
