//go:build faults

package main

// The fault suite (make faults): each TestFault… is one way the C atopacctd
// once broke for real users, run against the built daemon, the real kernel
// and real clients. Each logs one "FIGURE" line; make faults prints them.
// Like the integration tests they run one at a time and end with accounting
// off and no daemon left (integration() and the daemons' cleanups).

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

var wantTop = []string{shadowDir, sourceName, sourceNext}

// forkedBefore counts the children forked before the monotonic time ns: no
// other child can have exited before then.
func (s stormRun) forkedBefore(ns int64) int {
	n := 0
	for n < len(s.forked) && s.forked[n] < ns {
		n++
	}
	return n
}

// len is how much has arrived so far.
func (s *syncBuffer) len() int {
	s.Lock()
	defer s.Unlock()
	return s.b.Len()
}

// arrived returns when the first text holding what after byte from arrived
// whole (monotonic ns; the daemon wrote it before), and false while it has
// not.
func (s *syncBuffer) arrived(what string, from int) (int64, bool) {
	s.Lock()
	defer s.Unlock()
	i := strings.Index(s.b.String()[from:], what)
	if i < 0 {
		return 0, false
	}
	i += from
	for k, end := range s.ends {
		if end >= i+len(what) {
			return s.when[k], true
		}
	}
	return 0, false
}

// missedHead counts the storm's records the client missed, and checks that
// they are its first ones: those it read are the newest, once each, in order.
func (c *client) missedHead(t *testing.T, s stormRun) int {
	t.Helper()
	found, err := c.found(s)
	if err != nil {
		t.Fatal(err)
	}
	missed := len(s.pids) - found
	if err := c.check(stormRun{parent: s.parent, pids: s.pids[missed:]}); err != nil {
		t.Errorf("the records read are not the storm's newest %d: %v", found, err)
	}
	return missed
}

// readChild reports whether the client read the record of process pid,
// child of parent (pids are reused across storms: the pair tells).
func (c *client) readChild(pid, parent uint32) bool {
	for i, p := range c.pids {
		if p == pid && c.ppids[i] == parent {
			return true
		}
	}
	return false
}

// settle polls until no new record has arrived for 300 ms (10 s at most).
func (c *client) settle() {
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		n := len(c.pids)
		time.Sleep(300 * time.Millisecond)
		if c.poll(); len(c.pids) == n {
			return
		}
	}
}

func size(name string) int64 {
	st, err := os.Stat(name)
	if err != nil {
		return -1
	}
	return st.Size()
}

func statusSays(t *testing.T, bin, top, line string) func() bool {
	return func() bool { return strings.Contains(statusOf(t, bin, top), line+"\n") }
}

// skippedExplains: every record the client missed is counted as skipped,
// and the skipped ones are those missed, give or take what other processes
// on the machine exited meanwhile (the storms' own processes, a busy
// desktop's background: up to 5 %).
// countExits counts whole-process exit events through a proc connector
// subscription of the test's own, drained all along into a large buffer;
// the function it returns stops and returns the count. On a busy machine
// other processes' records go where the storm's go (skipped, here), and
// this is how many there can be; an overrun fails the test.
func countExits(t *testing.T) func() int {
	t.Helper()
	c, err := openProcConnector()
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	quit, count := make(chan struct{}), make(chan int)
	go func() {
		defer c.close()
		n, lost := 0, false
		for {
			fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
			unix.Poll(fds, 20)
			k, overrun, _ := c.drain()
			n, lost = n+k, lost || overrun
			select {
			case <-quit:
				if lost {
					n = -1
				}
				count <- n
				return
			default:
			}
		}
	}()
	return func() int {
		close(quit)
		n := <-count
		if n < 0 {
			t.Fatal("the test's own proc connector subscription overran: exits uncounted")
		}
		return n
	}
}

func skippedExplains(missed, skipped int) bool {
	return missed <= skipped && skipped <= missed+3+skipped/20
}
