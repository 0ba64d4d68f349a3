// atopacctd: copies the kernel's process accounting records into
// size-limited shadow files for atop and other clients.
// This file: the command line, the startup order, daemonizing and readiness,
// signals, and the main loop. Speaks setsid(2), setpriority(2), poll(2),
// sd_notify(3) (READY=1 over $NOTIFY_SOCKET) and PROTOCOL.md.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
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

const (
	readyFDEnv    = "ATOPACCTD_READY_FD"   // set in the re-executed daemon: its readiness pipe
	probeEnv      = "ATOPACCTD_EXIT_PROBE" // set in the child whose exit checks the proc connector
	readyLine     = "ready"
	tick          = time.Second // status, disk guard and repairs happen at most this often
	lostAfter     = 3 * time.Second
	coalesce      = 10 * time.Millisecond // the first pause when exits come together
	stormCoalesce = 25 * time.Millisecond // the pause while a storm lasts: the longest records wait
	readyWait     = 30 * time.Second
	probeWait     = time.Second
)

const usageLine = "usage: atopacctd [-v | -s | -f] [--pidfile PATH] [--records N] [--source-max BYTES] [--gc-interval DURATION] [--poll DURATION] [--reclaim DURATION] [--no-sandbox] [topdirectory]"

const helpText = usageLine + `

Copies every process accounting record into shadow files under
TOPDIRECTORY/pacct_shadow.d (default top directory /run) for atop.

  -v, -V, --version        print the version, exit 0
  -f, --foreground         do not daemonize; log to stderr; still write the PID file;
                           send READY=1 to $NOTIFY_SOCKET when set (systemd Type=notify)
  --pidfile PATH           default /run/atopacctd.pid; empty string = no PID file
  --records N              records per shadow file (default 10000; written into current)
  --source-max BYTES       rotate the source file at this size (default 1048576)
  --gc-interval DURATION   garbage-collection interval (default 60s)
  --poll DURATION          polling interval when netlink is unavailable (default 1s)
  --reclaim DURATION       when another program has taken process accounting, take
                           it back after this long (default 1h; 0 = never)
  -s, --status             print the state of the daemon serving topdirectory, exit 0
                           (1 if none runs); works for non-root users too
  --no-sandbox             for debugging only: keep every capability, no seccomp
                           filter, no Landlock (by default a sandbox that cannot be
                           applied is fatal, exit 9)
  -h, --help               print this help, exit 0

Exit codes: 0 ok, 1 usage or not root, 2 top directory, 3 already running or
semaphores, 5 files, directories or start-up, 6 accounting could not be switched
on, 7 unknown accounting record format, 8 internal error, 9 sandbox failed;
a signal: 128+signal (SIGTERM: 0).
`

type options struct {
	top                         string
	version, foreground, status bool
	help, noSandbox             bool
	pidfile                     string
	records, sourceMax          int64
	gcInterval, poll, reclaim   time.Duration
}

// parseArgs reads the compatible form [-v | topdirectory] and the extended one.
func parseArgs(args []string) (options, error) {
	o := options{pidfile: "/run/atopacctd.pid", records: 10000, sourceMax: 1 << 20,
		gcInterval: 60 * time.Second, poll: time.Second, reclaim: time.Hour}
	var tops []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			tops = append(tops, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			tops = append(tops, a)
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		value := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s: needs a value", shown(name))
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "-v", "-V", "--version":
			o.version = true
		case "-f", "--foreground":
			o.foreground = true
		case "-s", "--status":
			o.status = true
		case "-h", "--help":
			o.help = true
		case "--no-sandbox":
			o.noSandbox = true
		case "--pidfile":
			o.pidfile, err = value()
		case "--records":
			o.records, err = positive(name, value)
		case "--source-max":
			o.sourceMax, err = positive(name, value)
		case "--gc-interval":
			o.gcInterval, err = duration(name, value, false)
		case "--poll":
			o.poll, err = duration(name, value, false)
		case "--reclaim":
			o.reclaim, err = duration(name, value, true)
		default:
			return o, fmt.Errorf("%s: unknown option", shown(a))
		}
		if err != nil {
			return o, err
		}
		if hasVal && !strings.HasPrefix(name, "--") || hasVal && !takesValue(name) {
			return o, fmt.Errorf("%s: takes no value", shown(name))
		}
	}
	switch {
	case len(tops) > 1:
		return o, fmt.Errorf("%s: only one top directory may be given (already %s)", shown(tops[1]), shown(tops[0]))
	case len(tops) == 1 && tops[0] == "":
		return o, errors.New(`"": an empty top directory`)
	case len(tops) == 1:
		o.top = tops[0]
	default:
		o.top = "/run"
	}
	return o, nil
}

// shown quotes an argument that would not print as itself on one line, or
// at all (the empty string).
func shown(s string) string {
	if q := strconv.Quote(s); q[1:len(q)-1] != s || s == "" {
		return q
	}
	return s
}

func takesValue(name string) bool {
	switch name {
	case "--pidfile", "--records", "--source-max", "--gc-interval", "--poll", "--reclaim":
		return true
	}
	return false
}

func positive(name string, value func() (string, error)) (int64, error) {
	s, err := value()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive integer", name, s)
	}
	return n, nil
}

func duration(name string, value func() (string, error), zeroOK bool) (time.Duration, error) {
	s, err := value()
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d == 0 && !zeroOK {
		return 0, fmt.Errorf("%s: %q is not a positive duration (e.g. 500ms, 60s)", name, s)
	}
	return d, nil
}

func main() {
	if os.Getenv(probeEnv) != "" {
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

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// 1. Arguments; root. Until the daemon has its own logger, errors go
	//    to stderr (the journal's stream too, under systemd).
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

	// 2. The top directory, checked on the descriptor every later file
	//    operation is relative to.
	top, err := openTop(o.top)
	if err != nil {
		log.errorf("%v", err)
		return exitTop
	}
	ready := readyPipe()

	// 3. Semaphores. The starting process of a daemonizing run only checks
	//    that no daemon runs: the count it would add dies with it (SEM_UNDO).
	if !o.foreground && ready == nil {
		if running, err := daemonRunning(); err != nil || running {
			if err == nil {
				err = errAlreadyRunning
			}
			log.errorf("%v", err)
			return exitRunning
		}
		// 4. Daemonize: re-execute in a new session; report its readiness.
		return daemonize(args, log)
	}
	if !o.foreground {
		log = newLogger(nil) // syslog
	}
	return newDaemon(o, top, log).run(ready)
}

// openTop opens the top directory without following a final symlink and
// checks it: a directory, owned by root, not writable by group or others.
func openTop(path string) (int, error) {
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
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("top directory %s: %w", path, os.NewSyscallError("fstat", err))
	}
	switch {
	case st.Uid != 0:
		err = fmt.Errorf("top directory %s: owned by uid %d, not root", path, st.Uid)
	case st.Mode&0o022 != 0:
		err = fmt.Errorf("top directory %s: writable by group or others (mode %04o)", path, st.Mode&0o7777)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// readyPipe returns the readiness pipe of a re-executed daemon, else nil.
func readyPipe() *os.File {
	s := os.Getenv(readyFDEnv)
	if s == "" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "readiness pipe")
}

// daemonize starts the daemon in a new session and waits until it reports
// ready (exit 0) or fails (its exit code and error line); it never hangs.
func daemonize(args []string, log *logger) int {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	r, w, err := os.Pipe()
	if err != nil {
		log.errorf("readiness pipe: %v", err)
		return exitFiles
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		log.errorf("%v", err)
		return exitFiles
	}
	p, err := os.StartProcess(exe, append([]string{"atopacctd"}, args...), &os.ProcAttr{
		Dir: "/", Env: append(os.Environ(), readyFDEnv+"=3"), Files: []*os.File{null, null, null, w},
		Sys: &syscall.SysProcAttr{Setsid: true}})
	null.Close()
	w.Close()
	if err != nil {
		log.errorf("start daemon %s: %v", exe, err)
		return exitFiles
	}
	r.SetReadDeadline(time.Now().Add(readyWait))
	line, err := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSuffix(line, "\n")
	if line == readyLine {
		return exitOK
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		p.Kill()
		p.Wait()
		log.errorf("daemon (pid %d) not ready after %s: killed", p.Pid, readyWait)
		return exitFiles
	}
	st, _ := p.Wait()
	if codeStr, msg, ok := strings.Cut(line, " "); ok {
		if code, err := strconv.Atoi(codeStr); err == nil {
			log.errorf("%s", msg)
			return code
		}
	}
	code := st.ExitCode()
	log.errorf("daemon exited before it was ready (%s)", st)
	if code <= 0 {
		code = exitFiles
	}
	return code
}

// daemon owns every descriptor, buffer and counter of the running daemon.
type daemon struct {
	opts     options
	log      *logger
	top      int
	src      *source
	sh       *shadow
	sem      semaphores
	nl       *procConn // nil while polling
	buf      []byte    // source reads
	sigr     int       // signal pipe, read end
	sigw     int
	pfds     [2]unix.PollFd
	timeout  unix.Timespec
	stats    counters
	stopCode int    // exit code once a signal asked to stop, else -1
	turn     uint64 // records read in this turn of the loop
	held     bool   // this turn began with a coalescing pause

	now, nextTick, nextGC, rotateRetry time.Time

	diskLow    bool   // shadow file system below 5 % free: records are skipped
	skipRun    uint64 // records skipped since diskLow
	unmatched  uint64 // exit events since the last record arrived
	since      time.Time
	grace      time.Time // no verdict on missing records before this
	state      int       // acctOn, acctLost or acctSuspended
	lostAt     time.Time
	limits     acctLimits
	srcUnnamed bool // a source file's name was removed

	status     [2][]byte // published, being built
	statusName []byte
	pidWritten bool
	mem        *runtime.MemStats // for the status: the hot path must cause no GC
	text       [][2]uintptr      // the executable's read-only pages (shed)
}

func newDaemon(o options, top int, log *logger) *daemon {
	d := &daemon{opts: o, log: log, top: top, sigr: -1, sigw: -1, stopCode: -1,
		src: newSource(top), sh: newShadow(top, o.records), sem: semaphores{private: -1, public: -1},
		statusName: cstr(statusName)}
	d.mem = new(runtime.MemStats)
	d.status[0] = make([]byte, 0, 1024)
	d.status[1] = make([]byte, 0, 1024)
	return d
}

// start runs startup steps 3 to 7 in the daemon process. Every failure
// cleans up (accounting off, files removed) before it returns its code.
func (d *daemon) start(ready *os.File) (code int) {
	defer func() {
		if code != exitOK {
			d.cleanup()
		}
	}()
	report := func(err error) int {
		code := exitCode(err, exitInternal)
		d.log.errorf("%v", err)
		if ready != nil {
			fmt.Fprintf(ready, "%d %v\n", code, err)
			ready.Close()
		}
		return code
	}
	if err := d.startup(); err != nil {
		return report(err)
	}
	if ready != nil {
		fmt.Fprintln(ready, readyLine)
		ready.Close()
	}
	d.log.noticef("started %s: top %s, %s, %d records per shadow file", version, d.opts.top, d.accounting(), d.opts.records)
	return exitOK
}

// startup is the daemon's side of the startup order.
func (d *daemon) startup() error {
	runtime.GOMAXPROCS(1) // one goroutine works: fewer threads and handoffs, sandboxed or not
	if !d.opts.noSandbox {
		if err := sandboxUsable(); err != nil {
			return fail(exitSandbox, err)
		}
	}
	// 3. Semaphores: count this daemon, create the public set anew.
	if err := d.sem.acquire(); err != nil {
		return fail(exitRunning, err)
	}
	d.signals()

	// 5. Source file, shadow directory, first shadow file, current.
	d.text = textRanges() // start-up code is shed from memory stage by stage
	unix.Umask(0o022)
	if err := d.src.create(); err != nil {
		return fail(exitFiles, err)
	}
	d.limits = readAcctLimits()
	if err := d.sh.create(); err != nil {
		return fail(exitFiles, err)
	}

	// 6. Netlink, then accounting on, verified by the record the kernel
	//    writes when it switches files, then netlink verified by a real exit.
	nl, err := openProcConnector()
	if err != nil {
		d.log.warnf("proc connector unavailable (%v): polling every %s", err, d.opts.poll)
	}
	d.nl = nl
	if err := d.src.switchOn(); err != nil {
		if errors.Is(err, errFormat) {
			return fail(exitFormat, err)
		}
		return fail(exitAcct, err)
	}
	d.shed()
	d.sh.recSize = d.src.format.size
	d.buf = make([]byte, readRecords*d.src.format.size)
	if d.nl != nil {
		if err := d.checkEvents(); err != nil {
			d.log.warnf("%v: polling every %s", err, d.opts.poll)
			d.nl.close()
			d.nl = nil
		}
	}

	// 7. PID file and priority, the last privileged steps; then the
	//    sandbox; readiness (the caller reports it) and the loop.
	if err := d.writePidfile(); err != nil {
		return fail(exitFiles, err)
	}
	if err := renice(); err != nil {
		d.log.noticef("nice -20: %v: copying at the usual priority", err)
	}
	d.shed()
	notify := notifySocket(d.opts.foreground)
	if d.opts.noSandbox {
		d.log.warnf("--no-sandbox: running with every capability, no seccomp filter, no Landlock")
	} else {
		note, err := sandbox(sandboxConfig{top: d.top, sources: d.src.fds[:], pidfile: d.opts.pidfile})
		if err != nil {
			return fail(exitSandbox, fmt.Errorf("sandbox: %w", err))
		}
		if note != "" {
			d.log.warnf("%s", note)
		}
	}
	d.now = time.Now()
	d.nextTick, d.nextGC = d.now, d.now.Add(d.opts.gcInterval)
	d.publish()
	d.shed()
	if notify >= 0 {
		unix.Write(notify, []byte("READY=1"))
		unix.Close(notify)
	}
	return nil
}

// checkEvents starts a child that exits at once and waits for its exit event:
// a subscription can be accepted and still deliver nothing (new pid namespace).
func (d *daemon) checkEvents() error {
	p, err := os.StartProcess("/proc/self/exe", []string{"atopacctd"}, &os.ProcAttr{Env: []string{probeEnv + "=1"}})
	if err != nil {
		return fmt.Errorf("start exit probe: %w", err)
	}
	defer p.Wait()
	d.nl.watch, d.nl.seen = uint32(p.Pid), false
	deadline := time.Now().Add(probeWait)
	for !d.nl.seen {
		left := time.Until(deadline)
		if left <= 0 {
			return errNoEvents
		}
		fds := []unix.PollFd{{Fd: int32(d.nl.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return os.NewSyscallError("poll", err)
		}
		if _, _, err := d.nl.drain(); err != nil {
			return err
		}
	}
	return nil
}

// signals routes SIGTERM, SIGINT, SIGQUIT and SIGUSR1 into a pipe that the
// loop polls; SIGHUP is ignored.
func (d *daemon) signals() {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return
	}
	d.sigr, d.sigw = p[0], p[1]
	signal.Ignore(unix.SIGHUP)
	c := make(chan os.Signal, 8)
	signal.Notify(c, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1)
	go func(w int) {
		for s := range c {
			unix.Write(w, []byte{byte(s.(syscall.Signal))})
		}
	}(d.sigw)
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

// notifySocket connects to $NOTIFY_SOCKET (systemd Type=notify) in the
// foreground, before the sandbox; READY=1 is sent through it once ready.
func notifySocket(foreground bool) int {
	path := os.Getenv("NOTIFY_SOCKET")
	if !foreground || path == "" {
		return -1
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

func (d *daemon) writePidfile() error {
	if d.opts.pidfile == "" {
		return nil
	}
	data := strconv.Itoa(os.Getpid()) + "\n"
	fd, err := unix.Open(d.opts.pidfile, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err == nil {
		_, err = unix.Write(fd, []byte(data))
		unix.Close(fd)
	}
	if err != nil {
		return fmt.Errorf("PID file %s: %w", d.opts.pidfile, err)
	}
	d.pidWritten = true
	return nil
}

// What the daemon knows of process accounting, from exit events that bring
// no record (only with the proc connector: polling sees no exits).
const (
	acctOn        = iota
	acctLost      // another program called acct(2): records go elsewhere
	acctSuspended // the kernel stopped writing: its file system is nearly full
)

// accounting names the state shown by --status.
func (d *daemon) accounting() string {
	switch {
	case d.state == acctLost:
		return "lost"
	case d.state == acctSuspended:
		return "suspended"
	case d.nl == nil:
		return "polling"
	}
	return "on"
}

// loop waits for exit events, signals or the next deadline, and copies.
func (d *daemon) loop() int {
	d.pfds[0] = unix.PollFd{Fd: int32(d.sigr), Events: unix.POLLIN}
	n := 1
	if d.nl != nil {
		d.pfds[1] = unix.PollFd{Fd: int32(d.nl.fd), Events: unix.POLLIN}
		n = 2
	}
	for d.stopCode < 0 {
		if err := d.wakeup(n); err != nil {
			d.log.errorf("%v: accounting switched off, stopping", err)
			d.stopCode = exitCode(err, exitFiles)
		}
	}
	d.cleanup()
	return d.stopCode
}

// wakeup is one turn of the loop: poll, signals, events, copy, periodic work.
func (d *daemon) wakeup(nfds int) error {
	timeout := d.opts.poll
	if t := d.nextTick.Sub(d.now); t < timeout {
		timeout = t
	}
	if t := d.nextGC.Sub(d.now); t < timeout {
		timeout = t
	}
	// Coalescing: when the last turn found several records, a storm may be
	// on: let its exits gather for coalesce instead of waking for each (a
	// lone exit is still copied at once); when the pause gathered several
	// again, the storm lasts: pause longer. Each turn costs about the same
	// whatever it copies, so under a storm the daemon's CPU falls with the
	// pause (100,000 exits from two workers cost it 7-9 clock ticks with
	// 10 ms, 5-6 with 25 ms, 3-4 with 50 ms), while two exits that merely
	// met never delay a third by more than coalesce. time.Sleep, not a raw
	// pause: the runtime's monitor then sleeps too, and the signal goroutine
	// runs meanwhile.
	hold := d.turn >= 2 && nfds > 1
	if hold {
		pause := coalesce
		if d.held {
			pause = stormCoalesce
		}
		time.Sleep(min(timeout, pause))
		nfds, timeout = 1, 0 // then only a look at the signal pipe
	}
	d.held = hold
	d.pfds[1].Revents = 0
	d.timeout = unix.NsecToTimespec(int64(max(timeout, 0)))
	if _, err := unix.Ppoll(d.pfds[:nfds], &d.timeout, nil); err != nil && err != unix.EINTR {
		return os.NewSyscallError("ppoll", err)
	}
	d.now, d.turn = time.Now(), 0
	if d.pfds[0].Revents != 0 {
		d.signalled()
		if d.stopCode >= 0 {
			return nil
		}
	}
	if d.nl != nil && (hold || d.pfds[1].Revents != 0) {
		events, overrun, err := d.nl.drain()
		if err != nil {
			return err
		}
		if overrun {
			d.stats.overruns++
		}
		if events > 0 && d.unmatched == 0 {
			d.since = d.now
		}
		d.stats.events += uint64(events)
		d.unmatched += uint64(events)
	}
	if err := d.pump(); err != nil {
		return err
	}
	return d.periodic()
}

// signalled handles what arrived on the signal pipe.
func (d *daemon) signalled() {
	var b [16]byte
	n, _ := unix.Read(d.sigr, b[:])
	for _, s := range b[:max(n, 0)] {
		switch syscall.Signal(s) {
		case unix.SIGUSR1:
			d.log.infof("records copied %d, dropped (no clients) %d, skipped (disk full) %d; exit events %d, overruns %d; source rotations %d; current %d/%d",
				d.stats.copied, d.stats.dropped, d.stats.skipped, d.stats.events, d.stats.overruns, d.stats.rotations, d.sh.seq, d.sh.max)
		case unix.SIGTERM:
			d.log.noticef("SIGTERM: stopping")
			d.stopCode = exitOK
		default:
			d.log.noticef("%s: stopping", syscall.Signal(s))
			d.stopCode = 128 + int(s)
		}
	}
}

// run starts the daemon and runs its loop; a panic still switches
// accounting off and removes the files before the process ends.
func (d *daemon) run(ready *os.File) (code int) {
	defer func() {
		if r := recover(); r != nil {
			d.log.errorf("internal error: %v: accounting switched off, stopping", r)
			d.cleanup()
			code = exitInternal
		}
	}()
	if code := d.start(ready); code != exitOK {
		return code
	}
	return d.loop()
}

// pump copies what the source file holds now, then rotates it if it is full.
func (d *daemon) pump() error {
	if err := d.drain(false); err != nil {
		return err
	}
	if d.src.off < d.opts.sourceMax || d.now.Before(d.rotateRetry) {
		return nil
	}
	return d.rotate()
}

// drain copies records from the source file until its end; dropSelf leaves
// out the records about the daemon itself.
func (d *daemon) drain(dropSelf bool) error {
	for {
		raw, err := d.src.read(d.buf)
		if err != nil {
			return fail(exitFiles, err)
		}
		recs := raw
		if dropSelf {
			recs = d.src.dropSelf(raw)
		}
		if len(recs) > 0 {
			if err := d.deliver(recs); err != nil {
				return err
			}
		}
		if len(raw) < len(d.buf) {
			return nil
		}
	}
}

// rotate switches the kernel to a fresh source file and drains the old one
// to its end, without the record the switch wrote about the daemon itself.
func (d *daemon) rotate() error {
	if err := d.src.beginSwitch(); err != nil {
		d.log.warnf("%v: keeping the old source file, retrying in %s", err, tick)
		d.rotateRetry = d.now.Add(tick)
		return nil
	}
	if err := d.drain(true); err != nil {
		return err
	}
	switch err := d.src.finishSwitch(); {
	case errors.Is(err, unix.ENOENT):
		// Landlock lets no new source file be made; the open ones serve.
		if !d.srcUnnamed {
			d.srcUnnamed = true
			d.log.warnf("%v: a source file was removed; carrying on with the open files", err)
		}
	case err != nil:
		return fail(exitFiles, err)
	}
	d.stats.rotations++
	return nil
}

// deliver copies records to the shadow files when a client may want them;
// it drops them when none can, and skips them while the disk is nearly full.
func (d *daemon) deliver(recs []byte) error {
	n := uint64(len(recs) / d.src.format.size)
	d.turn += n
	d.unmatched = 0
	if d.state != acctOn {
		d.state = acctOn
		d.log.noticef("accounting records arrive again")
	}
	want, err := d.clientsPresent()
	if err != nil {
		return fail(exitRunning, err)
	}
	switch {
	case !want:
		d.stats.dropped += n
		return nil
	case d.diskLow:
		d.stats.skipped += n
		d.skipRun += n
		return nil
	}
	written, err := d.sh.write(recs)
	d.stats.copied += uint64(written)
	if errors.Is(err, errDiskFull) {
		d.stats.skipped += n - uint64(written)
		d.skipRun = n - uint64(written)
		d.diskLow = true
		d.log.warnf("%s: %v: skipping records", shadowDir, err)
		return nil
	}
	if err != nil {
		return fail(exitFiles, err)
	}
	return nil
}

// clientsPresent decides whether records are copied. One GETALL answers while
// clients exist or one is attaching (the lock is taken); only when the lock is
// free and no client counts does the daemon take the lock, look again and
// reset the shadow files to their client-less state.
func (d *daemon) clientsPresent() (bool, error) {
	clients, lockFree, err := d.sem.values()
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
		// Someone removed the public set (ipcrm): clients can no longer
		// find the daemon. Create it anew; until one registers, none exist.
		d.log.warnf("public semaphore set %d removed: creating it anew", publicKey)
		return false, d.sem.createPublic()
	}
	if err != nil {
		return false, err
	}
	if clients > 0 || !lockFree {
		return true, nil
	}
	if d.sh.empty() {
		return false, nil
	}
	locked, err := d.sem.tryLock()
	if err != nil || !locked {
		return true, err
	}
	clients, _, err = d.sem.values()
	if err == nil && clients == 0 {
		err = d.sh.reset()
	}
	if uerr := d.sem.unlock(); err == nil {
		err = uerr
	}
	return clients > 0, err
}

// periodic runs the once-a-second duties and the garbage collection.
func (d *daemon) periodic() error {
	if !d.now.Before(d.nextTick) {
		d.nextTick = d.now.Add(tick)
		d.checkDisk()
		what, err := d.sh.repair()
		if what != "" {
			d.log.warnf("%s was removed: recreated it (now at shadow file %d)", what, d.sh.seq)
		}
		if err != nil {
			return fail(exitFiles, err)
		}
		d.watchAccounting()
		d.publish()
	}
	if !d.now.Before(d.nextGC) {
		d.collect()
	}
	return nil
}

// watchAccounting tells, from exits that bring no record, whether another
// program has taken process accounting (lost) or the kernel suspended it for
// want of space (suspended); it takes accounting back --reclaim after it was
// lost, never while suspended: the kernel resumes by itself.
func (d *daemon) watchAccounting() {
	starved := d.unmatched >= 3 && d.now.Sub(d.since) >= lostAfter && !d.now.Before(d.grace)
	switch {
	case d.state == acctSuspended:
		if !d.suspended() {
			// The kernel looks at the space again within its interval.
			d.state, d.unmatched, d.grace = acctOn, 0, d.now.Add(d.limits.check)
			d.log.noticef("%s: %d%% free again: the kernel resumes accounting within %s", d.opts.top, d.limits.resume, d.limits.check)
		}
	case !starved:
	case d.suspended():
		d.state = acctSuspended
		d.log.warnf("%s: less than %d%% free: the kernel suspended process accounting (it does at %d%%, resumes at %d%%: /proc/sys/kernel/acct)",
			d.opts.top, d.limits.resume, d.limits.suspend, d.limits.resume)
	case d.state == acctOn:
		d.state, d.lostAt = acctLost, d.now
		then := "never taking it back (--reclaim 0)"
		if d.opts.reclaim > 0 {
			then = "taking it back in " + d.opts.reclaim.String()
		}
		d.log.warnf("%d exits without an accounting record in %s: another program has taken process accounting; %s", d.unmatched, d.now.Sub(d.since).Round(time.Second), then)
	case d.opts.reclaim > 0 && d.now.Sub(d.lostAt) >= d.opts.reclaim:
		d.lostAt = d.now // the next try, if this one fails
		if err := d.src.reclaim(); err != nil {
			d.log.warnf("%v: trying again in %s", err, d.opts.reclaim)
			return
		}
		d.state, d.unmatched = acctOn, 0
		d.log.noticef("took process accounting back after %s (--reclaim)", d.opts.reclaim)
	}
}

// suspended reports whether the kernel may hold accounting suspended: the
// top directory's file system is below the level at which it resumes.
func (d *daemon) suspended() bool {
	below, _ := freeBelow(d.top, d.limits.resume)
	return below
}

// freeBelow reports whether the file system of fd has less than pct % of its
// blocks free, as the kernel counts them; ok is false when it cannot tell.
func freeBelow(fd int, pct int64) (below, ok bool) {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil || st.Blocks == 0 {
		return false, false
	}
	return uint64(st.Bavail)*100 < uint64(st.Blocks)*uint64(pct), true
}

// checkDisk is the disk guard: below 5 % free blocks on the shadow file
// system, records are skipped; it logs when skipping starts and ends.
func (d *daemon) checkDisk() {
	low, ok := freeBelow(d.sh.dir, 5)
	if !ok {
		return
	}
	switch {
	case low && !d.diskLow:
		d.diskLow, d.skipRun = true, 0
		d.log.warnf("%s: less than 5%% of the file system free: skipping records", shadowDir)
	case !low && d.diskLow:
		d.diskLow = false
		d.log.noticef("%s: space available again: copying resumed, %d records skipped", shadowDir, d.skipRun)
	}
}

// collect removes unused shadow files under the public lock, so that a
// client between reading current and locking its file is never robbed.
func (d *daemon) collect() {
	locked, err := d.sem.tryLock()
	if err != nil || !locked {
		d.nextGC = d.now.Add(tick) // a client is attaching: try again soon
		return
	}
	removed, err := d.sh.collect()
	d.sem.unlock()
	d.nextGC = d.now.Add(d.opts.gcInterval)
	if err != nil {
		d.log.warnf("garbage collection: %v", err)
	}
	if removed > 0 {
		d.log.infof("removed %d unused shadow files", removed)
	}
	d.shed() // what rare paths paged in since: the resident set stays the loop's
}

// cleanup switches accounting off first, then removes what this daemon
// made: source, shadow files, current, the directory, the public set, the
// PID file. It is safe to call more than once.
func (d *daemon) cleanup() {
	if d.state == acctLost && d.src.on {
		// Switching off now would stop the other program's accounting.
		d.src.on = false
		d.log.noticef("leaving process accounting to the program that took it")
	}
	if err := d.src.remove(); err != nil {
		d.log.errorf("%v", err)
	}
	if err := d.sh.removeAll(); err != nil {
		d.log.warnf("%v", err)
	}
	d.sem.removePublic()
	d.nl.close()
	d.nl = nil
	if d.pidWritten {
		d.pidWritten = false
		if b, err := os.ReadFile(d.opts.pidfile); err == nil && string(b) == strconv.Itoa(os.Getpid())+"\n" {
			os.Remove(d.opts.pidfile)
		}
	}
}
