// main, the exit codes and the one startup sequence (run), with the steps it
// takes as root: the top directory, acquiring every privileged resource, and
// the cleanup that undoes them. Speaks setpriority(2) and PROTOCOL.md ("The
// daemon's duties", "C daemon's command line and exit codes").

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// version is stamped in by the Makefile (git describe).
var version = "devel"

// Exit codes; 1, 2, 3, 5 and 6 mean what they mean for the C atopacctd.
const (
	exitOK       = 0
	exitUsage    = 1 // bad arguments, not root
	exitTop      = 2 // top directory missing, not a directory, not root's, writable by others
	exitRunning  = 3 // already running, or the semaphores cannot be set up
	exitFiles    = 5 // files, directories, netlink, the daemon could not start
	exitAcct     = 6 // accounting could not be switched on
	exitFormat   = 7 // the kernel writes records in a format neither we nor atop read
	exitInternal = 8 // a bug: the daemon cleaned up and stopped
	exitSandbox  = 9 // the sandbox could not be applied (see --no-sandbox)
)

func main() {
	if len(os.Args) == 1 && os.Args[0] == probeName {
		os.Exit(0) // the startup check of the proc connector only needs this exit
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries the exit code chosen where the error happened.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func fail(code int, err error) error { return &exitError{code, err} }

// exitCode is the code err carries, or def when it carries none.
func exitCode(err error, def int) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return def
}

// run is the whole program and its one startup sequence; it returns the exit
// code. Without -f the sequence runs in two processes: the starting process
// does step 1 and then waits in daemonize for the report of step 4 (or of
// the failure before it); the daemon it re-executes in a new session does
// steps 1 to 5. With -f one process does them all.
func run(args []string, stdout, stderr io.Writer) (code int) {
	// 1. Validate: the arguments, root, the top directory (checked on the
	//    descriptor that every later file operation is relative to).
	//    Until the daemon has its own logger, errors go to stderr (the
	//    journal's stream too, under systemd).
	log := newLogger(stderr)
	o, err := parseArgs(args)
	if err != nil {
		log.errorf("%v\n%s", err, usageLine)
		return exitUsage
	}
	switch {
	case o.help:
		fmt.Fprint(stdout, helpText)
		return exitOK
	case o.version:
		fmt.Fprintf(stdout, "atopacctd %s\n", version)
		return exitOK
	case o.status:
		return printStatus(o.top, stdout)
	}
	if euid := os.Geteuid(); euid != 0 {
		log.errorf("must run as root (effective uid %d)", euid)
		return exitUsage
	}
	if o.top, err = filepath.Abs(o.top); err != nil {
		log.errorf("top directory: %v", err)
		return exitTop
	}
	if o.topArg >= 0 { // the daemon, started in "/", gets the absolute path
		args = slices.Clone(args)
		args[o.topArg] = o.top
	}
	top, err := openTop(o.top)
	if err != nil {
		log.errorf("%v", err)
		return exitTop
	}
	ready := readyPipe()
	if !o.foreground && ready == nil {
		// The starting process: refuse early if a daemon runs (the count
		// it would add dies with it: SEM_UNDO), then re-execute and wait.
		// The daemon takes over from a running one with --restart.
		if running, err := daemonRunning(); err != nil || running && !o.restart {
			if err == nil {
				err = errAlreadyRunning
			}
			log.errorf("%v", err)
			return exitRunning
		}
		return daemonize(args, log)
	}

	// From here on, the daemon process. Every failure below switches
	// accounting off and removes what was made before it returns, and so
	// does a panic.
	keep := []int{top}
	if ready != nil {
		keep = append(keep, readyFD)
	}
	closeInherited(keep)
	if !o.foreground {
		log = newLogger(nil) // syslog
		log.connect()        // the socket is made before the sandbox
	}
	runtime.GOMAXPROCS(1) // one goroutine works: fewer threads and handoffs
	d := newDaemon(o, top, log, ready)
	defer func() {
		if r := recover(); r != nil {
			code = d.abort(fail(exitInternal, fmt.Errorf("internal error: %v", r)))
		}
	}()
	if !o.noSandbox {
		if err := sandboxUsable(); err != nil {
			return d.abort(fail(exitSandbox, err))
		}
	}

	// 2. Acquire, as root: semaphores and shadow directory (adopted from a
	//    previous daemon when provably its), the signal pipe, source files,
	//    netlink, accounting on, what a crashed daemon left uncopied, PID
	//    file, priority.
	if err := d.acquire(); err != nil {
		return d.abort(err)
	}

	// 3. Sandbox: CAP_SYS_PACCT alone, no_new_privs, Landlock, seccomp.
	if err := d.confine(); err != nil {
		return d.abort(err)
	}

	// 4. Ready: tell the starting process, or systemd, and log it.
	d.becomeReady()

	// 5. Loop until a signal or a fatal error; clean up.
	return d.loop()
}

// closeInherited closes every descriptor above stderr that the caller left
// open, except keep (the top directory, the readiness pipe). The Go
// runtime's poller (an epoll and an eventfd, made when a standard stream is
// non-blocking) stays: it is the runtime's own.
func closeInherited(keep []int) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 || slices.Contains(keep, fd) {
			continue
		}
		if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link == "anon_inode:[eventpoll]" || link == "anon_inode:[eventfd]" {
			continue
		}
		unix.Close(fd)
	}
}

// maxTop is the longest top directory whose shadow file paths fit atop's
// 512-byte path buffers (PROTOCOL.md); oldAtopTop, the longest that fits
// the 128 bytes of atop before 2.12.
const (
	maxTop     = 512 - len("/"+shadowDir+"/0000000000.paf") - 1
	oldAtopTop = 128 - len("/"+shadowDir+"/0000000000.paf") - 1
)

// openTop opens the top directory without following a final symlink and
// checks it and every directory above it as OpenSSH's StrictModes does: a
// local user who can rename any of them can put a tree of their own where
// atop looks for shadow files. path is absolute.
func openTop(path string) (int, error) {
	if len(path) > maxTop {
		return -1, fmt.Errorf("top directory %.40s...: %d bytes long, atop's path buffers take at most %d", path, len(path), maxTop)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		reason := err.Error()
		var st unix.Stat_t
		switch {
		case unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
			reason = "a symbolic link"
		case errors.Is(err, unix.ENOTDIR):
			reason = "not a directory"
		}
		return -1, fmt.Errorf("top directory %s: %s", path, reason)
	}
	if err := strictTree(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// strictTree checks the directory fd (named path) and those above it, both
// the ones its name passes through (a symbolic link among them must be
// root's) and its real parents up to "/" (through ".."): each owned by
// root and not writable by group or others, unless sticky (above the top
// directory only: /tmp is fine, a top directory like it is not).
func strictTree(fd int, path string) error {
	for p := filepath.Dir(path); p != "/"; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("directory %s above the top directory: %w", p, err)
		}
		if why := strictMode(&st, true); why != "" {
			return fmt.Errorf("directory %s above the top directory %s: %s", p, path, why)
		}
	}
	dir, err := unix.Dup(fd)
	for above := false; err == nil; above = true {
		var st, up unix.Stat_t
		if err = unix.Fstat(dir, &st); err != nil {
			break
		}
		if why := strictMode(&st, above); why != "" {
			what := "top directory " + path
			if above {
				name, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", dir))
				what = fmt.Sprintf("directory %s above the top directory %s", name, path)
			}
			err = fmt.Errorf("%s: %s", what, why)
			break
		}
		parent, perr := unix.Openat(dir, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if perr == nil && unix.Fstat(parent, &up) == nil && up.Dev == st.Dev && up.Ino == st.Ino {
			unix.Close(parent)
			break // "/" is its own parent
		}
		unix.Close(dir)
		dir, err = parent, perr
	}
	unix.Close(dir)
	return err
}

// strictMode says why a directory (or a symbolic link) is not safe to
// trust, "" when it is.
func strictMode(st *unix.Stat_t, above bool) string {
	switch {
	case st.Uid != 0:
		return fmt.Sprintf("owned by uid %d, not root", st.Uid)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return "" // its mode means nothing; its directory is checked
	case st.Mode&0o022 != 0 && !(above && st.Mode&unix.S_ISVTX != 0):
		return fmt.Sprintf("writable by group or others (mode %04o)", st.Mode&0o7777)
	}
	return ""
}

// daemon owns every descriptor, buffer and counter of the running daemon,
// grouped by what owns them.
type daemon struct {
	opts options
	log  *logger

	ready readiness // daemonize.go

	// Kernel resources, acquired at start, released by cleanup.
	top int // top directory
	src *source
	sh  *shadow
	sem semaphores

	// The loop (loop.go).
	wait     waiter
	buf      []byte // source reads
	pace     pacer
	stop     stopRequest
	stats    counters
	now      time.Time
	nextTick time.Time

	clients clientWatch // clients.go
	mem     memory      // memory.go
	rot     rotation    // rotate.go

	// The accounting and disk watch (watch.go).
	acct acctWatch
	disk diskGuard

	// The status file (status.go).
	status statusFile
}

func newDaemon(o options, top int, log *logger, ready *os.File) *daemon {
	d := &daemon{opts: o, log: log, top: top, ready: newReadiness(ready), wait: newWaiter(),
		stop: stopRequest{code: -1}, src: newSource(top), sh: newShadow(top, o.records), sem: semaphores{private: -1, public: -1},
		status: newStatusFile(), mem: newMemory()}
	return d
}

// acquire is step 2, in this order: semaphores (refuses a second daemon, or
// takes over from it with --restart), the signal pipe, source files (a
// previous daemon's kept open), shadow directory, netlink, accounting on
// (verified by the record the kernel writes when it switches files), what a
// crashed or replaced daemon left uncopied and what arrived between the two
// switches, netlink verified by a real exit, the loop's wait, PID file,
// priority, $NOTIFY_SOCKET. Between stages it sheds the start-up code it no
// longer needs from memory.
func (d *daemon) acquire() error {
	note, err := d.sem.acquire(d.opts.restart)
	if note != "" {
		d.log.noticef("%s", note)
	}
	if err != nil {
		return fail(exitRunning, err)
	}
	if d.sem.tookOver {
		d.src.inherit() // on into the old daemon's source files
	}
	if err := d.wait.sig.open(); err != nil {
		return fail(exitFiles, err)
	}
	d.mem.text = textRanges()
	unix.Umask(0o022)
	old := openLeftover(d.top) // before create replaces their names
	defer old.close()
	if err := d.src.create(); err != nil {
		return fail(exitFiles, err)
	}
	note, err = d.sh.create()
	if note != "" {
		d.log.noticef("%s", note)
	}
	if err != nil {
		return fail(exitFiles, err)
	}
	nl, err := openProcConnector()
	if err != nil {
		d.log.warnf("proc connector unavailable (%v): polling every %s", err, d.opts.poll)
	}
	d.wait.attach(nl)
	if err := d.ready.writePid(d.opts.pidfile); err != nil { // before accounting is on
		return fail(exitFiles, err)
	}
	if err := d.src.switchOn(); err != nil {
		if errors.Is(err, errFormat) {
			return fail(exitFormat, err)
		}
		return fail(exitAcct, err)
	}
	d.mem.shed()
	d.sh.setRecordSize(d.src.format.size)
	d.buf = make([]byte, readRecords*d.src.format.size)
	if d.sh.adopted {
		n, err := d.catchUp(&old)
		if err != nil {
			return err
		}
		if n > 0 {
			d.log.noticef("copied %d records the previous daemon had left in its source files", n)
		}
	}
	if err := d.src.takeEarly(d.buf, d.deliverAll); err != nil {
		return fail(exitFiles, err)
	}
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
	d.mem.shed()
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
		return nil
	}
	c := sandboxConfig{top: d.top, shadow: d.sh.dir, sources: d.src.fds[:], syslog: d.log.fd, netlink: -1, public: d.sem.public, pidfile: d.ready.pidfile}
	if !d.wait.polling() {
		c.netlink = d.wait.nl.fd
	}
	note, err := sandbox(c)
	if err != nil {
		return fail(exitSandbox, fmt.Errorf("sandbox: %w", err))
	}
	if note != "" {
		d.log.warnf("%s", note)
	}
	return nil
}

// becomeReady is step 4: the loop's clocks start, the status is published,
// and the starting process (or systemd) hears that the daemon is ready.
func (d *daemon) becomeReady() {
	d.now = time.Now()
	d.nextTick, d.clients.nextGC = d.now, d.now.Add(d.opts.gcInterval)
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

// abort ends a start that failed (or a panic): it logs the error, cleans up
// (accounting off first), reports the failure to the starting process and
// returns the exit code.
func (d *daemon) abort(err error) int {
	code := exitCode(err, exitInternal)
	d.log.errorf("%v", err)
	d.cleanup()
	d.ready.report(code, err)
	return code
}

// cleanup switches accounting off first. With clients registered it hands
// the shadow files over to the next daemon (handOver), and keeps the public
// set their registrations live in; otherwise it removes the shadow files,
// current, the directory and the public set. Then the source files and the
// PID file. Accounting goes off even when the daemon believes another
// program took it: a local user can forge that belief (exits of a thread
// group's leader bring no record), and accounting left on into a file
// nobody drains grows without bound. Replaced by a daemon that waits to
// take over (--restart), it
// leaves accounting on into the source files and hands everything over. It
// is safe to call more than once.
func (d *daemon) cleanup() {
	replaced := d.stop.replaced && d.sem.successorWaiting()
	if replaced {
		// The next daemon copies on from the source files: nothing is lost
		// between the two.
		d.src.leaveOn()
		d.log.noticef("accounting left on for the daemon taking over")
	}
	if err := d.src.switchOff(); err != nil {
		d.log.errorf("%v", err)
	}
	if clients, held := d.registered(); clients != 0 || held || replaced {
		d.handOver(clients)
	} else {
		if err := d.sh.removeAll(); err != nil {
			d.log.warnf("%v", err)
		}
		if err := d.sem.removePublic(); err != nil {
			d.log.warnf("%v", err)
		}
	}
	if replaced {
		d.src.close()
	} else if err := d.src.remove(); err != nil {
		d.log.errorf("%v", err)
	}
	d.wait.close()
	d.ready.close()
}

// handOver leaves the shadow files to the next daemon, which adopts them, so
// that registered clients never see their file deleted: the records the
// kernel wrote before accounting went off are copied, the status file is
// removed and the files are closed. Nothing grows once the daemon is gone.
func (d *daemon) handOver(clients int) {
	if d.sh.dir < 0 {
		return
	}
	if d.buf != nil {
		d.now = time.Now()
		err := d.drain()
		if err == nil && d.src.switching && !d.disk.low {
			if err = d.finishRotation(); err == nil {
				err = d.drain()
			}
		}
		if err != nil {
			d.log.errorf("%v", err)
		}
		if n := d.src.backlog(); d.disk.low && n > 0 && !d.stop.replaced {
			d.log.warnf("%s: %d bytes of records held for want of space are not copied", shadowDir, n)
		}
	}
	d.status.remove(d.sh.dir)
	d.sh.close()
	d.log.noticef("%d clients registered: %s and the public semaphore set kept for the next daemon", clients, shadowDir)
}
