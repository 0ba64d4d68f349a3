// Stopping: accounting off first, then the shadow files removed, or handed
// over to the next daemon while clients are registered; the abort of a
// start that failed.
// Speaks acct(2) through acct.go and docs/PROTOCOL.md ("The daemon's duties").

package main

import "fmt"

// abort ends a start that failed (or a panic): it logs the error, cleans up
// (accounting off first), reports the failure to the starting process and
// returns the exit code.
func (d *daemon) abort(err error) int {
	code := exitCode(err, exitInternal)
	d.log.errorf("%v", err)
	d.cleanup()
	d.ready.report(code, err)
	return code
}

// cleanup switches accounting off first. With clients registered it hands
// the shadow files over to the next daemon (handOver), and keeps the public
// set their registrations live in; otherwise it removes the shadow files,
// current, the directory and the public set. Then the source files and the
// PID file. Accounting goes off even when the daemon believes another
// program took it: a local user can forge that belief (exits of a thread
// group's leader bring no record), and accounting left on into a file
// nobody drains grows without bound. Replaced by a daemon that waits to
// take over (--restart), it leaves accounting on into the source files and
// hands everything over. It is safe to call more than once.
func (d *daemon) cleanup() {
	replaced := d.turn.stop.replaced && d.sem.successorWaiting()
	if replaced {
		// The next daemon copies on from the source files: nothing is lost
		// between the two.
		d.src.leaveOn()
		d.log.noticef("accounting left on for the daemon taking over")
	}
	if err := d.src.switchOff(); err != nil {
		d.log.errorf("%v", err)
	}
	clients, held := d.registered()
	inUse := false
	if clients == 0 && !held && !replaced {
		// A read-locked shadow file is a client's, whatever the count says:
		// any local user can set it (the set is mode 0666).
		inUse, _ = d.sh.anyInUse()
	}
	switch {
	case replaced:
		d.handOver("taken over")
	case clients != 0 || held:
		d.handOver(fmt.Sprintf("%d clients registered", clients))
	case inUse:
		d.handOver("a shadow file read-locked by a client")
	default:
		if err := d.sh.removeAll(); err != nil {
			d.log.warnf("%v", err)
		}
		if err := d.sem.removePublic(); err != nil {
			d.log.warnf("%v", err)
		}
	}
	if replaced {
		d.src.close()
	} else if err := d.src.remove(); err != nil {
		d.log.errorf("%v", err)
	}
	d.wait.close()
	d.ready.close()
}

// handOver leaves the shadow files to the next daemon, which adopts them, so
// that registered clients never see their file deleted (why says which
// clients, for the log): the records the
// kernel wrote before accounting went off are copied, the status file is
// removed and the files are closed. Nothing grows once the daemon is gone.
func (d *daemon) handOver(why string) {
	if d.sh.dir < 0 {
		return
	}
	if d.src.buf != nil { // accounting was on
		d.turn.begin()
		err := d.drain()
		if err == nil && d.src.switching && !d.disk.low {
			if err = d.finishRotation(); err == nil {
				err = d.drain()
			}
		}
		if err != nil {
			d.log.errorf("%v", err)
		}
		if n := d.src.backlog(); d.disk.low && n > 0 && !d.turn.stop.replaced {
			d.log.warnf("%s: %d bytes of records held for want of space are not copied", shadowDir, n)
		}
	}
	d.status.remove(d.sh.dir)
	d.sh.close()
	d.log.noticef("%s: %s and the public semaphore set kept for the next daemon", why, shadowDir)
}
