// The command line: the C daemon's form [-v | topdirectory] and the extended
// options, with the help text that lists them (README.md and atopacctd.8 list
// the same ones: TestOptionsDocumented).

package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const usageLine = "usage: atopacctd [-v | -s | -f] [--pidfile PATH] [--records N] [--source-max BYTES] [--gc-interval DURATION] [--poll DURATION] [--reclaim DURATION] [--backlog BYTES] [--shadow-max BYTES] [--restart] [--no-sandbox] [topdirectory]"

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
  --backlog BYTES          while the shadow file system is nearly full, keep up to this
                           much in the source file to copy later (default 4194304)
  --shadow-max BYTES       the shadow files take at most this much: beyond it the oldest
                           are removed even while a client reads them (default: a tenth
                           of the top directory's file system)
  --restart                take over from the running daemon with no gap in accounting:
                           it stops leaving accounting on, this one copies on from where
                           it stopped (no daemon running: an ordinary start)
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
	topArg                      int // index of the top directory in the arguments, -1 for the default
	version, foreground, status bool
	help, noSandbox, restart    bool
	pidfile                     string
	records, sourceMax, backlog int64
	shadowMax                   int64 // 0: shadowMaxPart of the file system
	gcInterval, poll, reclaim   time.Duration
}

// parseArgs reads the compatible form [-v | topdirectory] and the extended one.
func parseArgs(args []string) (options, error) {
	o := options{pidfile: "/run/atopacctd.pid", records: 10000, sourceMax: 1 << 20, backlog: 4 << 20,
		gcInterval: 60 * time.Second, poll: time.Second, reclaim: time.Hour}
	var tops []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			for i++; i < len(args); i++ {
				tops, o.topArg = append(tops, args[i]), i
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			tops, o.topArg = append(tops, a), i
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
		if known, err := o.set(name, value); !known {
			return o, fmt.Errorf("%s: unknown option", shown(a))
		} else if err != nil {
			return o, err
		}
		if hasVal && !strings.HasPrefix(name, "--") || hasVal && !takesValue(name) {
			return o, fmt.Errorf("%s: takes no value", shown(name))
		}
	}
	return o, o.setTop(tops)
}

// set sets the option name, taking its value from value when it has one;
// known is false for a name that is no option.
func (o *options) set(name string, value func() (string, error)) (known bool, err error) {
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
	case "--restart":
		o.restart = true
	case "--pidfile":
		o.pidfile, err = value()
	case "--records":
		o.records, err = positive(name, value)
	case "--source-max":
		o.sourceMax, err = positive(name, value)
	case "--backlog":
		o.backlog, err = positive(name, value)
	case "--shadow-max":
		o.shadowMax, err = positive(name, value)
	case "--gc-interval":
		o.gcInterval, err = duration(name, value, false)
	case "--poll":
		o.poll, err = duration(name, value, false)
	case "--reclaim":
		o.reclaim, err = duration(name, value, true)
	default:
		return false, nil
	}
	return true, err
}

// setTop takes the top directory from the positional arguments: at most
// one, "/run" when none.
func (o *options) setTop(tops []string) error {
	switch {
	case len(tops) > 1:
		return fmt.Errorf("%s: only one top directory may be given (already %s)", shown(tops[1]), shown(tops[0]))
	case len(tops) == 1 && tops[0] == "":
		return errors.New(`"": an empty top directory`)
	case len(tops) == 1:
		o.top = tops[0]
	default:
		o.top, o.topArg = "/run", -1
	}
	return nil
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
	case "--pidfile", "--records", "--source-max", "--backlog", "--shadow-max", "--gc-interval", "--poll", "--reclaim":
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
