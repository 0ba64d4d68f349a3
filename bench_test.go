//go:build bench

package main

// The benchmark harness (make bench): our daemon and, with REF=path, a
// reference daemon (e.g. the C atopacctd from Debian's atop package), run in
// alternation (A B A B ...) on the same machine. Never part of make test.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchFigures is one round of one daemon.
type benchFigures struct {
	lost      int
	files     int
	rotations int // -1 when the daemon does not say
	cpuTicks  int // utime+stime of the daemon for the storm
	rate      float64
	syscalls  float64 // per record, strace -c; -1 without strace
	p50, p99  time.Duration
	bg        background // the same, beside an ordinary busy host's exits
	rssKB     int
	ready     time.Duration
	gcCycles  int // -1 when the daemon does not say
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestBench(t *testing.T) {
	ours := integration(t)
	daemons := [][2]string{{"atopacctd (Go)", ours}}
	for i, ref := range filepath.SplitList(os.Getenv("REF")) {
		name := "reference"
		if i > 0 {
			name = fmt.Sprintf("reference %d (%s)", i+1, filepath.Base(ref))
		}
		daemons = append(daemons, [2]string{name, ref})
	}
	rounds, records := envInt("ROUNDS", 3), envInt("RECORDS", 200000)
	results := make([][]benchFigures, len(daemons))
	for r := 0; r < rounds; r++ {
		for i, dm := range daemons {
			f := benchRound(t, dm[1], records)
			t.Logf("round %d %s: %+v", r+1, dm[0], f)
			results[i] = append(results[i], f)
		}
	}
	report := benchReport(daemons, results, rounds, records)
	fmt.Print(report)
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// benchRound starts a daemon, attaches an atop-like client, runs a storm of
// records processes from two workers, then measures latency one exit at a
// time, syscalls under strace, and stops it.
func benchRound(t *testing.T, bin string, records int) benchFigures {
	var f benchFigures
	d, c, ready := benchStart(t, bin)
	f.ready = ready
	defer d.stop(t, unix.SIGTERM)
	defer c.detach() // before the daemon stops: rounds run in one test
	top := d.top
	gc0 := statusInt(t, top, "gc cycles")

	// The storm: two workers, the client following as atop would.
	ticks0 := cpuTicks(t, d.pid)
	start := time.Now()
	var wg sync.WaitGroup
	runs := make([]stormRun, 2)
	for w := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); runs[w] = storm(t, records/len(runs)) }()
	}
	wg.Wait()
	f.rate = float64(records) / time.Since(start).Seconds()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := c.poll(); err != nil {
			t.Fatal(err)
		}
		f.lost = 0
		for _, r := range runs {
			f.lost += len(r.pids) - c.children(r.parent)
		}
		if f.lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.cpuTicks = cpuTicks(t, d.pid) - ticks0
	f.files = c.files
	f.rotations = statusInt(t, top, "source rotations")
	if g := statusInt(t, top, "gc cycles"); g >= 0 && gc0 >= 0 {
		f.gcCycles = g - gc0
	} else {
		f.gcCycles = -1
	}
	for _, r := range runs {
		if err := c.check(r); err != nil && bin == daemonBinary(t) {
			t.Errorf("%s: %v", bin, err) // the reference's losses are a figure, ours a failure
		}
	}

	f.p50, f.p99 = latency(t, c, 200)
	f.bg = withBackground(t, c, d.pid)
	f.syscalls = syscallsPerRecord(t, c, d.pid, 50000)
	f.rssKB = procKB(d.pid, "VmHWM")
	return f
}

// benchStart starts bin on a fresh top directory on a tmpfs (as /run is on
// most systems), unmounted at cleanup, and attaches a client; it returns
// them with the time the start took. The caller detaches the client and
// stops the daemon.
func benchStart(t *testing.T, bin string) (*daemonProc, *client, time.Duration) {
	top := newTop(t)
	if err := unix.Mount("tmpfs", top, "tmpfs", 0, "mode=0755,size=256m"); err != nil {
		t.Fatalf("tmpfs on %s: %v", top, err)
	}
	t.Cleanup(func() { unix.Unmount(top, unix.MNT_DETACH) })
	t0 := time.Now()
	d := startAsShipped(t, bin, top)
	return d, attached(t, top), time.Since(t0)
}

// startAsShipped starts bin (ours or the C daemon) as a package's unit
// does, with top as its one argument, and adopts it.
func startAsShipped(t *testing.T, bin, top string) *daemonProc {
	// Output to a file, not a pipe: the C daemon keeps the starting
	// process's stdout and stderr open, so a pipe never ends.
	log, err := os.CreateTemp(t.TempDir(), "start")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, top)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(log.Name())
		t.Fatalf("%s %s: %v: %s", bin, top, err, out)
	}
	d := &daemonProc{top: top, pidfile: "/run/atopacctd.pid"}
	d.adopt(t, bin)
	return d
}

// TestBenchRestart re-measures issue 12's table for our daemon and each
// REF: both real atops attached, 100 exits, 1 s later the daemon stopped
// (SIGTERM, or SIGKILL) and started again, 100 more exits; what each atop
// showed of the 200. Not written to docs/BENCHMARKS.md.
func TestBenchRestart(t *testing.T) {
	atops := realAtops(t)
	for _, bin := range append([]string{integration(t)}, filepath.SplitList(os.Getenv("REF"))...) {
		for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
			top := newTop(t)
			d := startAsShipped(t, bin, top)
			seen := atopsAcross(t, top, atops, func() {
				time.Sleep(time.Second)
				d.stop(t, sig)
				d = startAsShipped(t, bin, top)
			})
			d.stop(t, unix.SIGTERM)
			t.Logf("%s, %s and start: atop 2.8.1 showed %d of 200, atop 2.11.1 %d, atop 2.13.0 %d", bin, unix.SignalName(sig), seen["2.8.1"], seen["2.11.1"], seen["2.13.0"])
		}
	}
}

// TestBenchSuspendResume measures, for our daemon and each REF, how long
// after space returns the first record is copied when the kernel had
// suspended accounting and checks every 30 s (suspendThenResume): ours
// switches files at once, the C daemon waits for the kernel's check. Not
// written to docs/BENCHMARKS.md.
func TestBenchSuspendResume(t *testing.T) {
	for _, bin := range append([]string{integration(t)}, filepath.SplitList(os.Getenv("REF"))...) {
		top := smallFS(t, "4m")
		acctParams(t, "4 2 1")
		d := startAsShipped(t, bin, top)
		c := attached(t, top)
		// Suspended: no record for 5 s of exits (the C daemon has no status).
		quiet, seen := time.Now(), 0
		suspended := func() bool {
			if c.poll(); len(c.pids) != seen {
				quiet, seen = time.Now(), len(c.pids)
			}
			return time.Since(quiet) > 5*time.Second
		}
		_, resume := suspendThenResume(t, top, c, suspended)
		t.Logf("%s: the first record copied %s after space returned (the kernel checking every 30 s)", bin, resume.Round(100*time.Millisecond))
		c.detach()
		d.stop(t, unix.SIGTERM)
	}
}

// TestBenchBackground measures the background case alone (withBackground),
// each daemon in turn for ROUNDS rounds, and with TRACE (a command, such as
// 'strace -c -f -p') traces each for 3 s of background: a quick loop for
// work on the path of ordinary load. Not written to docs/BENCHMARKS.md.
func TestBenchBackground(t *testing.T) {
	daemons := []string{integration(t)}
	daemons = append(daemons, filepath.SplitList(os.Getenv("REF"))...)
	for r := 0; r < envInt("ROUNDS", 3); r++ {
		for _, bin := range daemons {
			d, c, _ := benchStart(t, bin)
			b := withBackground(t, c, d.pid)
			t.Logf("round %d %s: %.0f exits/s, p50 %v, p99 %v, CPU %.2f ms/s", r+1, bin, b.rate, b.p50, b.p99, b.cpuMS)
			if trace := strings.Fields(os.Getenv("TRACE")); len(trace) > 0 {
				// e.g. TRACE='strace -c -f -p': that command, the daemon's
				// pid appended, for 3 s of background.
				loop := exec.Command("sh", "-c", "while :; do /bin/true; sleep 0.001; done")
				loop.Start()
				args := append(append([]string{"-s", "INT", "3"}, trace...), strconv.Itoa(d.pid))
				out, _ := exec.Command("timeout", args...).CombinedOutput()
				loop.Process.Kill()
				loop.Wait()
				t.Logf("%s for 3 s of background:\n%s", trace, out)
			}
			c.detach()
			d.stop(t, unix.SIGTERM)
		}
	}
}

// latency measures, one exit at a time 20 ms apart, the time from the
// parent's wait returning until the record is readable in a shadow file.
func latency(t *testing.T, c *client, n int) (p50, p99 time.Duration) {
	var samples []time.Duration
	for i := 0; i < n; i++ {
		c.poll()
		have := len(c.pids)
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		exited := time.Now()
		pid := uint32(cmd.Process.Pid)
		for found := false; !found; {
			if time.Since(exited) > 2*time.Second {
				t.Fatalf("record of pid %d not readable after 2 s", pid)
			}
			c.poll()
			found = slices.Contains(c.pids[have:], pid)
			if !found {
				unix.Nanosleep(&unix.Timespec{Nsec: 20000}, nil) // leave the CPU to the daemon (time.Sleep rounds to 1 ms)
			}
		}
		samples = append(samples, time.Since(exited))
		time.Sleep(20 * time.Millisecond)
	}
	worst := slices.Clone(samples)
	slices.Sort(samples)
	for i, v := range worst {
		if v >= samples[len(samples)*98/100] {
			t.Logf("latency sample %d: %v", i, v)
		}
	}
	return samples[len(samples)/2], samples[len(samples)*99/100]
}

// background is the latency and the daemon's CPU while a shell loop runs
// short commands, as on a busy build host (about 600 exits/s here).
type background struct {
	rate     float64 // exits per second of the loop
	p50, p99 time.Duration
	cpuMS    float64 // daemon CPU, ms per second of wall time
}

// withBackground runs `while :; do /bin/true; sleep 0.001; done` beside the
// daemon: its CPU over 10 s, then 200 probes' latency.
func withBackground(t *testing.T, c *client, pid int) background {
	var b background
	loop := exec.Command("sh", "-c", "while :; do /bin/true; sleep 0.001; done")
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { loop.Process.Kill(); loop.Wait() }() // our own child, through its pidfd
	time.Sleep(time.Second)                             // the loop at full speed
	c.poll()
	exits0, cpu0, t0 := c.children(uint32(loop.Process.Pid)), cpuNS(t, pid), time.Now()
	for end := t0.Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		c.poll() // as atop would, now and then
	}
	c.poll()
	wall := time.Since(t0).Seconds()
	b.cpuMS = float64(cpuNS(t, pid)-cpu0) / 1e6 / wall
	b.rate = float64(c.children(uint32(loop.Process.Pid))-exits0) / wall
	b.p50, b.p99 = latency(t, c, 200)
	return b
}

// cpuNS is the CPU time of every thread of pid, in ns (schedstat: finer
// than clock ticks at a few ms per second).
func cpuNS(t *testing.T, pid int) int64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("schedstat of pid %d: %v", pid, err)
	}
	var ns int64
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			ns += v
		}
	}
	return ns
}

// syscallsPerRecord counts the daemon's system calls under strace -c -f
// during a storm of n processes.
func syscallsPerRecord(t *testing.T, c *client, pid, n int) float64 {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Log("no strace: syscalls per record not measured (apt-get install strace)")
		return -1
	}
	out := filepath.Join(t.TempDir(), "strace")
	st := exec.Command("strace", "-c", "-f", "-o", out, "-p", strconv.Itoa(pid))
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // attached to every thread
	have := len(c.pids)
	r := storm(t, n)
	for deadline := time.Now().Add(30 * time.Second); c.children(r.parent) < n && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c.poll()
	}
	time.Sleep(200 * time.Millisecond)
	st.Process.Signal(unix.SIGINT)
	st.Wait()
	b, _ := os.ReadFile(out)
	m := regexp.MustCompile(`(?m)^\s*100\.00\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total`).FindStringSubmatch(string(b))
	if m == nil {
		t.Logf("strace summary not understood:\n%s", b)
		return -1
	}
	return float64(atoi(m[1])) / float64(len(c.pids)-have)
}

func cpuTicks(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest) // field 3 (state) is f[0]: utime is field 14, stime 15
	return atoi(f[11]) + atoi(f[12])
}

// statusInt reads "key: N" from our daemon's status file; -1 for others.
func statusInt(t *testing.T, top, key string) int {
	if _, err := os.Stat(filepath.Join(top, shadowDir, statusName)); err != nil {
		return -1
	}
	time.Sleep(1100 * time.Millisecond) // published at most once a second
	b, _ := readStatus(top)             // rewritten in place: read until two reads agree
	return statusNumber(string(b), key)
}

func median[T int | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchReport formats the medians of every figure and, with a reference,
// the ratios, as the Markdown that goes into docs/BENCHMARKS.md.
func benchReport(daemons [][2]string, res [][]benchFigures, rounds, records int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	var uts unix.Utsname
	unix.Uname(&uts)
	b.WriteString(`# Benchmarks

Written by ` + "`make bench`" + ` (bench_test.go, build tag bench; never part of make test).
Each round starts a daemon on a fresh top directory (a tmpfs, as /run is on most systems) and measures:

- start → ready: the starting command until it exits 0 (both daemonize);
- a storm of RECORDS fork+_exit processes from two workers (the test binary
  re-executed, raw clone + exit_group, waited for one by one), with an atop-like
  client (client_test.go) registered through the semaphores and following the
  shadow files with read locks: records lost, shadow files, source rotations,
  daemon CPU (utime+stime from /proc/PID/stat) over the storm, GC cycles (ours:
  from its status file);
- latency at light load: 200 single exits 20 ms apart, from the parent's wait
  returning until the client reads the record (the client checks every 20 µs
  with nanosleep rather than spinning: a spinning client competes with the
  daemon for the cores; a sample may include ~0.1 ms of the client's own sleep);
- with a background: a shell loop of /bin/true and sleep 0.001 (an ordinary
  busy host, several hundred exits/s) runs beside the daemon; its exit rate
  and the daemon's CPU (the schedstat run time of every thread) over 10 s,
  then the same 200 single exits' latency;
- syscalls per record: strace -c -f on the daemon during a further 50,000 exits;
- peak RSS: VmHWM at the end.

With REF=/path/to/atopacctd the reference runs in the same rounds, alternated
(REF=a:b: several references).

`)
	fmt.Fprintf(&b, "## Run of %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %s, Linux %s, %d cores, %s. Command: `make bench REF=%s` (ROUNDS=%d, RECORDS=%d).\n\n",
		host, unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(), runtime.Version(), os.Getenv("REF"), rounds, records)
	b.WriteString("Medians over the rounds, daemons alternated in each round.\n\n| figure |")
	for _, d := range daemons {
		fmt.Fprintf(&b, " %s |", d[0])
	}
	cols := len(daemons)
	if len(daemons) == 2 {
		b.WriteString(" ratio (Go / reference) |")
		cols++
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", cols) + "\n")
	row := func(name string, get func(benchFigures) float64, format string) {
		fmt.Fprintf(&b, "| %s |", name)
		var meds []float64
		for _, r := range res {
			vals := make([]float64, len(r))
			for i, f := range r {
				vals[i] = get(f)
			}
			m := median(vals)
			meds = append(meds, m)
			if m < 0 {
				b.WriteString(" n/a |")
			} else {
				fmt.Fprintf(&b, " "+format+" |", m)
			}
		}
		if len(meds) == 2 {
			if meds[1] > 0 && meds[0] >= 0 {
				fmt.Fprintf(&b, " %.2f |", meds[0]/meds[1])
			} else {
				b.WriteString(" |")
			}
		}
		b.WriteString("\n")
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	row(fmt.Sprintf("records lost of %d", records), func(f benchFigures) float64 { return float64(f.lost) }, "%.0f")
	row("storm rate (processes/s)", func(f benchFigures) float64 { return f.rate }, "%.0f")
	row("shadow files read", func(f benchFigures) float64 { return float64(f.files) }, "%.0f")
	row("source rotations", func(f benchFigures) float64 { return float64(f.rotations) }, "%.0f")
	row(fmt.Sprintf("daemon CPU for %d records (clock ticks)", records), func(f benchFigures) float64 { return float64(f.cpuTicks) }, "%.0f")
	row("syscalls per record (strace -c, 50,000 records)", func(f benchFigures) float64 { return f.syscalls }, "%.3f")
	row("exit → readable p50 (ms)", func(f benchFigures) float64 { return ms(f.p50) }, "%.3f")
	row("exit → readable p99 (ms)", func(f benchFigures) float64 { return ms(f.p99) }, "%.3f")
	row("background exits/s (shell loop)", func(f benchFigures) float64 { return f.bg.rate }, "%.0f")
	row("with background: exit → readable p50 (ms)", func(f benchFigures) float64 { return ms(f.bg.p50) }, "%.3f")
	row("with background: exit → readable p99 (ms)", func(f benchFigures) float64 { return ms(f.bg.p99) }, "%.3f")
	row("with background: daemon CPU (ms/s)", func(f benchFigures) float64 { return f.bg.cpuMS }, "%.2f")
	row("peak RSS (kB)", func(f benchFigures) float64 { return float64(f.rssKB) }, "%.0f")
	row("start → ready (ms)", func(f benchFigures) float64 { return ms(f.ready) }, "%.1f")
	row("GC cycles during the storm", func(f benchFigures) float64 { return float64(f.gcCycles) }, "%.0f")
	b.WriteString("\n")
	return b.String()
}
