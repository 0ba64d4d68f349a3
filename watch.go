// The accounting and disk watch, once a second: whether another program has
// taken process accounting or the kernel suspended it (from exit events that
// bring no record), when to take it back (--reclaim), and the disk guard that
// skips records while the shadow file system is nearly full. The decisions
// are pure functions of plain values (acctDecide, diskDecide); the daemon's
// methods gather the values and act.
// Speaks statfs(2) and the "acct" entry of
// Documentation/admin-guide/sysctl/kernel.rst.

package main

import (
	"time"

	"golang.org/x/sys/unix"
)

// acctState is what the daemon knows of process accounting, from exit
// events that bring no record (only with the proc connector: polling sees
// no exits).
type acctState int

const (
	acctOn        acctState = iota
	acctLost                // another program called acct(2): records go elsewhere
	acctSuspended           // the kernel stopped writing: its file system is nearly full
)

func (s acctState) String() string { return [...]string{"on", "lost", "suspended"}[s] }

// acctWatch is what the accounting state machine remembers.
type acctWatch struct {
	state     acctState
	unmatched uint64    // exit events since the last record arrived
	since     time.Time // when the first of them arrived
	grace     time.Time // no verdict on missing records before this
	lostAt    time.Time // when accounting was lost, or the last reclaim was tried
	leaders   bool      // exits of leaders whose threads lived on were discounted (logged once)
}

// exits counts exit events that came without a record (so far).
func (w *acctWatch) exits(now time.Time, n uint64) {
	if n > 0 && w.unmatched == 0 {
		w.since = now
	}
	w.unmatched += n
}

// recordsArrived resets the count; true when accounting was thought lost or
// suspended (worth a line in the log).
func (w *acctWatch) recordsArrived() bool {
	w.unmatched = 0
	back := w.state != acctOn
	w.state = acctOn
	return back
}

// acctVerdict is what acctDecide tells the watch to do.
type acctVerdict int

const (
	acctKeep    acctVerdict = iota
	acctResume              // suspended, and the file system has room again: the kernel resumes
	acctSuspend             // starved and the file system is below the resume level
	acctLose                // starved with room to spare: another program took accounting
	acctReclaim             // lost for --reclaim: take it back
	acctLeaders             // starved, but no exit without a record ended a thread group
)

func (v acctVerdict) String() string {
	return [...]string{"keep", "resume", "suspend", "lose", "reclaim", "leaders"}[v]
}

// starved: at least 3 exits in lostAfter without a record.
func (w *acctWatch) starved(now time.Time) bool {
	return w.unmatched >= 3 && now.Sub(w.since) >= lostAfter && !now.Before(w.grace)
}

// resumed: the kernel resumes at the new file's first record; no verdict on
// missing records until its next check.
func (w *acctWatch) resumed(now time.Time, check time.Duration) {
	w.state, w.unmatched, w.grace = acctOn, 0, now.Add(check)
}

// acctDecide is the accounting state machine: from what the watch remembers,
// the time, whether the top directory's file system is below the kernel's
// resume level, whether one of the recent exits without a record ended its
// thread group (ended; leaders' exits while their threads live on bring no
// record, and prove nothing), and --reclaim (0 = never). A suspended
// accounting is never reclaimed: the kernel resumes by itself.
func acctDecide(w acctWatch, now time.Time, below, ended bool, reclaim time.Duration) acctVerdict {
	starved := w.starved(now)
	switch {
	case w.state == acctSuspended:
		if !below {
			return acctResume
		}
	case !starved:
	case !ended:
		return acctLeaders
	case below:
		return acctSuspend
	case w.state == acctOn:
		return acctLose
	case reclaim > 0 && now.Sub(w.lostAt) >= reclaim:
		return acctReclaim
	}
	return acctKeep
}

// watchAccounting gathers the values, asks acctDecide, and acts.
// free is a look at the top directory's file system (ok false: it failed).
func (d *daemon) watchAccounting(free freeSpace, ok bool) {
	below := ok && !free.atResume(d.limits)
	w := &d.acct
	ended := true
	if w.starved(d.now) && d.nl != nil {
		ended = d.nl.groupEnded(w.unmatched)
	}
	switch acctDecide(*w, d.now, below, ended, d.opts.reclaim) {
	case acctLeaders:
		if !w.leaders {
			d.log.infof("%d exit events without a record, all of thread-group leaders whose threads live on: no sign that accounting is lost", w.unmatched)
		}
		w.leaders, w.unmatched = true, 0
	case acctResume:
		// The kernel looks at the space of a newly switched file at its
		// first record (kernel/acct.c, acct_on): switching files makes it
		// resume at once instead of at its next check.
		w.resumed(d.now, d.limits.check)
		d.resume = true      // pump switches files as soon as no switch is pending
		if !d.suspendArmed { // else the switch says so
			d.log.noticef("%s: %d%% free again: process accounting resumes", d.opts.top, d.limits.resume)
		}
	case acctSuspend:
		w.state = acctSuspended
		d.log.warnf("%s: less than %d%% free: the kernel suspended process accounting (it does at %d%%, resumes at %d%%: /proc/sys/kernel/acct)",
			d.opts.top, d.limits.resume, d.limits.suspend, d.limits.resume)
	case acctLose:
		w.state, w.lostAt = acctLost, d.now
		then := "never taking it back (--reclaim 0)"
		if d.opts.reclaim > 0 {
			then = "taking it back in " + d.opts.reclaim.String()
		}
		d.log.warnf("%d exits without an accounting record in %s: another program has taken process accounting; %s", w.unmatched, d.now.Sub(w.since).Round(time.Second), then)
	case acctReclaim:
		w.lostAt = d.now // the next try, if this one fails
		if err := d.src.reclaim(); err != nil {
			d.log.warnf("%v: trying again in %s", err, d.opts.reclaim)
			return
		}
		w.state, w.unmatched = acctOn, 0
		d.log.noticef("took process accounting back after %s (--reclaim)", d.opts.reclaim)
	}
}

// accounting names the state shown by --status.
func (d *daemon) accounting() string {
	if d.acct.state == acctOn && d.nl == nil {
		return "polling"
	}
	return d.acct.state.String()
}

// resumeLook is how often the daemon looks at the source file system's free
// space while the kernel may have suspended accounting (watchSuspend),
// besides at every wakeup: space that returns with no exit is seen too.
const resumeLook = 20 * time.Millisecond

// freeSpace is one look at a file system's blocks, as the kernel weighs them
// (kernel/acct.c, check_free_space): f_bavail against f_blocks.
type freeSpace struct{ avail, blocks uint64 }

// lookFree looks at the file system of fd; false when it cannot tell.
func lookFree(fd int) (freeSpace, bool) {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil || st.Blocks == 0 {
		return freeSpace{}, false
	}
	return freeSpace{uint64(st.Bavail), uint64(st.Blocks)}, true
}

// atSuspend and atResume compare as the kernel does: it suspends when
// f_bavail <= f_blocks * suspend / 100 and resumes when f_bavail >= f_blocks
// * resume / 100 (integer division, do_div).
func (f freeSpace) atSuspend(l acctLimits) bool {
	return f.avail <= f.blocks*uint64(max(l.suspend, 0))/100
}

func (f freeSpace) atResume(l acctLimits) bool {
	return f.avail >= f.blocks*uint64(max(l.resume, 0))/100
}

// suspendVerdict is what suspendDecide tells the daemon.
type suspendVerdict int

const (
	suspendKeep   suspendVerdict = iota
	suspendArm                   // at or below the suspend level: the kernel may suspend at its next check
	suspendSwitch                // armed, and at the resume level again: switch files now
)

func (v suspendVerdict) String() string {
	return [...]string{"keep", "arm", "switch"}[v]
}

// suspendDecide: once the source file system has been at or below the
// kernel's suspend level since the last switch (armed), the kernel may have
// suspended accounting, and stays suspended until its next check, up to
// 30 s later, while exits go unrecorded. A newly switched file is checked at
// its first record (acct_on sets needcheck to now) and starts suspended
// unless the space is at the resume level: so the daemon switches files as
// soon as the space is back at that level, and not before.
func suspendDecide(armed bool, f freeSpace, l acctLimits) suspendVerdict {
	switch {
	case f.atSuspend(l):
		if !armed {
			return suspendArm
		}
	case armed && f.atResume(l):
		return suspendSwitch
	}
	return suspendKeep
}

// watchSuspend takes a look at the source file system (at every tick, and
// at every wakeup while armed or while the disk guard holds; ok false: the
// look failed) and acts on suspendDecide. The switch itself is pump's
// (resume).
func (d *daemon) watchSuspend(free freeSpace, ok bool) {
	if !ok {
		return
	}
	switch suspendDecide(d.suspendArmed, free, d.limits) {
	case suspendArm:
		d.suspendArmed = true
	case suspendSwitch:
		d.resume = true // beginRotation says when it has switched
		if d.acct.state == acctSuspended {
			d.acct.resumed(d.now, d.limits.check)
		}
	}
}

// freeBelow reports whether the file system of fd has less than pct % of its
// blocks free (exactly, not with the kernel's rounding); ok is false when it
// cannot tell.
func freeBelow(fd int, pct int64) (below, ok bool) {
	f, ok := lookFree(fd)
	return ok && f.avail*100 < f.blocks*uint64(pct), ok
}

// diskFreePct is the shadow file system's free space below which records
// are skipped (as the C daemon does).
const diskFreePct = 5

// diskGuard remembers whether records are held back for want of space.
type diskGuard struct {
	low      bool
	overflow bool   // the backlog went above --backlog in this episode
	held     int64  // the backlog at the last look
	skipped  uint64 // records skipped since low
}

// diskVerdict is what diskDecide tells the guard to do.
type diskVerdict int

const (
	diskKeep   diskVerdict = iota
	diskStop               // below diskFreePct: skip records from now on
	diskResume             // space again: copy, and say how many were skipped
)

func (v diskVerdict) String() string { return [...]string{"keep", "stop", "resume"}[v] }

// diskDecide compares the guard's state with a fresh look at the free space
// (ok false: the look failed, nothing changes).
func diskDecide(wasLow, low, ok bool) diskVerdict {
	switch {
	case !ok || low == wasLow:
		return diskKeep
	case low:
		return diskStop
	}
	return diskResume
}

// full records that a write found no space: holding starts now.
func (g *diskGuard) full() {
	g.low, g.overflow, g.held, g.skipped = true, false, 0, 0
}

// checkDisk is the disk guard: it logs when skipping starts and ends.
func (d *daemon) checkDisk() {
	low, ok := freeBelow(d.sh.dir, diskFreePct)
	switch diskDecide(d.disk.low, low, ok) {
	case diskStop:
		d.disk.full()
		d.log.warnf("%s: less than %d%% of the file system free: keeping records in the source file (up to --backlog %d bytes)", shadowDir, diskFreePct, d.opts.backlog)
	case diskResume:
		d.disk.low = false
		d.log.noticef("%s: space available again: copying the backlog, %d records skipped", shadowDir, d.disk.skipped)
	}
}
