//go:build faults

package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Faults: the shadow file system full, alone, under a storm, and in repeated episodes: records held, skipped only beyond --backlog, counted.

// 6. A nearly full shadow file system (4.5 % free: the kernel writes on,
// the guard holds): the records stay in the source file and are all copied,
// in order, once there is room; with a --backlog smaller than the storm the
// oldest are skipped, and the client misses exactly those (the storm's
// first ones), counted in -s and logged once.
func TestFaultDiskFull(t *testing.T) {
	bin := integration(t)
	for _, c := range []struct {
		name    string
		backlog int // records
	}{{"backlog holds the storm", 65536}, {"backlog smaller than the storm", 256}} {
		t.Run(c.name, func(t *testing.T) {
			top := smallFS(t, "8m")
			_, log := startForeground(t, bin, top, "--pidfile", "", "--source-max", "65536", "--records", "1000", "--backlog", strconv.Itoa(c.backlog*sizeofAcctV3))
			cl := attached(t, top)
			exits := countExits(t) // every record the daemon could skip: the storm's and others'
			filler := fill(t, top, 45)
			waitFor(t, 5*time.Second, "the guard to hold", func() bool { return strings.Contains(log.String(), "keeping records in the source file") })
			held := storm(t, 1000)
			time.Sleep(1500 * time.Millisecond) // the status is published once a second
			backlog := statusNumber(statusOf(t, bin, top), "backlog (held for want of space)")
			os.Remove(filler)
			freed := time.Now()
			waitFor(t, 5*time.Second, "copying to resume", func() bool { return strings.Contains(log.String(), "copying the backlog") })
			resume := time.Since(freed)
			cl.settle()
			skipped := statusNumber(statusOf(t, bin, top), "records skipped (disk full)")
			others := exits() - len(held.pids)
			missed := cl.missedHead(t, held)
			switch {
			case c.backlog >= len(held.pids) && (missed != 0 || skipped != 0):
				t.Errorf("%d of %d records missed, %d skipped; want none", missed, len(held.pids), skipped)
			case c.backlog < len(held.pids) && (missed == 0 || missed > skipped || skipped > missed+others):
				t.Errorf("%d of %d records missed, %d skipped, %d other processes exited meanwhile; want the skipped ones alone missed", missed, len(held.pids), skipped, others)
			}
			if n := strings.Count(log.String(), "skipping the oldest records"); n != min(skipped, 1) {
				t.Errorf("%d 'skipping' lines for %d skipped records, want %d:\n%s", n, skipped, min(skipped, 1), log)
			}
			after := storm(t, 500)
			follow(t, cl, after)
			figure(t, "--backlog %d records, 4.5 %% free, a 1000-exit storm: %d bytes held, %d skipped, %d missed by the client; copying again %s after space returned; 0 of %d lost after",
				c.backlog, backlog, skipped, missed, resume.Round(100*time.Millisecond), len(after.pids))
		})
	}
}

// 6c. The shortage users meet: a 4 MiB top directory filled to 100 KiB
// free, a 20,000-exit storm (the kernel writes what fits), the filler
// removed, then at once a 3,000-exit storm. The kernel suspends accounting
// when its periodic check (every 30 s) falls in the full time, as it did on
// slow machines: the test makes it fall there (it has the kernel check
// every second during the first storm, then every 30 s again), so the
// kernel writes nothing of the second storm until the daemon switches
// files, which it does at its first look with room (an exit, or its 20 ms
// timer). Every one of the 3,000 is read (the records held in the source
// file, then the new ones, in order) but for children forked before the
// daemon said it had switched, which may be missing at the head of the
// storm.
func TestFaultDiskFullThenStorm(t *testing.T) {
	bin := integration(t)
	top := smallFS(t, "4m")
	acctParams(t, "4 2 1") // before the start: the kernel reads it at each check, for the next one
	_, log := startForeground(t, bin, top, "--pidfile", "")
	c := attached(t, top)
	var st unix.Statfs_t
	unix.Statfs(top, &st)
	filler := fill(t, top, 100*1024/uint64(st.Bsize)*1000/st.Blocks)
	first := storm(t, 20000)
	acctParams(t, "4 2 30")
	// The kernel's check after its last 1 s interval finds the file
	// system full, and puts the next one 30 s away.
	time.Sleep(1200 * time.Millisecond)
	storm(t, 3)
	if !strings.Contains(log.String(), "the kernel suspended process accounting") {
		t.Fatalf("the kernel did not suspend accounting: the test's file system was not full enough; log:\n%s", log)
	}
	mark := log.len()
	os.Remove(filler)
	second := storm(t, 3000)
	last := second.pids[len(second.pids)-1] // written after any switch: the client has read all before it then
	readUntil(t, c, "the storm's last record", func() bool { return c.readChild(last, second.parent) })
	missed := c.missedHead(t, second)
	before := 0 // children forked before the daemon said it had switched files
	if at, ok := log.arrived("switched files so that the kernel resumes", mark); ok {
		before = second.forkedBefore(at)
	}
	if missed > before {
		t.Errorf("%d of the storm's first records missing; %d of its children were forked before the daemon said it had switched files; log:\n%s", missed, before, log)
	}
	n, err := c.found(first)
	if err != nil {
		t.Fatal(err)
	}
	figure(t, "100 KiB free: %d of the 20000-exit storm read (what the kernel could write); after the filler was removed, %d of 3000 (missing %d, children forked before the resume switch %d)", n, len(second.pids)-missed, missed, before)
}

// 6b. A pressure episode: for EPISODE (60s) storms run back to back while
// the free space swings across the guard's 5 % (4.5 % for 2 s, more for
// 1 s, never near the kernel's 2 %, so the kernel writes every
// record), with a --backlog of 256 KiB that the storms overrun. Every record
// the kernel wrote is read once, in order, or skipped: the client misses
// what the status counts as skipped and nothing else (an unrelated exit
// skipped meanwhile is the one allowed difference).
func TestFaultPressureEpisode(t *testing.T) {
	bin := integration(t)
	episode := 60 * time.Second
	if v, err := time.ParseDuration(os.Getenv("EPISODE")); err == nil {
		episode = v
	}
	top := smallFS(t, "64m")
	_, log := startForeground(t, bin, top, "--pidfile", "", "--records", "5000", "--gc-interval", "1s", "--backlog", "262144")
	c := attached(t, top)
	done := make(chan struct{})
	swung := make(chan int)
	go func() {
		n := 0
		for {
			filler := fill(t, top, 45)
			time.Sleep(2 * time.Second)
			os.Remove(filler)
			n++
			select {
			case <-done:
				swung <- n
				return
			case <-time.After(time.Second):
			}
		}
	}()
	var runs []stormRun
	for end := time.Now().Add(episode); time.Now().Before(end); {
		runs = append(runs, storm(t, 2000))
		c.poll()
	}
	close(done)
	swings := <-swung
	waitFor(t, 10*time.Second, "the backlog to be copied", func() bool {
		exec.Command("/bin/true").Run() // a wakeup
		return strings.Contains(statusOf(t, bin, top), "backlog (held for want of space): 0 bytes")
	})
	c.settle()
	exited, missed := 0, 0
	for _, r := range runs {
		found, err := c.found(r)
		if err != nil {
			t.Fatal(err)
		}
		exited += len(r.pids) + 1 // and the storm's own process
		missed += len(r.pids) - found
		if !c.readChild(r.parent, uint32(os.Getpid())) {
			missed++
		}
	}
	skipped := statusNumber(statusOf(t, bin, top), "records skipped (disk full)")
	if !skippedExplains(missed, skipped) {
		t.Errorf("the client missed %d of %d records, the status counts %d skipped", missed, exited, skipped)
	}
	if strings.Contains(log.String(), "suspended") {
		t.Errorf("the kernel suspended accounting: the test's free space went too low\n%s", log)
	}
	figure(t, "%s of storms, %d swings across 5 %% free, --backlog 256 KiB: %d processes exited, the client read %d, missed %d, the status counts %d skipped; %d 'keeping' and %d 'skipping' log lines",
		episode, swings, exited, exited-missed, missed, skipped, strings.Count(log.String(), "keeping records"), strings.Count(log.String(), "skipping the oldest"))
}
