// Starting: the privileged resources acquired in order (step 2 of run), the
// sandbox (step 3) and readiness (step 4). Every failure is undone by
// abort (stop.go).
// Speaks setpriority(2) and docs/PROTOCOL.md ("The daemon's duties").

package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// acquire is step 2, in four stages: claim (semaphores, the signal pipe),
// files (source, shadow, proc connector, PID file), switchOn (accounting on,
// what a crashed or replaced daemon left uncopied) and prepareLoop (the
// netlink probe, the loop's wait, priority, $NOTIFY_SOCKET). Between stages
// it sheds the start-up code it no longer needs from memory.
func (d *daemon) acquire() error {
	if err := d.claim(); err != nil {
		return err
	}
	old := openLeftover(d.src.top) // before files replaces their names
	defer old.close()
	if err := d.files(); err != nil {
		return err
	}
	if err := d.switchOn(&old); err != nil {
		return err
	}
	if err := d.prepareLoop(); err != nil {
		return err
	}
	d.mem.shed()
	return nil
}

// claim counts the daemon in the private semaphore set (refusing a second
// daemon, or taking over from it with --restart) and sets the public one
// up; then it opens the signal pipe.
func (d *daemon) claim() error {
	f, err := d.sem.acquire(d.opts.restart)
	if line := semLine(f); line != "" {
		d.log.noticef("%s", line)
	}
	if err != nil {
		return fail(exitRunning, err)
	}
	if f.tookOver != 0 {
		d.src.inherit() // on into the old daemon's source files
	}
	if err := d.wait.sig.open(); err != nil {
		return fail(exitFiles, err)
	}
	d.mem.mapText()
	unix.Umask(0o022)
	return nil
}

// semLine is the log line of what acquiring the semaphores found.
func semLine(f semFacts) string {
	var parts []string
	if f.forged != "" {
		parts = append(parts, fmt.Sprintf("replaced private semaphore set %d (%s): not a daemon's", privateKey, f.forged))
	}
	if f.tookOver != 0 {
		parts = append(parts, fmt.Sprintf("took over from the running daemon (pid %d) with no gap in accounting", f.tookOver))
	}
	if f.removed != (ipcSet{}) {
		parts = append(parts, fmt.Sprintf("removed public semaphore set %d of uid %d (made by uid %d)", publicKey, f.removed.uid, f.removed.cuid))
	}
	if f.adopted {
		parts = append(parts, fmt.Sprintf("adopted public semaphore set %d left by a previous daemon: %d clients registered", publicKey, f.clients))
	} else if f.notAdopted != "" {
		parts = append(parts, fmt.Sprintf("not adopting public semaphore set %d (%s): created anew", publicKey, f.notAdopted))
	}
	return strings.Join(parts, "; ")
}

// files makes the source files and the shadow directory (adopted from a
// previous daemon when provably its), opens the proc connector and writes
// the PID file, before accounting is on.
func (d *daemon) files() error {
	if err := d.src.create(); err != nil {
		return fail(exitFiles, err)
	}
	why, err := d.sh.create()
	switch {
	case d.sh.adopted:
		d.log.noticef("adopted %s left by a previous daemon: shadow files %d to %d, writing on at record %d of file %d",
			shadowDir, d.sh.oldest, d.sh.seq, d.sh.n, d.sh.seq)
	case why != "":
		d.log.noticef("not adopting %s left by a previous daemon (%s): moved aside, starting afresh", shadowDir, why)
	}
	if err != nil {
		return fail(exitFiles, err)
	}
	d.sh.setLimit(d.opts.shadowMax)
	nl, err := openProcConnector()
	if err != nil {
		d.log.warnf("proc connector unavailable (%v): polling every %s", err, d.opts.poll)
	}
	d.wait.attach(nl)
	if err := d.ready.writePid(d.opts.pidfile); err != nil {
		return fail(exitFiles, err)
	}
	return nil
}

// switchOn switches accounting on (verified by the record the kernel writes
// when it switches files), then copies what a crashed or replaced daemon
// left uncopied and what arrived between the two switches.
func (d *daemon) switchOn(old *leftover) error {
	if err := d.src.switchOn(); err != nil {
		if errors.Is(err, errFormat) {
			return fail(exitFormat, err)
		}
		return fail(exitAcct, err)
	}
	d.mem.shed()
	d.sh.setRecordSize(d.src.format.size)
	if d.sh.adopted {
		n, err := d.catchUp(old)
		if err != nil {
			return err
		}
		if n > 0 {
			d.log.noticef("copied %d records the previous daemon had left in its source files", n)
		}
	}
	if err := d.src.takeEarly(d.deliverAll); err != nil {
		return fail(exitFiles, err)
	}
	return nil
}

// prepareLoop verifies the proc connector by a real exit (polling when it
// brings none), opens the loop's wait, renices and connects to systemd.
func (d *daemon) prepareLoop() error {
	if !d.wait.polling() {
		if err := d.wait.nl.probe(); err != nil {
			d.log.warnf("%v: polling every %s", err, d.opts.poll)
			d.wait.poll()
		}
	}
	if err := d.wait.open(); err != nil {
		return fail(exitFiles, err)
	}
	if err := renice(); err != nil {
		d.log.noticef("nice -20: %v: copying at the usual priority", err)
	}
	if d.opts.foreground {
		if err := d.ready.connect(); err != nil {
			d.log.warnf("%v: systemd will not hear that the daemon is ready", err)
		}
	}
	return nil
}

// renice sets nice -20 on every thread: setpriority(2) is per thread on
// Linux, and threads started later inherit it from their creator. EACCES
// without CAP_SYS_NICE (a unit or container that withholds it).
func renice() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return os.NewSyscallError("setpriority", unix.Setpriority(unix.PRIO_PROCESS, 0, -20))
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, -20); err != nil {
				return os.NewSyscallError("setpriority", err)
			}
		}
	}
	return nil
}

// confine is step 3: the sandbox (sandbox.go), unless --no-sandbox.
func (d *daemon) confine() error {
	if d.opts.noSandbox {
		d.log.warnf("--no-sandbox: running with every capability, no seccomp filter, no Landlock")
		d.status.confined("none (--no-sandbox)")
		return nil
	}
	c := sandboxConfig{top: d.src.top, shadow: d.sh.dir, sources: d.src.fds[:], syslog: d.log.fd, netlink: -1, public: d.sem.public, pidfile: d.ready.pidfile}
	if !d.wait.polling() {
		c.netlink = d.wait.nl.fd
	}
	f, err := sandbox(c)
	if err != nil {
		return fail(exitSandbox, fmt.Errorf("sandbox: %w", err))
	}
	d.status.confined(f.String())
	var notes []string
	if f.noLandlock != nil {
		notes = append(notes, fmt.Sprintf("Landlock unavailable (%v): file access not confined", f.noLandlock))
	}
	if f.seccompLogOnly {
		notes = append(notes, "seccomp: the allow-list has not been verified on "+runtime.GOARCH+
			": calls outside it are logged by the kernel (please report them), not refused; the kill list holds")
	}
	if len(notes) > 0 {
		d.log.warnf("%s", strings.Join(notes, "; "))
	}
	return nil
}

// becomeReady is step 4: the loop's clocks start, the status is published,
// and the starting process (or systemd) hears that the daemon is ready.
func (d *daemon) becomeReady() {
	d.turn.startClock()
	d.clients.gcAt(d.turn.now.Add(d.opts.gcInterval))
	d.publish()
	d.mem.shed()
	if err := d.ready.report(exitOK, nil); err != nil {
		d.log.warnf("readiness pipe: %v: the starting process may report a failure", err)
	}
	if err := d.ready.notifyReady(); err != nil {
		d.log.warnf("%v: systemd will not hear that the daemon is ready", err)
	}
	d.log.noticef("started %s: top %s, %s, %d records per shadow file", version, d.opts.top, d.accounting(), d.opts.records)
	if len(d.opts.top) > oldAtopTop {
		d.log.warnf("top directory %s: longer than %d bytes, which atop before 2.12 cuts (its path buffers hold 128)", d.opts.top, oldAtopTop)
	}
}
