// The daemon's memory: the executable's pages that start-up touched are
// given back (shed), and the runtime's statistics for the status file are
// read into one preallocated buffer, so that the hot path causes no GC.
// Speaks madvise(2) (MADV_DONTNEED) and proc(5) (/proc/self/maps).

package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// memory holds the executable's read-only mappings and the buffer the
// status reads the runtime's statistics into.
type memory struct {
	text  [][2]uintptr
	stats *runtime.MemStats
}

func newMemory() memory { return memory{stats: new(runtime.MemStats)} }

// mapText finds the executable's read-only mappings (textRanges), before
// the sandbox hides /proc/self/maps.
func (m *memory) mapText() { m.text = textRanges() }

// gcCycles reads the runtime's statistics (stopping the world: one
// goroutine, microseconds) and returns the number of GC cycles.
func (m *memory) gcCycles() uint64 {
	runtime.ReadMemStats(m.stats)
	return uint64(m.stats.NumGC)
}

// textRanges returns the read-only mappings of the daemon's own executable
// (code and constants), read from /proc/self/maps before the sandbox hides it.
func textRanges() [][2]uintptr {
	exe, _ := os.Readlink("/proc/self/exe")
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil || exe == "" {
		return nil
	}
	var r [][2]uintptr
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe || strings.Contains(f[1], "w") {
			continue
		}
		var lo, hi uintptr
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err == nil {
			r = append(r, [2]uintptr{lo, hi})
		}
	}
	return r
}

// shed unmaps the pages of the executable that start-up has touched so far:
// they come back from the page cache when used. The Go runtime's start maps
// nearly the whole static binary (the kernel maps 64 KiB around every
// fault); shed between start-up steps, the resident set holds one step's
// code at a time and, once running, the loop's, not the argument parser's
// and libcap's: the peak stays near what the runtime's start alone takes.
// Each garbage collection sheds again what rarer paths paged in meanwhile.
func (m *memory) shed() {
	for _, r := range m.text {
		unix.Syscall(unix.SYS_MADVISE, r[0], r[1]-r[0], unix.MADV_DONTNEED)
	}
}
