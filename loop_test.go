package main

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPacer: the coalescing decision, as turns (when each ended, how many
// records it copied) and the pause it chose after each.
func TestPacer(t *testing.T) {
	type turn struct {
		after   time.Duration // since the previous turn
		records uint64
		want    time.Duration
	}
	every := func(n int, after time.Duration, records uint64, want time.Duration) []turn {
		var ts []turn
		for i := 0; i < n; i++ {
			ts = append(ts, turn{after, records, want})
		}
		return ts
	}
	cat := func(parts ...[]turn) []turn {
		var ts []turn
		for _, p := range parts {
			ts = append(ts, p...)
		}
		return ts
	}
	for _, tt := range []struct {
		name  string
		turns []turn
	}{
		{"a lone exit", []turn{{time.Hour, 1, 0}}},
		{"a burst after a long idle is judged over the idle time", []turn{{time.Hour, 50, 0}, {50 * time.Microsecond, 10, coalesce}}},
		{"600 exits/s background: every exit at once", every(600, 1667*time.Microsecond, 1, 0)},
		{"1,500 exits/s: still at once", every(1500, 667*time.Microsecond, 1, 0)},
		{"two exits that meet", cat([]turn{{time.Second, 1, 0}, {50 * time.Microsecond, 1, 0}, {2 * time.Millisecond, 1, 0}}, every(20, 1667*time.Microsecond, 1, 0))},
		{"a storm: 10 ms, then 25 ms while it lasts", cat(
			[]turn{{time.Second, 1, 0}},
			every(9, 50*time.Microsecond, 1, 0),
			[]turn{{50 * time.Microsecond, 1, coalesce}, {coalesce, 200, stormCoalesce}},
			every(5, stormCoalesce, 500, stormCoalesce))},
		{"a storm that ends", cat(
			[]turn{{time.Second, 12, 0}, {100 * time.Microsecond, 12, coalesce}, {coalesce, 150, stormCoalesce}},
			[]turn{{stormCoalesce, 4, 0}, {3 * time.Millisecond, 1, 0}})},
		{"a burst, then the background: the pause gathers more, the rate stays low", cat(
			[]turn{{time.Second, 1, 0}, {100 * time.Microsecond, 10, coalesce}, {coalesce, 6, 0}},
			every(50, 1667*time.Microsecond, 1, 0))},
		{"in a storm pause, a slower rate ends it at once", []turn{{time.Second, 1, 0}, {0, 10, coalesce}, {coalesce, 19, 0}}},
		{"in a storm pause, stormRate keeps it", []turn{{time.Second, 1, 0}, {0, 10, coalesce}, {coalesce, 20, stormCoalesce}}},
		{"empty turns (ticks) change nothing", []turn{{time.Second, 0, 0}, {time.Second, 0, 0}, {time.Microsecond, 1, 0}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p pacer
			now := time.Unix(1e9, 0)
			for i, tu := range tt.turns {
				now = now.Add(tu.after)
				if got := p.next(now, tu.records); got != tu.want {
					t.Fatalf("turn %d (%d records after %s): pause %s, want %s", i, tu.records, tu.after, got, tu.want)
				}
			}
		})
	}
}

func TestPresence(t *testing.T) {
	for _, tt := range []struct {
		name     string
		clients  int
		lockFree bool
		empty    bool
		want     clientVerdict
	}{
		{"a client", 1, true, false, clientsCopy},
		{"a client, client-less files", 1, true, true, clientsCopy},
		{"one attaching (lock taken, not yet counted)", 0, false, true, clientsCopy},
		{"100 clients attaching", 100, false, false, clientsCopy},
		{"none, files already client-less", 0, true, true, clientsDrop},
		{"none, files of a client that left", 0, true, false, clientsReset},
		{"count raised above 100 by a local user", -100, true, false, clientsCopy},
		{"count raised above 100, client-less files", -1, true, true, clientsCopy},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := presence(tt.clients, tt.lockFree, tt.empty); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSignalPipeFailure: a signal pipe that cannot be made is an error, not
// a daemon that SIGTERM then kills with accounting on.
func TestSignalPipeFailure(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	free, err := unix.Dup(0) // the lowest free descriptor number
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	low := lim
	low.Cur = uint64(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var p sigPipe
	err = p.open()
	unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	if !errors.Is(err, unix.EMFILE) || !strings.Contains(err.Error(), "signal pipe") {
		t.Errorf("open with no descriptor left: %v, want an EMFILE error naming the signal pipe", err)
	}
}

// wakeupStep is copyStep with a socketpair standing in for the proc
// connector and a real signal pipe: the whole turn of the loop runs.
func wakeupStep(tb testing.TB) (d *daemon, src, events int) {
	d, w := copyStep(tb, 100)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	unix.SetNonblock(fds[0], true)
	d.wait.nl = &procConn{fd: fds[0]}
	d.wait.nl.setBuffers()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		tb.Fatal(err)
	}
	d.wait.sig.r, d.wait.sig.w = p[0], p[1]
	if err := d.wait.open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.wait.close(); unix.Close(fds[1]); unix.Close(p[0]); unix.Close(p[1]) })
	d.opts.poll, d.opts.gcInterval = time.Second, time.Hour
	d.turn.now = time.Now()
	d.turn.nextTick, d.clients.nextGC = d.turn.now.Add(time.Hour), d.turn.now.Add(time.Hour)
	return d, w, fds[1]
}

// TestWakeupAllocs: a whole turn of the loop (wait, netlink drain, copy,
// the pacer; and with the once-a-second duties and a collection) allocates
// nothing.
func TestWakeupAllocs(t *testing.T) {
	for _, periodic := range []bool{false, true} {
		d, w, events := wakeupStep(t)
		msg := exitMsg(procEventExit, 7, 7)
		batch := records(3, 0)
		turns := 0
		allocs := testing.AllocsPerRun(100, func() {
			unix.Write(w, batch)
			unix.Write(events, msg)
			if periodic {
				d.turn.nextTick, d.clients.nextGC = d.turn.now, d.turn.now
			}
			if err := d.wakeup(); err != nil {
				t.Fatal(err)
			}
			turns++
		})
		if allocs != 0 {
			t.Errorf("periodic %v: %v allocations per wakeup, want 0", periodic, allocs)
		}
		if want := uint64(turns * 3); d.sh.copied != want || d.wait.total != uint64(turns) {
			t.Errorf("periodic %v: copied %d records and %d events, want %d and %d", periodic, d.sh.copied, d.wait.total, want, turns)
		}
	}
}

func TestIntegrationStorm(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "1000", "--source-max", "65536")
	c := attached(t, top)
	n := 20000
	if s := os.Getenv("ATOPACCTD_STORM"); s != "" {
		n = atoi(s) // e.g. 200000 for the figure in the closing note
	}
	pids := storm(t, n)
	follow(t, c, pids)
	t.Logf("%d of %d storm records read once, in order, over %d shadow files", len(pids.pids), n, c.files)
	if c.files < 20 {
		t.Errorf("records spread over %d shadow files, want >= 20", c.files)
	}
	for i, size := range c.fullSize {
		if size != 64000 {
			t.Errorf("full shadow file #%d holds %d bytes, want 64000", i, size)
		}
	}
	files := shadowFiles(t, top)
	newest := slices.Max(slices.Collect(maps.Keys(files)))
	for seq, size := range files {
		if seq != newest && size != 64000 {
			t.Errorf("shadow file %d holds %d bytes, want 64000 (only the newest may hold fewer)", seq, size)
		}
	}
	st := statusOf(t, bin, top)
	if statusNumber(st, "source rotations") < 12 {
		t.Errorf("want >= 12 source rotations for 20,000 records at 64 KiB; status:\n%s", st)
	}
	if !strings.Contains(st, "clients: 1\n") || !strings.Contains(st, "accounting: on\n") {
		t.Errorf("status lacks clients: 1 or accounting: on:\n%s", st)
	}
	if info, err := os.Stat(filepath.Join(top, sourceName)); err != nil || info.Size() > 65536+64*readRecords {
		t.Errorf("source file %v, %v: not bounded by --source-max", info, err)
	}
}
