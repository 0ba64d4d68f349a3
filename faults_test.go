//go:build faults

package main

// The fault suite (make faults): each TestFault… is one way the C atopacctd
// once broke for real users, run against the built daemon, the real kernel
// and real clients. Each logs one "FIGURE" line; make faults prints them.
// Like the integration tests they run one at a time and end with accounting
// off and no daemon left (integration() and the daemons' cleanups).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// 1. kill -9 mid-storm, then start again.
func TestFaultKill9Restart(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	d := startDaemon(t, bin, top, "--records", "1000", "--gc-interval", "1s")
	c := attached(t, top)
	wait := startStorm(t, 20000)
	waitRecords(t, c, 2000)
	d.stop(t, unix.SIGKILL) // accounting stays on into the old source file
	killed := time.Now()
	startDaemon(t, bin, top, "--records", "1000", "--gc-interval", "1s")
	restart := time.Since(killed)
	during := wait(t)
	// The new daemon adopts the directory and copies what the kernel wrote
	// into the old source file after the last copy: the client reads on in
	// its file and reads every record of the storm once, in order.
	follow(t, c, during)
	if c.attaches != 1 {
		t.Errorf("client attached %d times, want once", c.attaches)
	}
	after := storm(t, 5000)
	follow(t, c, after)
	time.Sleep(1500 * time.Millisecond) // one GC interval
	if names := topNames(t, top); !slices.Equal(names, wantTop) {
		t.Errorf("top directory after one GC interval holds %v, want %v", names, wantTop)
	}
	figure(t, "restarted (exit 0, ready) %s after SIGKILL mid-storm; 0 of %d records lost or duplicated, 0 of %d after; client attached %d times; top after 1 GC interval: %v",
		restart.Round(time.Millisecond), len(during.pids), len(after.pids), c.attaches, wantTop)
}

// 1b. kill -9 at 20 random instants of a storm, each followed by a start:
// every record once, in order, the client attached once.
func TestFaultKill9Repeated(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	args := []string{"--records", "500", "--source-max", "16384"} // many rotations of both kinds
	d := startDaemon(t, bin, top, args...)
	c := attached(t, top)
	wait := startStorm(t, 20000)
	var gaps []time.Duration
	for i := 0; i < 20; i++ {
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		c.poll()
		d.stop(t, unix.SIGKILL)
		killed := time.Now()
		d = startDaemon(t, bin, top, args...)
		gaps = append(gaps, time.Since(killed))
	}
	r := wait(t)
	follow(t, c, r)
	if c.attaches != 1 {
		t.Errorf("client attached %d times, want once", c.attaches)
	}
	slices.Sort(gaps)
	figure(t, "20 kills at random instants of a %d-exit storm, each followed by a start (median %s, longest %s): 0 lost, 0 duplicated, client attached %d times",
		len(r.pids), gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond), c.attaches)
}

// 1e. kill -9 before the daemon copied the first record a new client wants
// (frozen by SIGSTOP, so the instant is certain): the shadow files hold no
// record to find in the old source file, and the next start copies all of
// it. TestFaultKill9Repeated met this instant by chance (its first kill,
// on a slow machine) and lost the storm's head.
func TestFaultKill9BeforeFirstCopy(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	d := startDaemon(t, bin, top, "--records", "500")
	c := attached(t, top)
	d.signal(t, unix.SIGSTOP)
	s := storm(t, 200) // the kernel writes into the frozen daemon's source file
	d.stop(t, unix.SIGKILL)
	startDaemon(t, bin, top, "--records", "500")
	follow(t, c, s)
	if c.attaches != 1 {
		t.Errorf("client attached %d times, want once", c.attaches)
	}
	figure(t, "killed before its first copy: %d of %d records read by the client after the next start", c.children(s.parent), len(s.pids))
}

// 1c. kill -9 at each named instant of the daemon's file operations:
// strace(1) injects SIGKILL as the daemon enters the system call that
// would take the step named (the call does not run). With a client attached
// the next start adopts what the killed daemon left and the client reads
// every record once, in order, attached once. Inside the client-less reset
// no client reads: the next start adopts the state or moves it aside,
// saying which, and serves a new client.
func TestFaultKill9Instants(t *testing.T) {
	bin := integration(t)
	strace := tool(t, "STRACE", "strace", "apt-get install strace")
	for _, in := range []struct {
		name          string
		path, syscall string // strace -P path -e inject=syscall:signal=KILL
		byFD          bool   // the call names the file by a descriptor: path is under top
		reset         bool   // in the client-less reset, not in a storm
	}{
		{"source rotation: old file drained, not emptied", sourceName, "ftruncate", true, false},
		{"source rotation: old file emptied, names not exchanged", sourceNext, "renameat2", false, false},
		{"new shadow file created, current not replaced", currentTmp, "openat", false, false},
		{"current.tmp written, not renamed", currentTmp, "renameat2", false, false},
		{"garbage collection: file 0 removed, file 1 not", "0000000001.paf", "unlinkat", false, false},
		{"client-less reset: file 0 emptied and current, file 1 not removed", "0000000001.paf", "unlinkat", false, true},
	} {
		t.Run(in.name, func(t *testing.T) {
			top := newTop(t)
			args := []string{"--records", "500", "--source-max", "16384", "--gc-interval", "1s"}
			if in.reset {
				args[5] = "1h" // only the reset removes files
			}
			path := in.path
			if in.byFD {
				path = filepath.Join(top, path)
			}
			d := startDaemon(t, bin, top, args...)
			// Attached once the daemon is ready: strace counts calls per
			// thread, and each thread's first call after the start is the
			// one that takes the step.
			log := filepath.Join(t.TempDir(), "strace")
			tracer := exec.Command(strace, "-q", "-f", "-o", log, "-e", "signal=none", "-P", path, "-e", "trace="+in.syscall,
				"-e", "inject="+in.syscall+":signal=KILL:when=1", "-p", strconv.Itoa(d.pid))
			var msg strings.Builder
			tracer.Stderr = &msg
			if err := tracer.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tracer.Process.Kill(); tracer.Wait() })
			waitFor(t, 10*time.Second, "strace to attach to every thread", func() bool {
				tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", d.pid))
				for _, task := range tasks {
					if st, _ := os.ReadFile(task); strings.Contains(string(st), "TracerPid:\t0\n") {
						return false
					}
				}
				return len(tasks) > 0
			})
			c := attached(t, top)
			wait, stop := stoppableStorm(t, 20000)
			if in.reset {
				follow(t, c, wait(t))
				c.detach()
				wait = startStorm(t, 100) // wakes the daemon, which finds no client
			}
			for deadline := time.Now().Add(20 * time.Second); !d.exited(); time.Sleep(10 * time.Millisecond) {
				if !in.reset {
					c.poll() // moves on: files behind it may be collected
				}
				if time.Now().After(deadline) {
					b, _ := os.ReadFile(log)
					t.Fatalf("the daemon never reached the instant; strace: %s\n%s", &msg, b)
				}
			}
			if !in.reset {
				stop() // the instant is reached: the rest of the storm would only take time
			}
			b, _ := os.ReadFile(log)
			t.Logf("strace: %s", b)
			d.stop(t, unix.SIGKILL) // waits for the semaphores to be undone
			next, stderr := startForeground(t, bin, top, append([]string{"--pidfile", ""}, args...)...)
			defer func() {
				next.Process.Signal(unix.SIGTERM)
				next.Wait()
			}()
			r := wait(t)
			if !in.reset {
				follow(t, c, r)
				if c.attaches != 1 {
					t.Errorf("client attached %d times, want once", c.attaches)
				}
			}
			// The line saying how the next start took the shadow directory.
			said := ""
			for _, line := range strings.Split(stderr.String(), "\n") {
				if strings.Contains(line, "adopted "+shadowDir) || in.reset && strings.Contains(line, "not adopting "+shadowDir) {
					said = line
				}
			}
			if said == "" {
				t.Errorf("next start says neither how it adopted the state nor why it did not: %s", stderr)
			}
			c = attached(t, top)
			follow(t, c, storm(t, 2000))
			figure(t, "every record once, in order, then a new client served; the next start said %q", said)
		})
	}
}

// 1d. A restart in the middle of a storm, by hand: SIGTERM and a start
// lose the records of exits between the old daemon's acct(NULL) and the new
// one's acct(); --restart loses none. The rest arrive once, in order.
func TestFaultRestartStorm(t *testing.T) {
	bin := integration(t)
	for _, restart := range []string{"SIGTERM and start", "--restart"} {
		t.Run(restart, func(t *testing.T) {
			top := newTop(t)
			d := startDaemon(t, bin, top, "--records", "1000")
			c := attached(t, top)
			start := time.Now()
			waits := []func(*testing.T) stormRun{startStorm(t, 10000), startStorm(t, 10000)}
			waitRecords(t, c, 2000)
			if restart == "--restart" {
				startDaemon(t, bin, top, "--records", "1000", "--restart")
			} else {
				d.stop(t, unix.SIGTERM)
				startDaemon(t, bin, top, "--records", "1000")
			}
			runs := []stormRun{waits[0](t), waits[1](t)}
			rate := 20000 / time.Since(start).Seconds()
			c.settle()
			n := 0 // lost
			for _, r := range runs {
				found, err := c.found(r)
				if err != nil {
					t.Fatal(err)
				}
				n += len(r.pids) - found
			}
			figure(t, "%s mid-storm (%.0f exits/s): %d of 20000 records lost, a gap of about %.1f ms; none duplicated or out of order; client attached %d times",
				restart, rate, n, float64(n)/rate*1000, c.attaches)
			if c.attaches != 1 {
				t.Errorf("client attached %d times, want once", c.attaches)
			}
			if restart == "--restart" && n != 0 {
				t.Errorf("--restart lost %d records", n)
			}
		})
	}
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

// 2. The last client is SIGKILLed: SEM_UNDO gives its count back and the
// next wakeup resets to the client-less state.
func TestFaultLastClientKilled(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "10")
	p, line := startClient(t, top)
	if line != "attached" {
		t.Fatalf("client: %q", line)
	}
	s := storm(t, 50)
	if n := p.read(s); n != 50 {
		t.Fatalf("client read %d of 50 records", n)
	}
	if n, _ := publicClients(); n != 1 {
		t.Fatalf("%d clients registered, want 1", n)
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	killed := time.Now()
	if n, _ := publicClients(); n != 0 {
		t.Fatalf("%d clients registered after SIGKILL: SEM_UNDO did not give the count back", n)
	}
	storm(t, 1) // the next wakeup
	dir := filepath.Join(top, shadowDir)
	waitFor(t, 5*time.Second, "the client-less reset", func() bool {
		files := shadowFiles(t, top)
		cur, _ := os.ReadFile(filepath.Join(dir, currentName))
		return len(files) == 1 && has(files, 0) && files[0] == 0 && string(cur) == "0/10"
	})
	figure(t, "client count back to 0 at once (SEM_UNDO); reset to an empty 0000000000.paf and current 0/10 %s after the kill",
		time.Since(killed).Round(time.Millisecond))
}

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

// leadersEnv makes the re-executed test binary start n processes, one
// every interval ("n:interval:life"), whose main thread exits at once while
// another thread lives on for life, and then exit: each brings an exit
// event of its leader and, until its group ends, no record. A stream, so
// that an unrelated exit (a record) only puts the daemon's verdict off.
const (
	leadersEnv = "ATOPACCTD_TEST_LEADERS"
	leaderEnv  = "ATOPACCTD_TEST_LEADER"
)

func init() {
	if spec := os.Getenv(leadersEnv); spec != "" {
		f := strings.Split(spec, ":")
		n, _ := strconv.Atoi(f[0])
		every, _ := time.ParseDuration(f[1])
		for range n {
			p, err := os.StartProcess("/proc/self/exe", []string{"leader"}, &os.ProcAttr{Env: []string{leaderEnv + "=" + f[2]}})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			p.Release()
			time.Sleep(every)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(leaderEnv); spec != "" {
		d, _ := time.ParseDuration(spec)
		go func() { time.Sleep(d); os.Exit(0) }()
		// init runs on the main thread: exit(2) ends it alone (Syscall, not
		// RawSyscall, so that the runtime hands its P on).
		syscall.Syscall(syscall.SYS_EXIT, 0, 0, 0)
	}
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

// 3b. Any local user (uid 65534 here) takes the public lock and keeps it
// (no SEM_UNDO: it stays taken after the process exits). Collection goes on
// once the lock has been held longer than a client attach can take, with
// one log line: the shadow files stay bounded while the client reads.
func TestFaultLockKept(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	const gc = time.Second
	_, log := startForeground(t, bin, top, "--pidfile", "", "--records", "30", "--gc-interval", gc.String())
	c := attached(t, top)
	asNobody(t, semopEnv+"=1:-1")
	t.Cleanup(func() {
		if id, err := semget(publicKey, 0, 0); err == nil {
			semop(id, []sembuf{{semLock, 1, 0}})
		}
	})
	start := time.Now()
	var most int
	for time.Since(start) < 14*time.Second {
		follow(t, c, storm(t, 300)) // ten files' worth a second
		most = max(most, len(shadowFiles(t, top)))
		time.Sleep(700 * time.Millisecond)
	}
	// The client reads on, as atop does (other processes' records keep
	// coming on a busy machine): within two collections (one may have
	// begun before it moved on) only its own file and the newest are left.
	var files int
	for deadline := time.Now().Add(2*gc + tick); ; time.Sleep(50 * time.Millisecond) {
		c.poll()
		if files = len(shadowFiles(t, top)); files <= 3 || time.Now().After(deadline) {
			break
		}
	}
	if files > 3 || !strings.Contains(log.String(), "collecting without it") {
		t.Errorf("%d shadow files %s after the client read the last one, with the lock kept (at most %d on the way); log:\n%s", files, 2*gc+tick, most, log)
	}
	figure(t, "public lock kept by uid 65534: at most %d shadow files on the way, %d after 14 s; client attached %d times", most, files, c.attaches)
}

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

// 7. Files removed under the daemon: it logs, recreates what is needed and
// keeps copying; the client re-attaches.
func TestFaultFilesRemoved(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	cmd, log := startForeground(t, bin, top, "--pidfile", "", "--records", "100", "--source-max", "4096")
	c := attached(t, top)
	follow(t, c, storm(t, 250))
	dir := filepath.Join(top, shadowDir)
	var figures []string
	for _, tt := range []struct {
		name, logged string
		remove       func()
	}{
		{"current", "current was removed", func() { os.Remove(filepath.Join(dir, currentName)) }},
		{"newest shadow file", ".paf was removed: recreated", func() {
			cur, _ := os.ReadFile(filepath.Join(dir, currentName))
			seq, _, _ := parseCurrent(cur)
			os.Remove(filepath.Join(dir, pafName(seq)))
		}},
		{"source files", "a source file was removed", func() {
			os.Remove(filepath.Join(top, sourceName))
			os.Remove(filepath.Join(top, sourceNext))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := strings.Count(log.String(), tt.logged)
			tt.remove()
			removed := time.Now()
			// A source file's name is only missed at the next rotation.
			exitsUntil(t, 5*time.Second, "the daemon to log "+tt.logged, func() bool { return strings.Count(log.String(), tt.logged) > before })
			back := time.Since(removed)
			if err := c.poll(); err != nil { // re-attaches, as atop at its next sample
				t.Fatal(err)
			}
			s := storm(t, 300) // several shadow files and source rotations
			c.pids, c.ppids = nil, nil
			follow(t, c, s)
			if cmd.ProcessState != nil {
				t.Fatalf("the daemon stopped: %s", log)
			}
			figures = append(figures, fmt.Sprintf("%s: logged and repaired within %s, 0 of %d lost after", tt.name, back.Round(100*time.Millisecond), len(s.pids)))
		})
	}
	// The shadow directory: Landlock lets the daemon make no new one. It
	// stops (exit 5, one line) and switches accounting off.
	var sources []*os.File // by the daemon's descriptors: their names were removed above
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	for _, e := range fds {
		name := fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, e.Name())
		if link, _ := os.Readlink(name); strings.Contains(link, sourceName) {
			if f, err := os.Open(name); err == nil {
				defer f.Close()
				sources = append(sources, f)
			}
		}
	}
	total := func() (n int64) {
		for _, f := range sources {
			end, _ := f.Seek(0, io.SeekEnd)
			n += end
		}
		return n
	}
	if len(sources) != 2 {
		t.Fatalf("%d source files open in the daemon, want 2", len(sources))
	}
	os.RemoveAll(dir)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon goes on without its shadow directory")
	}
	if code := cmd.ProcessState.ExitCode(); code != exitFiles || !strings.Contains(log.String(), "pacct_shadow.d was removed; the sandbox lets no new one be made") {
		t.Errorf("exit %d, want 5 and a line saying why:\n%s", code, log)
	}
	before := total()
	storm(t, 20)
	if after := total(); after != before {
		t.Errorf("accounting still on after the stop: the source grew from %d to %d bytes", before, after)
	}
	figures = append(figures, "pacct_shadow.d: exit 5 with one line, accounting off")
	if t.Failed() {
		t.Logf("daemon log:\n%s", log)
	}
	figure(t, "%s; client attached %d times", strings.Join(figures, "; "), c.attaches)
}

// TestFaultPlanted: what root leaves by mistake where the daemon writes
// (a FIFO as the PID file, at current.tmp and at status; hard links at the
// PID file and at the next shadow file's name to a file elsewhere) never
// blocks the daemon and is never written through: the daemon replaces it.
// The client reads every record, SIGTERM is acted on, the linked-to file
// keeps its content.
func TestFaultPlanted(t *testing.T) {
	bin := integration(t)
	for _, pidfile := range []string{"a FIFO", "a hard link"} {
		t.Run("PID file "+pidfile, func(t *testing.T) {
			top := newTop(t)
			victim := filepath.Join(t.TempDir(), "victim")
			os.WriteFile(victim, []byte("keep\n"), 0o644)
			d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "pid")}
			if pidfile == "a FIFO" {
				unix.Mkfifo(d.pidfile, 0o644)
			} else {
				os.Link(victim, d.pidfile)
			}
			d.start(t, bin, exec.Command(bin, "--pidfile", d.pidfile, "--records", "30", top))
			dir := filepath.Join(top, shadowDir)
			unix.Mkfifo(filepath.Join(dir, currentTmp), 0o644)
			os.Remove(filepath.Join(dir, statusName))
			unix.Mkfifo(filepath.Join(dir, statusName), 0o644)
			cur, _ := os.ReadFile(filepath.Join(dir, currentName))
			seq, _, _ := parseCurrent(cur)
			os.Link(victim, filepath.Join(dir, pafName(seq+1)))
			c := attached(t, top)
			follow(t, c, storm(t, 100)) // more than three files
			waitFor(t, 5*time.Second, "a regular status file", func() bool {
				st, err := os.Lstat(filepath.Join(dir, statusName))
				return err == nil && st.Mode().IsRegular()
			})
			d.stop(t, unix.SIGTERM)
			if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
				t.Errorf("the hard-linked file was written: %q", b)
			}
		})
	}
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

// 8. 100 clients attached, then a 101st: refused by the semaphore, and the
// daemon and the 100 unaffected.
func TestFaultClientLimit(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "1000")
	var clients []*clientProc
	for i := 0; i < 100; i++ {
		p, line := startClient(t, top)
		if line != "attached" {
			t.Fatalf("client %d: %q", i+1, line)
		}
		clients = append(clients, p)
	}
	_, line := startClient(t, top)
	if !strings.Contains(line, "refused") || !strings.Contains(line, unix.EAGAIN.Error()) {
		t.Errorf("client 101: %q, want refused with EAGAIN", line)
	}
	if n, _ := publicClients(); n != 100 {
		t.Errorf("%d clients registered, want 100", n)
	}
	s := storm(t, 2000)
	lost := 0
	for _, p := range clients {
		lost += len(s.pids) - p.read(s)
	}
	if lost != 0 {
		t.Errorf("the 100 clients lost %d records in all", lost)
	}
	figure(t, "100 attached; the 101st refused (%s); %d records lost over 100 clients × %d", line, lost, len(s.pids))
}

// 9. syslog unavailable: none at all, or a reader that never reads. The loop
// never blocks; lines are dropped and counted.
func TestFaultSyslog(t *testing.T) {
	bin := integration(t)
	if _, err := os.Stat("/dev/log"); err == nil {
		t.Log("this host has /dev/log: only the never-reading syslog is tested")
	}
	// A private /dev with /dev/log bound to a socket nobody reads.
	work := t.TempDir()
	sock := filepath.Join(work, "log")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	top := newTop(t)
	d := &daemonProc{top: top, pidfile: filepath.Join(work, "pid")}
	script := fmt.Sprintf(`set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /dev
mknod -m 666 /dev/null c 1 3
ln -s %s /dev/log
exec %s --pidfile %s %s`, sock, bin, d.pidfile, top)
	d.start(t, bin, exec.Command("unshare", "-m", "sh", "-c", script))
	c := attached(t, top)
	const signals = 2000 // each logs a line
	start := time.Now()
	for i := 0; i < signals; i++ {
		d.signal(t, unix.SIGUSR1)
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // let the daemon read its signal pipe
		}
	}
	s := storm(t, 1000)
	follow(t, c, s)
	took := time.Since(start)
	var dropped int
	waitFor(t, 5*time.Second, "dropped lines in the status", func() bool {
		dropped = statusNumber(statusOf(t, bin, top), "log lines dropped")
		return dropped > 0
	})
	// syslog restarts: a new socket at the same name. The sandboxed daemon
	// makes no socket, it connects its own again.
	unix.Close(fd)
	os.Remove(sock)
	if fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	d.signal(t, unix.SIGUSR1) // the first line meets the old socket's end
	d.signal(t, unix.SIGUSR1)
	buf := make([]byte, 512)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || !strings.Contains(string(buf[:max(n, 0)]), "atopacctd") {
		t.Errorf("restarted syslog: %q, %v; want a line of the daemon's", buf[:max(n, 0)], err)
	}
	figure(t, "%d SIGUSR1 lines to a syslog that never reads: %d dropped and counted; 0 of %d records lost, all read %s after the first signal; a restarted syslog gets lines again",
		signals, dropped, len(s.pids), took.Round(time.Millisecond))
}

// 10. SIGTERM during a storm, a client registered: out within 1 s,
// accounting off, the source removed, the shadow files kept for the next
// daemon.
func TestFaultSigtermStorm(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	cmd, log := startForeground(t, bin, top, "--pidfile", "")
	c := attached(t, top)
	src, err := os.Open(filepath.Join(top, sourceName))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	wait := startStorm(t, 20000)
	waitRecords(t, c, 2000)
	sent := time.Now()
	cmd.Process.Signal(unix.SIGTERM)
	err = cmd.Wait()
	took := time.Since(sent)
	if code := cmd.ProcessState.ExitCode(); code != 0 || took > time.Second {
		t.Errorf("exit %d (%v) %s after SIGTERM, want 0 within 1s; log:\n%s", code, err, took, log)
	}
	if names := topNames(t, top); !slices.Equal(names, []string{shadowDir}) {
		t.Errorf("top directory holds %v after SIGTERM, want only %s", names, shadowDir)
	}
	before, _ := src.Seek(0, 2)
	wait(t)
	if after, _ := src.Seek(0, 2); after != before {
		t.Errorf("the source grew from %d to %d bytes after SIGTERM: accounting still on", before, after)
	}
	figure(t, "exited 0 %s after SIGTERM mid-storm; source removed, shadow files kept for the client; accounting off", took.Round(time.Millisecond))
}

// 11. Bad top directories: each refused with exit 2 and a line naming it.
func TestFaultBadTop(t *testing.T) {
	bin := integration(t)
	base := newTop(t)
	mk := func(name string, mode os.FileMode, uid int) string { return mkdirAs(t, base, name, mode, uid) }
	good := mk("good", 0o755, 0)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o644)
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	long := "/" + strings.Repeat("d/", unix.PathMax/2+1)
	under := func(parent string) string { return mkdirAs(t, parent, "top", 0o755, 0) }
	ulink := filepath.Join(base, "ulink")
	os.Symlink(good, ulink)
	os.Lchown(ulink, 65534, 65534)
	mkdirAs(t, good, "top", 0o755, 0)
	refused := 0
	for _, tt := range []struct{ name, top, stderr string }{
		{"missing", filepath.Join(base, "missing"), "no such file"},
		{"a file", file, "not a directory"},
		{"a symlink", link, "symbolic link"},
		{"group-writable", mk("gw", 0o775, 0), "writable by group or others"},
		{"world-writable", mk("ww", 0o757, 0), "writable by group or others"},
		{"sticky and world-writable", mk("tmp", 0o1777, 0), "writable by group or others"},
		{"another user's", mk("nobodys", 0o755, 65534), "owned by uid 65534"},
		{"longer than PATH_MAX", long, "atop's path buffers take at most"},
		{"longer than atop's buffers", "/" + strings.Repeat("d", maxTop), "atop's path buffers take at most"},
		// Whoever can rename a directory above the top can swap the tree.
		{"under another user's", under(mk("nobodys-parent", 0o755, 65534)), "above the top directory"},
		{"under a group-writable", under(mk("gw-parent", 0o775, 0)), "above the top directory"},
		{"through another user's symlink", filepath.Join(ulink, "top"), "owned by uid 65534"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "-f", "--pidfile", "", tt.top)
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			line := strings.TrimSpace(stderr.String())
			if !errors.As(err, &ee) || ee.ExitCode() != exitTop || !strings.Contains(line, tt.stderr) || strings.Contains(line, "\n") {
				t.Errorf("%v, stderr %q; want exit 2 and one line with %q", err, line, tt.stderr)
			}
			refused++
		})
	}
	// Swapped for a symlink between the check and the use: the daemon opens
	// the top directory once (O_NOFOLLOW) and does everything relative to
	// that descriptor, so a swap either makes it refuse the symlink or
	// leaves it in the real directory; the symlink's target is never written.
	victim := mk("victim", 0o755, 0)
	racy := mk("racy", 0o755, 0)
	swap := filepath.Join(base, "swap")
	os.Symlink(victim, swap)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				unix.Renameat2(unix.AT_FDCWD, racy, unix.AT_FDCWD, swap, unix.RENAME_EXCHANGE)
			}
		}
	}()
	starts, refusals := 0, 0
	for i := 0; i < 20; i++ {
		d := &daemonProc{top: racy, pidfile: filepath.Join(t.TempDir(), "pid")}
		out, err := exec.Command(bin, "--pidfile", d.pidfile, racy).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			starts++
			d.adopt(t, bin)
			d.stop(t, unix.SIGTERM)
		case errors.As(err, &ee) && ee.ExitCode() == exitTop:
			refusals++
		default:
			t.Errorf("start %d: %v: %s", i, err, out)
		}
	}
	close(stop)
	<-done
	if names, _ := os.ReadDir(victim); len(names) != 0 {
		t.Errorf("the symlink's target was written: %v", names)
	}
	// A relative top is made absolute by the starting process: the daemon
	// starts in "/".
	rel := &daemonProc{top: good, pidfile: filepath.Join(t.TempDir(), "pid")}
	cmd := exec.Command(bin, "--pidfile", rel.pidfile, "good")
	cmd.Dir = base
	rel.start(t, bin, cmd)
	if _, err := os.Stat(filepath.Join(good, shadowDir, "current")); err != nil {
		t.Errorf("relative top good in %s: %v", base, err)
	}
	rel.stop(t, unix.SIGTERM)
	figure(t, "%d bad top directories refused with exit 2 and one line; swapped for a symlink in a loop: %d starts in the real directory, %d refused, 0 files in the symlink's target",
		refused, starts, refusals)
}

// TestSoak (make soak, not in CI; SOAK=10m by default): storms of 5,000
// exits back to back from one worker (about half of what the two cores can
// spawn) while up to 3 client processes come and go at random between
// storms. Every client attached for a whole storm must read every record of
// it; the daemon's RSS, open descriptors and goroutines must stay flat
// (printed every minute) from the first minute on, when every code path has
// run once and the executable's pages it needs are resident.
func TestSoak(t *testing.T) {
	bin := integration(t)
	length := 10 * time.Minute
	if s := os.Getenv("SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SOAK=%q: %v", s, err)
		}
		length = d
	}
	top := newTop(t)
	d := startDaemon(t, bin, top, "--gc-interval", "10s")
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var clients []*clientProc
	type sample struct{ rssKB, anonKB, fds, goroutines int }
	take := func() sample {
		fds, _ := os.ReadDir("/proc/" + strconv.Itoa(d.pid) + "/fd")
		s := sample{procKB(d.pid, "VmRSS"), procKB(d.pid, "RssAnon"), len(fds), statusNumber(statusOf(t, bin, top), "goroutines")}
		if s.rssKB < 0 || s.anonKB < 0 || s.goroutines < 0 {
			t.Fatalf("daemon figures missing: %+v", s)
		}
		return s
	}
	var base sample // after a minute (or 10 storms in a short run)
	start := time.Now()
	nextPrint := start
	storms, records, checked, lost, attaches := 0, 0, 0, 0, 0
	for time.Since(start) < length {
		if time.Now().After(nextPrint) {
			s := take()
			t.Logf("%3.0f min: RSS %d kB (anonymous %d), fds %d, goroutines %d; %d storms, %d records, %d client-storms checked, %d lost, %d attaches",
				time.Since(start).Minutes(), s.rssKB, s.anonKB, s.fds, s.goroutines, storms, records, checked, lost, attaches)
			if nextPrint.Sub(start) == time.Minute {
				base = s
			}
			nextPrint = nextPrint.Add(time.Minute)
		}
		// Clients come and go between storms.
		if len(clients) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(clients))
			clients[i].in.Close()
			clients[i].cmd.Wait()
			clients = slices.Delete(clients, i, i+1)
		}
		if len(clients) < 3 && rng.IntN(2) == 0 {
			p, line := startClient(t, top)
			if line != "attached" {
				t.Fatalf("client: %q", line)
			}
			clients = append(clients, p)
			attaches++
		}
		s := storm(t, 5000)
		if storms++; storms == 10 && base.rssKB == 0 {
			base = take()
		}
		records += len(s.pids)
		for _, p := range clients {
			lost += len(s.pids) - p.read(s)
			checked++
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
	}
	end, first := take(), base
	if lost != 0 {
		t.Errorf("%d records lost over %d client-storms", lost, checked)
	}
	if end.fds != first.fds || end.goroutines != first.goroutines || end.rssKB > first.rssKB*11/10 {
		t.Errorf("not flat: %+v at first, %+v at the end", first, end)
	}
	figure(t, "%s: %d storms, %d records, %d client attaches, %d client-storms checked, %d lost; from the first minute to the end: RSS %d → %d kB (anonymous %d → %d), fds %d → %d, goroutines %d → %d",
		length, storms, records, attaches, checked, lost, first.rssKB, end.rssKB, first.anonKB, end.anonKB, first.fds, end.fds, first.goroutines, end.goroutines)
}

// clientProc is a client process started by startClient.
type clientProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startClient starts a client process and returns it with its first line
// ("attached" or "refused: ..."); it is killed at cleanup.
func startClient(t *testing.T, top string) (*clientProc, string) {
	t.Helper()
	cmd := testCommand(os.Args[0], "-test.run=^$")
	cmd.Env = append(cmd.Env, clientEnv+"="+top)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &clientProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	p.out.Scan()
	return p, p.out.Text()
}

// read asks the client how many records of s it has read, waiting for all.
func (p *clientProc) read(s stormRun) int {
	fmt.Fprintf(p.in, "%d %d\n", s.parent, len(s.pids))
	p.out.Scan()
	var n int
	fmt.Sscanf(p.out.Text(), "read %d", &n)
	return n
}
