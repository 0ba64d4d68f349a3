// The kernel's suspension of process accounting: below a share of free
// space on the source file system the kernel stops writing records, and
// resumes above another, looking at most every check seconds or at a newly
// switched file's first record. The daemon looks at the same space with
// the kernel's arithmetic and switches files the moment the kernel would
// resume, so that no exit goes unrecorded longer than it must.
// Speaks statfs(2), kernel/acct.c (check_free_space, acct_on) and the
// "acct" entry of Documentation/admin-guide/sysctl/kernel.rst.

package main

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// acctLimits are the kernel's thresholds from /proc/sys/kernel/acct: it
// suspends accounting at or below suspend % free space, resumes at resume %,
// and looks again every check.
type acctLimits struct {
	resume, suspend int64
	check           time.Duration
}

func readAcctLimits() acctLimits {
	l := acctLimits{resume: 4, suspend: 2, check: 30 * time.Second} // the kernel's defaults
	b, err := os.ReadFile("/proc/sys/kernel/acct")
	f := strings.Fields(string(b))
	if err != nil || len(f) != 3 {
		return l
	}
	r, err1 := strconv.ParseInt(f[0], 10, 64)
	s, err2 := strconv.ParseInt(f[1], 10, 64)
	c, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 == nil && err2 == nil && err3 == nil {
		l = acctLimits{resume: r, suspend: s, check: time.Duration(c) * time.Second}
	}
	return l
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

// lookFree looks at the source files' file system (the top directory's).
func (s *source) lookFree() (freeSpace, bool) { return lookFree(s.top) }

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
	switch suspendDecide(d.rot.armed, free, d.src.limits) {
	case suspendArm:
		d.rot.arm()
	case suspendSwitch:
		d.rot.resumeNow() // beginRotation says when it has switched
		if d.acct.state == acctSuspended {
			d.acct.resumed(d.turn.now, d.src.limits.check)
		}
	}
}
