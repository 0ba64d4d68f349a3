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

// recordsArrive tells the watch that records arrived, and says so when it
// had thought accounting lost or suspended.
func (d *daemon) recordsArrive() {
	if d.acct.recordsArrived() {
		d.log.noticef("accounting records arrive again")
	}
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

// discountLeaders forgets the exits without a record, all of leaders whose
// threads live on; it says whether that is the first time (worth a line).
func (w *acctWatch) discountLeaders() (first bool) {
	first = !w.leaders
	w.leaders, w.unmatched = true, 0
	return first
}

// suspended records that the kernel suspended accounting.
func (w *acctWatch) suspended() { w.state = acctSuspended }

// lose records that another program took accounting at now.
func (w *acctWatch) lose(now time.Time) { w.state, w.lostAt = acctLost, now }

// reclaiming records a try to take accounting back at now; reclaimed, that
// it succeeded.
func (w *acctWatch) reclaiming(now time.Time) { w.lostAt = now }
func (w *acctWatch) reclaimed()               { w.state, w.unmatched = acctOn, 0 }

// watchAccounting gathers the values, asks acctDecide, and acts.
// free is a look at the top directory's file system (ok false: it failed).
func (d *daemon) watchAccounting(free freeSpace, ok bool) {
	below := ok && !free.atResume(d.src.limits)
	w := &d.acct
	ended := true
	if w.starved(d.turn.now) && !d.wait.polling() {
		ended = d.wait.nl.groupEnded(w.unmatched)
	}
	switch acctDecide(*w, d.turn.now, below, ended, d.opts.reclaim) {
	case acctLeaders:
		n := w.unmatched
		if w.discountLeaders() {
			d.log.infof("%d exit events without a record, all of thread-group leaders whose threads live on: no sign that accounting is lost", n)
		}
	case acctResume:
		// The kernel looks at the space of a newly switched file at its
		// first record (kernel/acct.c, acct_on): switching files makes it
		// resume at once instead of at its next check.
		w.resumed(d.turn.now, d.src.limits.check)
		d.rot.resumeNow() // pump switches files as soon as no switch is pending
		if !d.rot.armed { // else the switch says so
			d.log.noticef("%s: %d%% free again: process accounting resumes", d.opts.top, d.src.limits.resume)
		}
	case acctSuspend:
		w.suspended()
		d.log.warnf("%s: less than %d%% free: the kernel suspended process accounting (it does at %d%%, resumes at %d%%: /proc/sys/kernel/acct)",
			d.opts.top, d.src.limits.resume, d.src.limits.suspend, d.src.limits.resume)
	case acctLose:
		w.lose(d.turn.now)
		then := "never taking it back (--reclaim 0)"
		if d.opts.reclaim > 0 {
			then = "taking it back in " + d.opts.reclaim.String()
		}
		d.log.warnf("%d exits without an accounting record in %s: another program has taken process accounting; %s", w.unmatched, d.turn.now.Sub(w.since).Round(time.Second), then)
	case acctReclaim:
		w.reclaiming(d.turn.now) // the next try, if this one fails
		if err := d.src.reclaim(); err != nil {
			d.log.warnf("%v: trying again in %s", err, d.opts.reclaim)
			return
		}
		w.reclaimed()
		d.log.noticef("took process accounting back after %s (--reclaim)", d.opts.reclaim)
	}
}

// accounting names the state shown by --status.
func (d *daemon) accounting() string {
	if d.acct.state == acctOn && d.wait.polling() {
		return "polling"
	}
	return d.acct.state.String()
}
