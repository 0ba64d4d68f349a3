// The daemon: the duties it composes, each owning its state in a file of its
// own; the daemon asks them and acts on their answers.

package main

import (
	"os"
	"time"
)

// daemon owns every descriptor, buffer and counter of the running daemon,
// grouped by what owns them.
type daemon struct {
	opts options
	log  *logger

	ready readiness // daemonize.go

	// Kernel resources, acquired at start, released by cleanup.
	src *source
	sh  *shadow
	sem semaphores

	// The loop (loop.go).
	wait     waiter
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
	d := &daemon{opts: o, log: log, ready: newReadiness(ready), wait: newWaiter(),
		stop: stopRequest{code: -1}, src: newSource(top), sh: newShadow(top, o.records), sem: semaphores{private: -1, public: -1},
		status: newStatusFile(), mem: newMemory()}
	return d
}
