//go:build faults

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Faults: accounting taken by another program, leaders exiting before their threads, the kernel's suspension, no proc connector.

// takeAccounting switches process accounting to a file of another program.
func takeAccounting(t *testing.T) string {
	t.Helper()
	other := filepath.Join(t.TempDir(), "pacct")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := testCommand(os.Args[0], "-test.run=^$")
	cmd.Env = append(cmd.Env, acctEnv+"="+other)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("accton: %v: %s", err, out)
	}
	return other
}

// 3. Accounting taken by another program: reported as lost once, taken back
// after --reclaim, and with --reclaim 0 left to the other program, even at
// shutdown.
func TestFaultAccountingTaken(t *testing.T) {
	bin := integration(t)
	t.Run("reclaim", func(t *testing.T) {
		top := newTop(t)
		_, log := startForeground(t, bin, top, "--pidfile", "", "--reclaim", "5s")
		c := attached(t, top)
		other := takeAccounting(t)
		taken := time.Now()
		detect := exitsUntil(t, 10*time.Second, "accounting: lost", statusSays(t, bin, top, "accounting: lost"))
		if size(other) == 0 {
			t.Error("the other program's file got no records")
		}
		exitsUntil(t, 15*time.Second, "the daemon to take accounting back", func() bool {
			return strings.Contains(log.String(), "took process accounting back")
		})
		reclaim := time.Since(taken)
		s := storm(t, 100)
		follow(t, c, s)
		if n := strings.Count(log.String(), "another program has taken process accounting"); n != 1 {
			t.Errorf("logged the loss %d times, want once:\n%s", n, log)
		}
		figure(t, "lost reported %s after the other acct(2), logged once; taken back %s after it (--reclaim 5s); 0 of %d records lost after",
			detect.Round(100*time.Millisecond), reclaim.Round(100*time.Millisecond), len(s.pids))
	})
	t.Run("never", func(t *testing.T) {
		top := newTop(t)
		cmd, log := startForeground(t, bin, top, "--pidfile", "", "--reclaim", "0")
		other := takeAccounting(t)
		exitsUntil(t, 10*time.Second, "accounting: lost", statusSays(t, bin, top, "accounting: lost"))
		time.Sleep(2 * time.Second)
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
		before := size(other)
		storm(t, 10)
		if strings.Contains(log.String(), "took process accounting back") {
			t.Errorf("took accounting back with --reclaim 0:\n%s", log)
		}
		// Switched off at the stop all the same: the belief that another
		// program took accounting can be forged.
		if size(other) != before {
			t.Errorf("accounting still on after the daemon stopped (%d -> %d bytes)", before, size(other))
		}
		figure(t, "--reclaim 0: never taken back; after SIGTERM accounting is off (the other file stays at %d bytes)", before)
	})
}

// TestFaultLeaderExits: any user's processes whose main thread exits while
// another thread lives on (here 120 of them over 6 s, by uid 65534) bring
// exit events and no record for a while; that is no sign that another
// program took accounting. The daemon never says so, and copies on; their
// records come when their groups end. Any record proves accounting works,
// so the daemon judges only a stretch with none: when the client saw one
// long enough for the watch to starve (lostAfter, then a tick, with room
// for the latencies of both ends), the daemon must have said that these
// were leaders' exits; on a busy machine, whose own exits bring records
// all along, there is nothing to judge.
func TestFaultLeaderExits(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	_, log := startForeground(t, bin, top, "--pidfile", "", "--reclaim", "5s")
	c := attached(t, top)
	follow(t, c, storm(t, 20))
	const threads = 8 * time.Second // how long each leader's other thread lives
	var gap time.Duration           // the longest stretch in which the client read no record, since the leaders' start
	spawner := nobody(t, leadersEnv+"=120:50ms:"+threads.String())
	done, polled := make(chan struct{}), make(chan struct{})
	stop := sync.OnceFunc(func() { close(done); <-polled })
	defer stop() // the client is the poller's until then
	go func() {
		defer close(polled)
		last, n := time.Now(), len(c.pids)
		for {
			select {
			case <-done:
				gap = max(gap, time.Since(last))
				return
			case <-time.After(20 * time.Millisecond):
			}
			if c.poll(); len(c.pids) > n {
				gap, last, n = max(gap, time.Since(last)), time.Now(), len(c.pids)
			}
		}
	}()
	if out, err := spawner.CombinedOutput(); err != nil { // returns after the stream
		t.Fatalf("leaders as uid 65534: %v: %s", err, out)
	}
	time.Sleep(threads) // the last leader's group ends
	stop()
	said := strings.Contains(log.String(), "thread-group leaders")
	if strings.Contains(log.String(), "another program has taken") {
		t.Errorf("after 120 leaders' exits:\n%s", log)
	}
	if due := 3 * (lostAfter + tick) / 2; gap >= due && !said {
		t.Errorf("no record for %s, and no word on the leaders' exits (due after %s):\n%s", gap.Round(time.Millisecond), due, log)
	}
	s := storm(t, 100)
	follow(t, c, s)
	if st := statusOf(t, bin, top); !strings.Contains(st, "accounting: on") {
		t.Errorf("status:\n%s", st)
	}
	figure(t, "120 leaders' exits by uid 65534 over 6 s (threads living %s): longest stretch without a record %s, leaders' line said: %v; accounting not taken for lost, 0 of %d records lost after",
		threads, gap.Round(100*time.Millisecond), said, len(s.pids))
}

// 4. The kernel suspended accounting (free space below its low-water mark):
// reported as suspended, not lost, never reclaimed; once there is room the
// daemon switches files, which the kernel checks at their first record, so
// accounting resumes at once instead of at the kernel's next check (30 s
// here: suspendThenResume).
func TestFaultSuspended(t *testing.T) {
	bin := integration(t)
	top := smallFS(t, "4m")
	acctParams(t, "4 2 1") // resume at 4 %, suspend at 2 %, look every second
	_, log := startForeground(t, bin, top, "--pidfile", "", "--source-max", "65536", "--records", "1000", "--reclaim", "1s")
	c := attached(t, top)
	suspend, resume := suspendThenResume(t, top, c, statusSays(t, bin, top, "accounting: suspended"))
	s := storm(t, 200)
	c.pids, c.ppids = nil, nil
	follow(t, c, s)
	for _, bad := range []string{"took process accounting back", "another program"} {
		if strings.Contains(log.String(), bad) {
			t.Errorf("log says %q while the kernel had suspended accounting:\n%s", bad, log)
		}
	}
	figure(t, "suspended reported %s after the file system filled (kernel checks every 1 s); with the kernel checking every 30 s, the first record copied %s after space returned; not reclaimed; 0 of %d lost after",
		suspend.Round(100*time.Millisecond), resume.Round(100*time.Millisecond), len(s.pids))
}

// 5. No proc connector (a new network namespace): polls, loses nothing.
func TestFaultNoProcConnector(t *testing.T) {
	bin := integration(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("no unshare(1): apt-get install util-linux")
	}
	top := newTop(t)
	d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "pid")}
	// In a new network namespace the proc connector refuses the subscription.
	d.start(t, bin, exec.Command("unshare", "-n", bin, "--pidfile", d.pidfile, "--poll", "200ms", top))
	if st := statusOf(t, bin, top); !strings.Contains(st, "accounting: polling\n") {
		t.Errorf("status in a new network namespace:\n%s", st)
	}
	c := attached(t, top)
	s := storm(t, 2000)
	follow(t, c, s)
	figure(t, "polling every 200ms; 0 of %d records lost", len(s.pids))
}
