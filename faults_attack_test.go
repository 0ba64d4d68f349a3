//go:build faults

package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of the second security round, each as uid 65534 (any local user)
// where it can be: none stops the daemon, makes it refuse to start, starts
// a second one, lets the shadow files grow without bound, robs a client, or
// fakes its status.

// attacker starts attackMain as uid 65534 (files: descriptors 3 on) and
// returns once the attack is in place; it ends at cleanup, or by stop.
func attacker(t *testing.T, how string, files ...*os.File) (pid int, stop func()) {
	t.Helper()
	cmd := nobody(t, attackEnv+"="+how)
	cmd.ExtraFiles = files
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { in.Close(); cmd.Wait() }
	t.Cleanup(stop)
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		stop()
		t.Fatalf("attack %s as uid 65534: %q: %s", how, line, stderr.String())
	}
	return cmd.Process.Pid, stop
}

// 1. Any user pushes the public lock back to 32767 whenever the daemon has
// taken it (the set is mode 0666), so that its release fails with ERANGE;
// with the count set to zero, every delivery had the daemon take the lock
// (the client's read lock keeps the files). The daemon says so once and
// goes on: the client reads every record.
func TestFaultLockPushedHigh(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	// A collection every 50 ms takes the lock twenty times a second too.
	cmd, log := startForeground(t, bin, top, "--pidfile", "", "--records", "30", "--gc-interval", "50ms")
	c := attached(t, top)
	forgeAsNobody(t, semClients, 1)
	_, stop := attacker(t, "lock-high")
	during, stopStorm := stoppableStorm(t, 1<<20) // deliveries while the attack runs
	// The attack wins once the attacker runs while the daemon holds the
	// lock: how soon depends on the scheduler alone.
	waitFor(t, time.Minute, "the daemon to see its release fail", func() bool {
		return strings.Contains(log.String(), "tampered with by a local user; going on without the lock") || exited(cmd)
	})
	stop()
	stopStorm()
	if id, err := semget(publicKey, 0, 0); err == nil {
		if v, _ := semctl(id, semLock, getVal, nil); v > 1 {
			semop(id, []sembuf{{semLock, int16(1 - v), unix.IPC_NOWAIT}}) // as a client would find it
		}
	}
	if exited(cmd) {
		t.Fatalf("the daemon exited:\n%s", log)
	}
	s := during(t)
	follow(t, c, s)
	follow(t, c, storm(t, 100))
	if exited(cmd) {
		t.Fatalf("the daemon exited:\n%s", log)
	}
	if n := strings.Count(log.String(), "going on without the lock"); n != 1 {
		t.Errorf("%d lines about the failed release, want 1:\n%s", n, log)
	}
	figure(t, "public lock pushed to 32767 by uid 65534, count set to 0: the daemon went on (1 log line); client read %d of %d records during the attack, 100 of 100 after", len(s.pids), len(s.pids))
}

// exited reports whether cmd has exited, leaving it to be reaped.
func exited(cmd *exec.Cmd) bool {
	var si unix.Siginfo
	err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err != nil || si.Signo != 0
}

// 2 and 3. Any user creates the private key first (mode 0666), with a
// value of 1 (every start would say "already running") or 0 (and takes the
// count down later, so that --restart would start a second daemon). The
// start replaces the set with its own (root's, 0600): the user can no
// longer touch it, and --restart takes over from the one daemon.
func TestFaultPrivateKeyTaken(t *testing.T) {
	bin := integration(t)
	for _, value := range []int{1, 0} {
		t.Run(fmt.Sprintf("value %d", value), func(t *testing.T) {
			if id, err := semget(privateKey, 0, 0); err == nil {
				semctl(id, 0, unix.IPC_RMID, nil) // as root may: no daemon runs (integration)
			}
			asNobody(t, fmt.Sprintf("%s=1:666:%d:%d", semgetEnv, privateKey, value))
			top := newTop(t)
			d := startDaemon(t, bin, top, "--records", "30")
			id, _ := semget(privateKey, 0, 0)
			if set, err := readIPCSet(id); err != nil || privateVerdict(set) != "" {
				t.Fatalf("private set after the start: %+v, %v; want root's, mode 0600", set, err)
			}
			out, err := nobody(t, fmt.Sprintf("%s=0:-1:%d", semopEnv, privateKey)).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "permission denied") {
				t.Errorf("uid 65534 took the count down: %v, %s", err, out)
			}
			c := attached(t, top)
			next := startDaemon(t, bin, top, "--restart", "--records", "30")
			// The old daemon's count is undone as it exits, a moment before
			// its pidfd says so.
			waitFor(t, 5*time.Second, fmt.Sprintf("pid %d to exit (a second daemon runs, pid %d)", d.pid, next.pid), d.exited)
			follow(t, c, storm(t, 50))
			c.detach()
			next.stop(t, unix.SIGTERM)
		})
	}
}

// 4. Any user read-locks the oldest shadow file (they are mode 0644) and
// registers once: beyond --shadow-max, collection removes read-locked
// files too, naming the lock holder, and the client reading on loses
// nothing.
func TestFaultReadLockHeld(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	const records, limitFiles = 30, 4
	limit := limitFiles * records * 64 // acct_v3 records
	_, log := startForeground(t, bin, top, "--pidfile", "", "--records", fmt.Sprint(records),
		"--gc-interval", "1s", "--shadow-max", fmt.Sprint(limit))
	c := attached(t, top)
	oldest, err := os.Open(c.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer oldest.Close()
	holder, _ := attacker(t, "hold", oldest)
	s := storm(t, 20*records) // twenty files' worth
	follow(t, c, s)
	most := len(shadowFiles(t, top))
	// Within two collections (one may have begun before the storm ended),
	// the files left take at most the limit, plus the one being written.
	waitFor(t, 2*time.Second+tick, "the read-locked files to be collected", func() bool {
		return len(shadowFiles(t, top)) <= limitFiles+1
	})
	if st, err := oldest.Stat(); err != nil || st.Sys().(*syscall.Stat_t).Nlink != 0 {
		t.Errorf("the read-locked file: %v; want it removed", err)
	}
	if !strings.Contains(log.String(), fmt.Sprintf("read-locked by a client (pid %d among them)", holder)) {
		t.Errorf("no line naming the lock holder (pid %d):\n%s", holder, log)
	}
	follow(t, c, storm(t, 50))
	figure(t, "oldest file read-locked by uid 65534: %d shadow files at most, %d after collection (limit %d bytes); client read every record", most, len(shadowFiles(t, top)), limit)
}

// 5. Any user sets the client count to 0 (sem 0 to 100) while a client
// read-locks its file, then the daemon is stopped: the stop removes
// nothing the client reads.
func TestFaultStopSparesLockedFiles(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	d := startDaemon(t, bin, top, "--records", "30")
	c := attached(t, top)
	follow(t, c, storm(t, 50))
	asNobody(t, semopEnv+"=0:1")
	t.Cleanup(func() { removePublicSet(t) })
	if n, _ := publicClients(); n != 0 {
		t.Fatalf("%d clients counted after the +1, want 0", n)
	}
	d.stop(t, unix.SIGTERM)
	if st, err := c.f.Stat(); err != nil || st.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("the client's file after the stop: %v; want it kept", err)
	}
	if _, err := os.Stat(filepath.Join(top, shadowDir, currentName)); err != nil {
		t.Errorf("current after the stop: %v; want it kept", err)
	}
}

// 6. After a SIGKILL, the status file names a pid the kernel may give to
// any process: -s says "running" only for the daemon that wrote it.
func TestFaultStatusPidReused(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	d := startDaemon(t, bin, top, "--records", "30")
	if st := statusOf(t, bin, top); !strings.Contains(st, fmt.Sprintf("running (pid %d)", d.pid)) {
		t.Fatalf("-s of a running daemon:\n%s", st)
	}
	d.stop(t, unix.SIGKILL)
	acct(nil) // accounting stays on after a SIGKILL
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	// The status file as if the pid had been reused by the sleep.
	name := filepath.Join(top, shadowDir, statusName)
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(b), fmt.Sprintf("%s%d\n", pidKey, d.pid), fmt.Sprintf("%s%d\n", pidKey, other.Process.Pid), 1)
	if err := os.WriteFile(name, []byte(forged), 0o644); err != nil || forged == string(b) {
		t.Fatalf("status file: %v; pid line not found in:\n%s", err, b)
	}
	out, err := exec.Command(bin, "-s", top).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not running") {
		t.Errorf("-s with the pid reused: %v:\n%s", err, out)
	}
}
