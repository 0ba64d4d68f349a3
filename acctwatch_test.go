package main

import (
	"testing"
	"time"
)

func TestAcctDecide(t *testing.T) {
	now := time.Unix(1e9, 0)
	starved := acctWatch{unmatched: 3, since: now.Add(-lostAfter)}
	with := func(w acctWatch, f func(*acctWatch)) acctWatch { f(&w); return w }
	for _, tt := range []struct {
		name    string
		w       acctWatch
		below   bool
		reclaim time.Duration
		want    acctVerdict
		leaders bool // no recent exit without a record ended its thread group
	}{
		{"records arrive", acctWatch{}, false, time.Hour, acctKeep, false},
		{"2 exits without a record", with(starved, func(w *acctWatch) { w.unmatched = 2 }), false, time.Hour, acctKeep, false},
		{"3 exits, but within lostAfter", with(starved, func(w *acctWatch) { w.since = now.Add(-time.Second) }), false, time.Hour, acctKeep, false},
		{"starved in the grace after a resume", with(starved, func(w *acctWatch) { w.grace = now.Add(time.Second) }), false, time.Hour, acctKeep, false},
		{"starved with room: lost", starved, false, time.Hour, acctLose, false},
		{"starved, file system low: suspended", starved, true, time.Hour, acctSuspend, false},
		{"lost, low later: suspended", with(starved, func(w *acctWatch) { w.state = acctLost }), true, time.Hour, acctSuspend, false},
		{"suspended, still low", with(starved, func(w *acctWatch) { w.state = acctSuspended }), true, time.Hour, acctKeep, false},
		{"suspended, room again: resume", with(starved, func(w *acctWatch) { w.state = acctSuspended }), false, time.Hour, acctResume, false},
		{"suspended is never reclaimed", with(starved, func(w *acctWatch) { w.state, w.lostAt = acctSuspended, now.Add(-2*time.Hour) }), true, time.Hour, acctKeep, false},
		{"lost, before --reclaim", with(starved, func(w *acctWatch) { w.state, w.lostAt = acctLost, now.Add(-time.Minute) }), false, time.Hour, acctKeep, false},
		{"lost for --reclaim: reclaim", with(starved, func(w *acctWatch) { w.state, w.lostAt = acctLost, now.Add(-time.Hour) }), false, time.Hour, acctReclaim, false},
		{"lost, --reclaim 0: never", with(starved, func(w *acctWatch) { w.state, w.lostAt = acctLost, now.Add(-48*time.Hour) }), false, 0, acctKeep, false},
		{"starved by leaders' exits: not lost", starved, false, time.Hour, acctLeaders, true},
		{"starved by leaders' exits, low: not suspended", starved, true, time.Hour, acctLeaders, true},
		{"lost, then leaders' exits: not reclaimed", with(starved, func(w *acctWatch) { w.state, w.lostAt = acctLost, now.Add(-time.Hour) }), false, time.Hour, acctLeaders, true},
		{"suspended, room again, leaders' exits: resume", with(starved, func(w *acctWatch) { w.state = acctSuspended }), false, time.Hour, acctResume, true},
		{"2 leaders' exits: nothing to check", with(starved, func(w *acctWatch) { w.unmatched = 2 }), false, time.Hour, acctKeep, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := acctDecide(tt.w, now, tt.below, !tt.leaders, tt.reclaim); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAcctWatch: exits start the clock once; a record resets it and tells
// whether accounting had been thought lost or suspended.
func TestAcctWatch(t *testing.T) {
	var w acctWatch
	t0 := time.Unix(1e9, 0)
	w.exits(t0, 0)
	w.exits(t0.Add(time.Second), 2)
	w.exits(t0.Add(2*time.Second), 1)
	if w.unmatched != 3 || !w.since.Equal(t0.Add(time.Second)) {
		t.Errorf("after exits: %d unmatched since %v, want 3 since %v", w.unmatched, w.since, t0.Add(time.Second))
	}
	if w.recordsArrived() || w.unmatched != 0 {
		t.Errorf("a record while on: reported back, or %d unmatched left", w.unmatched)
	}
	w.state = acctLost
	if !w.recordsArrived() || w.state != acctOn {
		t.Errorf("a record while lost: not reported, or state %d", w.state)
	}
}

func TestDiskDecide(t *testing.T) {
	for _, tt := range []struct {
		name            string
		wasLow, low, ok bool
		want            diskVerdict
	}{
		{"room, still room", false, false, true, diskKeep},
		{"room, now low", false, true, true, diskStop},
		{"low, still low", true, true, true, diskKeep},
		{"low, room again", true, false, true, diskResume},
		{"statfs failed while low", true, false, false, diskKeep},
		{"statfs failed with room", false, true, false, diskKeep},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := diskDecide(tt.wasLow, tt.low, tt.ok); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSuspendDecide: the kernel's arithmetic (1,000 blocks, default levels:
// suspend at <= 20 blocks free, resume at >= 40; 1,030 blocks: 20 and 41).
func TestSuspendDecide(t *testing.T) {
	l := acctLimits{resume: 4, suspend: 2, check: 30 * time.Second}
	for _, tt := range []struct {
		name          string
		armed         bool
		avail, blocks uint64
		want          suspendVerdict
	}{
		{"room, not armed", false, 500, 1000, suspendKeep},
		{"at the suspend level: arm", false, 20, 1000, suspendArm},
		{"just above it: nothing", false, 21, 1000, suspendKeep},
		{"armed, still low", true, 0, 1000, suspendKeep},
		{"armed, between the levels: the new file would start suspended", true, 39, 1000, suspendKeep},
		{"armed, at the resume level: switch", true, 40, 1000, suspendSwitch},
		{"armed, resume level rounded down as the kernel does", true, 41, 1030, suspendSwitch},
		{"armed, one block short of it", true, 40, 1030, suspendKeep},
		{"suspend level rounded down", false, 20, 1030, suspendArm},
		{"empty file system", false, 0, 1000, suspendArm},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := suspendDecide(tt.armed, freeSpace{tt.avail, tt.blocks}, l); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
