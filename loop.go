// The main loop: wait for exit events, signals or the next deadline, pause
// under a storm (pacer), copy (copy.go), then the once-a-second duties and
// the garbage collection. One turn (wakeup) allocates nothing.
// Speaks signal(7), pipe(2), fcntl(2) (F_DUPFD_CLOEXEC) and docs/PROTOCOL.md ("The
// daemon's duties"); waits in the Go runtime's netpoller (os.File deadlines).

package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	tick      = time.Second // status, disk guard and repairs happen at most this often
	lostAfter = 3 * time.Second

	// Coalescing (pacer): records arriving at stormRate or faster, measured
	// over at least stormWindow or stormRecords, are a storm.
	stormRate     = 2000 // records per second
	stormWindow   = 5 * time.Millisecond
	stormRecords  = 10
	coalesce      = 10 * time.Millisecond // the first pause of a storm
	stormCoalesce = 25 * time.Millisecond // the pause while it lasts: the longest records wait
)

// pacer decides whether the loop pauses before its next look at netlink, so
// that a storm's exits are copied in batches: each turn costs about the same
// whatever it copies, and under a storm the daemon's CPU falls with the pause
// (100,000 exits from two workers: 7-9 clock ticks with 10 ms, 5-6 with 25 ms,
// 3-4 with 50 ms). It judges by the rate records arrive at, over a window of
// its own, never by how many one turn found: a pause gathers more records
// whatever the rate, and would otherwise keep an ordinary background of a
// few hundred exits a second in storm pauses. Below stormRate every exit is
// copied at once.
type pacer struct {
	start   time.Time     // of the window being counted
	records uint64        // records copied in it so far
	storm   bool          // the last window was a storm
	turn    uint64        // records copied or dropped in this turn
	pause   time.Duration // before the next turn: next's verdict on the last
}

// startTurn starts counting a turn's records.
func (p *pacer) startTurn() { p.turn = 0 }

// count counts n records copied or dropped in this turn.
func (p *pacer) count(n uint64) { p.turn += n }

// endTurn takes the pause before the next turn from this one's records.
func (p *pacer) endTurn(now time.Time) { p.pause = p.next(now, p.turn) }

// next takes the end of a turn and the records it copied, and returns the
// pause before the next turn (0: wait for the next event).
func (p *pacer) next(now time.Time, records uint64) time.Duration {
	p.records += records
	elapsed := now.Sub(p.start)
	if p.records < stormRecords && elapsed < stormWindow {
		return 0 // too few records, too short a time to judge yet
	}
	storm := p.records*uint64(time.Second) >= stormRate*uint64(max(elapsed, 0))
	p.start, p.records = now, 0
	pause := time.Duration(0)
	switch {
	case storm && p.storm:
		pause = stormCoalesce
	case storm:
		pause = coalesce
	}
	p.storm = storm
	return pause
}

// sigPipe carries the signals that stop the daemon (stopSignals), SIGUSR1
// and SIGUSR2 from the signal goroutine to the loop, one byte each; pending says a byte is there, and
// the goroutine wakes the loop's wait (waiter) by moving its deadline to the
// past.
type sigPipe struct {
	r, w    int
	pending atomic.Bool
	waiting atomic.Pointer[os.File] // the loop's wait, once it has one
}

// stopSignals are those whose default action ends a process: each stops
// the daemon through its clean-up (accounting off first), never leaving
// accounting on with nobody draining it. A fault of the daemon's own
// (SIGSEGV, SIGBUS, SIGFPE raised by its code) still panics, and the panic
// cleans up; sent by kill(2) they arrive here.
var stopSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGABRT, unix.SIGTRAP, unix.SIGSYS,
	unix.SIGILL, unix.SIGBUS, unix.SIGFPE, unix.SIGSEGV, unix.SIGXCPU, unix.SIGXFSZ}

// open makes the pipe and starts routing the signals into it; SIGHUP is
// ignored, and SIGPIPE (a write to a log stream nobody reads fails instead
// of ending the daemon). Until it succeeds, those signals keep their default action
// (the daemon dies), which is why a failure here is fatal: the daemon stops
// before it switches accounting on, not after with no way to stop cleanly.
func (p *sigPipe) open() error {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return os.NewSyscallError("signal pipe: pipe2", err)
	}
	p.r, p.w = fds[0], fds[1]
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)
	c := make(chan os.Signal, 8)
	signal.Notify(c, append(stopSignals, unix.SIGUSR1, unix.SIGUSR2)...)
	go func() {
		for s := range c {
			// In this order: the loop clears pending before it reads the
			// pipe, so a byte is never left there unannounced.
			unix.Write(p.w, []byte{byte(s.(syscall.Signal))})
			p.pending.Store(true)
			if f := p.waiting.Load(); f != nil {
				f.SetReadDeadline(time.Unix(1, 0))
			}
		}
	}()
	return nil
}

// waiter blocks the loop in the Go runtime's netpoller on one descriptor of
// its own: a duplicate of the netlink socket, or of the signal pipe while
// polling. Parked there, the daemon is idle as far as the runtime knows; a
// blocking system call (ppoll(2)) instead makes the runtime's monitor take
// the processor back at every wait and, while exits keep coming, wake every
// 20 us. On the netlink socket the look for events is the read of them
// (drain), so a turn reads netlink and waits with no call in between.
type waiter struct {
	file *os.File
	rc   syscall.RawConn
	nl   *procConn // the proc connector; nil while polling
	sig  sigPipe
	look func(fd uintptr) bool // made once: a method value per wait would allocate

	// What the last wait drained from netlink.
	events  int
	overrun bool
	err     error

	total, overruns uint64 // exit events and ENOBUFS since start
}

// count adds the last wait's events and overrun to the totals.
func (w *waiter) count() {
	w.total += uint64(w.events)
	if w.overrun {
		w.overruns++
	}
}

func newWaiter() waiter { return waiter{sig: sigPipe{r: -1, w: -1}} }

// attach makes nl the source of exit events (nil: polling).
func (w *waiter) attach(nl *procConn) { w.nl = nl }

// poll gives up the proc connector: the daemon polls from now on.
func (w *waiter) poll() {
	w.nl.close()
	w.nl = nil
}

// polling says whether the daemon polls (no proc connector).
func (w *waiter) polling() bool { return w.nl == nil }

// open registers a duplicate (non-blocking) of the proc connector's socket,
// or of the signal pipe while polling, with the netpoller.
func (w *waiter) open() error {
	fd := w.sig.r
	if w.nl != nil {
		fd = w.nl.fd
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("wait: fcntl F_DUPFD_CLOEXEC", err)
	}
	w.file = os.NewFile(uintptr(dup), "wait") // non-blocking: it joins the netpoller
	if w.rc, err = w.file.SyscallConn(); err != nil {
		w.close()
		return fmt.Errorf("wait: %w", err)
	}
	w.look = func(uintptr) bool {
		if w.nl != nil {
			events, overrun, err := w.nl.drain()
			w.events += events
			w.overrun = w.overrun || overrun
			w.err = err
		}
		return w.events > 0 || w.overrun || w.err != nil || w.sig.pending.Load()
	}
	w.sig.waiting.Store(w.file)
	return nil
}

// wait returns when exit events or a signal arrived, or timeout passed; a
// timeout of 0 only looks. It returns netlink's error, if any.
func (w *waiter) wait(timeout time.Duration) error {
	w.events, w.overrun, w.err = 0, false, nil
	if timeout <= 0 {
		w.look(0)
		return w.err
	}
	w.file.SetReadDeadline(time.Now().Add(timeout))
	// A signal that moved the deadline before the line above is pending.
	if !w.sig.pending.Load() {
		if err := w.rc.Read(w.look); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("wait for events: %w", err)
		}
	}
	return w.err
}

// close closes the wait and the proc connector.
func (w *waiter) close() {
	w.poll()
	if w.file != nil {
		w.sig.waiting.Store(nil)
		w.file.Close()
		w.file = nil
	}
}

// turnState is the loop's own state: the time of the turn, when the
// once-a-second duties run next, the storm pacer, and whether to stop.
type turnState struct {
	now      time.Time
	nextTick time.Time
	pace     pacer
	stop     stopRequest
}

// begin starts a turn: its time, and the pacer's count.
func (t *turnState) begin() {
	t.now = time.Now()
	t.pace.startTurn()
}

// startClock starts the loop's clock: the once-a-second duties are due.
func (t *turnState) startClock() {
	t.now = time.Now()
	t.nextTick = t.now
}

// tickDue says whether the once-a-second duties are due, and if so puts
// the next ones a tick later.
func (t *turnState) tickDue() bool {
	if t.now.Before(t.nextTick) {
		return false
	}
	t.nextTick = t.now.Add(tick)
	return true
}

// stopRequest is why the loop stops: code is -1 until a signal or a fatal
// error asks it to, then the exit code (the last request's).
type stopRequest struct {
	code     int
	replaced bool // for a daemon that takes over (SIGUSR2)
}

func (r *stopRequest) asked() bool   { return r.code >= 0 }
func (r *stopRequest) ask(code int)  { r.code = code }
func (r *stopRequest) forSuccessor() { r.replaced, r.code = true, exitOK }

// loop runs turns until a signal or a fatal error, then cleans up.
func (d *daemon) loop() int {
	for !d.turn.stop.asked() {
		if err := d.wakeup(); err != nil {
			d.log.errorf("%v: accounting switched off, stopping", err)
			d.turn.stop.ask(exitCode(err, exitFiles))
		}
	}
	d.cleanup()
	return d.turn.stop.code
}

// wakeup is one turn of the loop: pause or wait, signals, events, copy,
// periodic work. The pause is time.Sleep, not a raw one: the runtime's
// monitor then sleeps too, and the signal goroutine runs meanwhile.
func (d *daemon) wakeup() error {
	timeout := min(d.opts.poll, d.turn.nextTick.Sub(d.turn.now), d.clients.nextGC.Sub(d.turn.now))
	pause := d.turn.pace.pause
	if d.rot.armed {
		// No pause, and a short wait: the first look with room switches
		// files (watchSuspend), and every exit until then goes unrecorded.
		timeout, pause = min(timeout, resumeLook), 0
	}
	if pause > 0 && !d.wait.polling() {
		time.Sleep(min(timeout, pause))
		timeout = 0 // then only a look
	}
	if err := d.wait.wait(timeout); err != nil {
		return err
	}
	d.turn.begin()
	if d.wait.sig.pending.Swap(false) {
		d.signalled()
		if d.turn.stop.asked() {
			return nil
		}
	}
	d.wait.count()
	d.acct.exits(d.turn.now, uint64(d.wait.events))
	if err := d.pump(); err != nil {
		return err
	}
	d.turn.pace.endTurn(d.turn.now)
	return d.periodic()
}

// signalled handles what arrived on the signal pipe.
func (d *daemon) signalled() {
	var b [16]byte
	n, _ := unix.Read(d.wait.sig.r, b[:])
	for _, s := range b[:max(n, 0)] {
		switch syscall.Signal(s) {
		case unix.SIGUSR1:
			d.log.infof("records copied %d, dropped (no clients) %d, skipped (disk full) %d; exit events %d, overruns %d; source rotations %d; current %d/%d",
				d.sh.copied, d.clients.dropped, d.disk.skippedAll, d.wait.total, d.wait.overruns, d.rot.rotations, d.sh.seq, d.sh.max)
		case unix.SIGTERM:
			d.log.noticef("SIGTERM: stopping")
			d.turn.stop.ask(exitOK)
		case unix.SIGUSR2:
			// From atopacctd --restart, which waits on the private set.
			if !d.sem.successorWaiting() {
				d.log.noticef("SIGUSR2 and no daemon waiting to take over (atopacctd --restart sends it): ignored")
				continue
			}
			d.log.noticef("SIGUSR2: stopping for the daemon taking over")
			d.turn.stop.forSuccessor()
		default:
			d.log.noticef("%s: stopping", syscall.Signal(s))
			d.turn.stop.ask(128 + int(s))
		}
	}
}

// periodic runs the once-a-second duties and the garbage collection.
func (d *daemon) periodic() error {
	if d.turn.tickDue() {
		d.checkDisk()
		free, ok := d.src.lookFree() // one look serves both watches
		d.watchSuspend(free, ok)
		what, err := d.sh.repair()
		if what != "" {
			d.log.warnf("%s was removed: recreated it (now at shadow file %d)", what, d.sh.seq)
		}
		if err != nil {
			return fail(exitFiles, err)
		}
		d.watchAccounting(free, ok)
		if d.sem.public < 0 {
			d.reclaimPublic()
		}
		d.publish()
	}
	if !d.turn.now.Before(d.clients.nextGC) {
		d.collect()
	}
	return nil
}
