//go:build faults

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Faults: the daemon killed (SIGKILL at every instant, repeatedly, mid-storm), restarted under a storm, and its last client killed: no record lost.

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
