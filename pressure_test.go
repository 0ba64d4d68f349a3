//go:build faults || bench

package main

// What the fault suite and the benchmarks share: small file systems filled
// on purpose, the kernel's accounting thresholds, exits until a condition,
// and counting what a client found.

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// exitsUntil runs a few exits every 100 ms until cond holds.
func exitsUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		storm(t, 3)
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// smallFS mounts a tmpfs of the given size on a new top directory.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	top := newTop(t)
	if err := unix.Mount("tmpfs", top, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(top, unix.MNT_DETACH) })
	return top
}

// fill leaves about freePermille ‰ of the file system free, with one file.
func fill(t *testing.T, top string, freePermille uint64) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(top, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(top, "filler")
	want := st.Blocks * freePermille / 1000
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st.Bavail > want {
		f.Write(make([]byte, (st.Bavail-want)*uint64(st.Bsize))) // up to ENOSPC
	}
	return filler
}

// acctParams sets /proc/sys/kernel/acct for the test (the kernel checks the
// free space every 30 s by default) and restores it.
func acctParams(t *testing.T, v string) {
	if err := sysctl(t, "kernel/acct", v); err != nil {
		t.Fatal(err)
	}
}

// found counts the storm's records the client read; an error when one was
// read twice or out of order (the others are lost, not misplaced).
func (c *client) found(s stormRun) (int, error) {
	next, n := 0, 0
	for i, p := range c.pids {
		if c.ppids[i] != s.parent {
			continue
		}
		for next < len(s.pids) && s.pids[next] != p {
			next++
		}
		if next == len(s.pids) {
			return n, fmt.Errorf("record of pid %d read twice or out of order", p)
		}
		next++
		n++
	}
	return n, nil
}

// suspendThenResume fills top's file system until the kernel suspends
// accounting and suspended says so, then has the kernel check every 30 s
// (the default) and lets one check pass, frees the space and waits until c
// reads a record of a process that exited after that. It returns how long
// each took. The daemon must have switched accounting on while the kernel
// checked every second (acctParams "4 2 1"): the kernel sets the time of a
// file's next check at each check.
func suspendThenResume(t *testing.T, top string, c *client, suspended func() bool) (suspend, resume time.Duration) {
	filler := fill(t, top, 0)
	suspend = exitsUntil(t, 15*time.Second, "accounting suspended", suspended)
	acctParams(t, "4 2 30")
	time.Sleep(1200 * time.Millisecond)
	storm(t, 3) // the kernel checks (its last 1 s interval has passed): the next check is 30 s away
	os.Remove(filler)
	freed := time.Now()
	var runs []stormRun
	exitsUntil(t, 40*time.Second, "a record written after space returned", func() bool {
		runs = append(runs, storm(t, 1))
		c.poll()
		for _, r := range runs {
			if n, _ := c.found(r); n > 0 {
				return true
			}
		}
		return false
	})
	return suspend, time.Since(freed)
}
