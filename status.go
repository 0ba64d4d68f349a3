// The daemon's published state and --status.
// The daemon rewrites TOP/pacct_shadow.d/status (0644, "key: value" lines,
// ignored by atop) at most once a second when it changed; --status reads it,
// and the public semaphore for the live client count, as any user.

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	statusName = "status"
	pidKey     = "pid: "
	startKey   = "start time: " // the daemon's, in clock ticks after boot (proc(5))
)

// appendStatus formats the status file into b without allocating.
func (d *daemon) appendStatus(b []byte) []byte {
	line := func(b []byte, key string, v uint64) []byte {
		b = append(b, key...)
		b = strconv.AppendUint(b, v, 10)
		return append(b, '\n')
	}
	b = line(b, pidKey, uint64(d.log.pid))
	b = append(b, "top: "...)
	b = append(b, d.opts.top...)
	b = append(b, "\ncurrent: "...)
	b = formatCurrent(b, d.sh.seq, d.sh.max)
	b = append(b, "\nshadow files: "...)
	files, size := d.sh.usage()
	b = strconv.AppendInt(b, files, 10)
	b = append(b, " ("...)
	b = strconv.AppendInt(b, size, 10)
	b = append(b, " bytes, at most "...)
	b = strconv.AppendInt(b, d.sh.limit, 10)
	b = append(b, ")\nsource: "...)
	b = strconv.AppendInt(b, d.src.size(), 10)
	b = append(b, " bytes\nbacklog (held for want of space): "...)
	held := int64(0)
	if d.disk.low {
		held = d.src.backlog()
	}
	b = strconv.AppendInt(b, held, 10)
	b = append(b, " bytes\naccounting: "...)
	b = append(b, d.accounting()...)
	b = append(b, '\n')
	b = line(b, "records copied: ", d.sh.copied)
	b = line(b, "records dropped (no clients): ", d.clients.dropped)
	b = line(b, "records skipped (disk full): ", d.disk.skippedAll)
	b = line(b, "exit events: ", d.wait.total)
	b = line(b, "event overruns: ", d.wait.overruns)
	b = line(b, "log lines dropped: ", d.log.dropped)
	b = line(b, "gc cycles: ", d.mem.gcCycles())
	b = line(b, "goroutines: ", uint64(runtime.NumGoroutine()))
	b = line(b, "source rotations: ", d.rot.rotations)
	b = append(b, "sandbox: "...)
	b = append(b, d.status.sandbox...)
	b = append(b, '\n')
	return line(b, startKey, d.status.started)
}

// statusFile is the status file's name and its content as published and
// as being built: rewriting it allocates nothing.
type statusFile struct {
	name      []byte
	published []byte
	next      []byte

	started uint64 // the daemon's start time, by which --status identifies it
	sandbox string // what confines the daemon
}

func newStatusFile() statusFile {
	return statusFile{name: cstr(statusName), published: make([]byte, 0, 1024), next: make([]byte, 0, 1024),
		started: procStart("self"), sandbox: "not yet applied"}
}

// confined records what confines the daemon.
func (s *statusFile) confined(how string) { s.sandbox = how }

// publish rewrites the status file in place if its content changed: a
// rewrite needs no new blocks, so the status stays current on a full file
// system, when "records skipped" matters most. A reader may catch it half
// written: --status reads until two reads agree.
func (d *daemon) publish() {
	d.status.write(d.sh.dir, d.appendStatus(d.status.buffer()))
}

// buffer is the buffer to build the next content in.
func (s *statusFile) buffer() []byte { return s.next[:0] }

// write puts b, built in buffer, in the file in dir, unless it is what was
// published.
func (s *statusFile) write(dir int, b []byte) {
	s.next = b // kept if it grew
	if bytes.Equal(s.next, s.published) {
		return
	}
	fd, err := createFile(dir, s.name, false, 0o644)
	if err != nil {
		return // the status is informative: the next second tries again
	}
	n, err := unix.Pwrite(fd, s.next, 0)
	if err == nil && n == len(s.next) && unix.Ftruncate(fd, int64(n)) == nil {
		s.published = append(s.published[:0], s.next...)
	}
	unix.Close(fd)
}

// remove removes the status file from dir (a daemon handing over).
func (s *statusFile) remove(dir int) { unlinkat(dir, s.name, 0) }

// readStatus reads the status file until two reads agree (the daemon
// rewrites it in place).
func readStatus(top string) ([]byte, error) {
	name := filepath.Join(top, shadowDir, statusName)
	last, err := os.ReadFile(name)
	for try := 0; err == nil && try < 10; try++ {
		var again []byte
		if again, err = os.ReadFile(name); err == nil && bytes.Equal(again, last) {
			return again, nil
		}
		last = again
	}
	return last, err
}

// printStatus implements --status: exit 0 if a daemon serves top, else 1.
func printStatus(top string, stdout io.Writer) int {
	data, err := readStatus(top)
	pid, started := 0, uint64(0)
	for _, l := range bytes.Split(data, []byte("\n")) {
		if p, ok := bytes.CutPrefix(l, []byte(pidKey)); ok {
			pid, _ = strconv.Atoi(string(p))
		} else if t, ok := bytes.CutPrefix(l, []byte(startKey)); ok {
			started, _ = strconv.ParseUint(string(t), 10, 64)
		}
	}
	if err != nil || pid <= 0 || !identified(pid, started) {
		fmt.Fprintf(stdout, "daemon: not running\ntop: %s\n", top)
		return 1
	}
	fmt.Fprintf(stdout, "daemon: running (pid %d)\n", pid)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // pid
	sc.Scan()
	fmt.Fprintln(stdout, sc.Text()) // top
	if n, err := publicClients(); err == nil {
		fmt.Fprintf(stdout, "clients: %d\n", n)
	} else {
		fmt.Fprintf(stdout, "clients: unknown (%v)\n", err)
	}
	for sc.Scan() {
		if !bytes.HasPrefix(sc.Bytes(), []byte(startKey)) {
			fmt.Fprintln(stdout, sc.Text())
		}
	}
	return 0
}

// identified reports whether pid is the daemon that wrote the status file,
// which says when it started: a process of that pid started then (one that
// reuses the pid of a daemon killed with SIGKILL did not), and, where the
// caller may read the private set (root: it is mode 0600), the set is a
// daemon's, counts one, and its last operation was pid's.
func identified(pid int, started uint64) bool {
	if started == 0 || procStart(strconv.Itoa(pid)) != started {
		return false
	}
	id, err := trustedPrivate()
	if err != nil || id < 0 {
		return false
	}
	held, err := semctl(id, 0, getVal, nil)
	if errors.Is(err, unix.EACCES) {
		return true // not root: the start time alone identifies it
	}
	last, _ := semctl(id, 0, getPID, nil)
	return err == nil && held > 0 && last == pid
}

// procStart returns the start time of process pid ("self" or a number), in
// clock ticks after boot (proc(5): /proc/PID/stat), 0 if unknown.
func procStart(pid string) uint64 {
	b, _ := os.ReadFile("/proc/" + pid + "/stat")
	return startTime(b)
}

// startTime reads field 22 of a /proc/PID/stat line: counted after the
// command name, which may hold any byte but ends at the last ')'. 0 if the
// line has none.
func startTime(stat []byte) uint64 {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(stat[i+1:])) // from field 3, state
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}
