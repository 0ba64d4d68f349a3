// Source rotation: the kernel is switched to the other source file once the
// one it writes holds --source-max bytes, or at once when it is to resume a
// suspended accounting (suspend.go); the old file is emptied once read to
// its end. Speaks acct(2) through acct.go (source.beginSwitch,
// source.finishSwitch).

package main

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// rotation is what the daemon remembers of source switches between turns.
type rotation struct {
	resume  bool      // switch now: the kernel resumes a suspended accounting at the new file's first record
	armed   bool      // the source file system was at the kernel's suspend level since the last switch (watchSuspend)
	retry   time.Time // no switch before this: the last try failed, or found no room
	unnamed bool      // a source file was removed (logged once)

	rotations uint64 // switches finished since start
}

// due says whether a switch is to begin at now: the file being written is
// full (it holds --source-max bytes), or the kernel is to resume.
func (r *rotation) due(now time.Time, full bool) bool {
	return (full || r.resume) && !now.Before(r.retry)
}

// later puts the next try off by a tick.
func (r *rotation) later(now time.Time) { r.retry = now.Add(tick) }

// resumeNow asks for a switch at once: the kernel resumes at the new file's
// first record.
func (r *rotation) resumeNow() { r.resume = true }

// arm remembers that the source file system reached the suspend level.
func (r *rotation) arm() { r.armed = true }

// lostName says, once, that a source file was found removed.
func (r *rotation) lostName() bool {
	first := !r.unnamed
	r.unnamed = true
	return first
}

// switched forgets the reasons for a switch once it began (the new file is
// checked at its first record); it says whether it was a resume after the
// source file system reached the suspend level.
func (r *rotation) switched() (resumed bool) {
	resumed = r.resume && r.armed
	r.resume, r.armed = false, false
	return resumed
}

// beginRotation switches the kernel to the other source file, unless the
// file system is below the kernel's resume level: a newly switched file
// starts suspended there (kernel/acct.c) and would stay so until the
// kernel's next check.
func (d *daemon) beginRotation() error {
	if f, ok := d.src.lookFree(); ok && !f.atResume(d.src.limits) {
		d.rot.later(d.turn.now)
		return nil
	}
	if err := d.src.beginSwitch(); err != nil {
		d.log.warnf("%v: keeping the old source file, retrying in %s", err, tick)
		d.rot.later(d.turn.now)
		return nil
	}
	if d.rot.switched() {
		d.log.noticef("%s: %d%% free again: switched files so that the kernel resumes process accounting at once", d.opts.top, d.src.limits.resume)
	}
	return nil
}

// finishRotation empties the old source file, now consumed, and reads the
// new one from then on.
func (d *daemon) finishRotation() error {
	switch err := d.src.finishSwitch(); {
	case errors.Is(err, unix.ENOENT):
		// Landlock lets no new source file be made; the open ones serve.
		if d.rot.lostName() {
			d.log.warnf("%v: a source file was removed; carrying on with the open files", err)
		}
	case err != nil:
		return fail(exitFiles, err)
	}
	d.rot.rotations++
	return nil
}
