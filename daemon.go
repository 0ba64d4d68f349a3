// The daemon: the duties it composes, each owning its state in a file of its
// own; the daemon asks them and acts on their answers.

package main

import (
	"os"
)

// daemon composes the duties; each field is one duty's state, a kernel
// resource, or the loop's clock and counters.
type daemon struct {
	opts options
	log  *logger

	// Kernel resources, acquired at start (start.go), released by cleanup
	// (stop.go).
	src  *source    // acct.go: the source files
	sh   *shadow    // shadow.go
	sem  semaphores // sem.go
	wait waiter     // loop.go: netlink and the signal pipe

	turn turnState // loop.go: the loop's time, pace and stop

	// The duties, each in its file.
	ready   readiness   // daemonize.go
	clients clientWatch // clients.go
	rot     rotation    // rotate.go
	acct    acctWatch   // acctwatch.go
	disk    diskGuard   // disk.go
	status  statusFile  // status.go
	mem     memory      // memory.go
}

func newDaemon(o options, top int, log *logger, ready *os.File) *daemon {
	d := &daemon{opts: o, log: log, ready: newReadiness(ready), wait: newWaiter(),
		turn: turnState{stop: stopRequest{code: -1}}, src: newSource(top), sh: newShadow(top, o.records), sem: semaphores{private: -1, public: -1},
		status: newStatusFile(), mem: newMemory()}
	return d
}
