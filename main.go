// main, the exit codes and the one startup sequence (run); each step is a
// duty's own (top.go, daemonize.go, start.go, sandbox.go, loop.go, stop.go).
// Speaks docs/PROTOCOL.md ("The daemon's duties", "Command line and exit codes").

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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
	o, args, top, code := validate(args, stdout, log)
	if code >= 0 {
		return code
	}
	ready := readyPipe()
	if !o.foreground && ready == nil {
		return launch(args, o, log) // the starting process
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

	// 2. Acquire, as root (start.go): semaphores, the signal pipe, source
	//    files, shadow directory (adopted from a previous daemon when
	//    provably its), netlink, PID file, accounting on, what a crashed
	//    daemon left uncopied, priority.
	if err := d.acquire(); err != nil {
		return d.abort(err)
	}

	// 3. Sandbox: CAP_SYS_PACCT alone, no_new_privs, Landlock, seccomp.
	if err := d.confine(); err != nil {
		return d.abort(err)
	}

	// 4. Ready: tell the starting process, or systemd, and log it.
	d.becomeReady()

	// 5. Loop until a signal or a fatal error; clean up (stop.go).
	return d.loop()
}

// validate is step 1: it parses the arguments, answers --help, --version
// and --status, and checks root and the top directory. It returns the
// options, the arguments with the top directory made absolute (for the
// daemon, started in "/"), the top directory's descriptor, and an exit
// code when the program is done (-1 when it goes on).
func validate(args []string, stdout io.Writer, log *logger) (o options, daemonArgs []string, top, code int) {
	o, err := parseArgs(args)
	if err != nil {
		log.errorf("%v\n%s", err, usageLine)
		return o, nil, -1, exitUsage
	}
	switch {
	case o.help:
		fmt.Fprint(stdout, helpText)
		return o, nil, -1, exitOK
	case o.version:
		fmt.Fprintf(stdout, "atopacctd %s\n", version)
		return o, nil, -1, exitOK
	case o.status:
		return o, nil, -1, printStatus(o.top, stdout)
	}
	if euid := os.Geteuid(); euid != 0 {
		log.errorf("must run as root (effective uid %d)", euid)
		return o, nil, -1, exitUsage
	}
	if o.top, err = filepath.Abs(o.top); err != nil {
		log.errorf("top directory: %v", err)
		return o, nil, -1, exitTop
	}
	if o.topArg >= 0 {
		args = slices.Clone(args)
		args[o.topArg] = o.top
	}
	if top, err = openTop(o.top); err != nil {
		log.errorf("%v", err)
		return o, nil, -1, exitTop
	}
	return o, args, top, -1
}

// launch is the starting process: it refuses early if a daemon runs
// (the count it would add dies with it: SEM_UNDO), then re-executes the
// daemon and waits for its report (daemonize). The daemon takes over from a
// running one with --restart.
func launch(args []string, o options, log *logger) int {
	if running, err := daemonRunning(); err != nil || running && !o.restart {
		if err == nil {
			err = errAlreadyRunning
		}
		log.errorf("%v", err)
		return exitRunning
	}
	return daemonize(args, log)
}
