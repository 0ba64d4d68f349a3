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

	"golang.org/x/sys/unix"
)

const (
	statusName = "status"
	pidKey     = "pid: "
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
	return line(b, "source rotations: ", d.rot.rotations)
}

// statusFile is the status file's name and its content as published and
// as being built: rewriting it allocates nothing.
type statusFile struct {
	name      []byte
	published []byte
	next      []byte
}

func newStatusFile() statusFile {
	return statusFile{name: cstr(statusName), published: make([]byte, 0, 1024), next: make([]byte, 0, 1024)}
}

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
	pid := 0
	if err == nil {
		first, _, _ := bytes.Cut(data, []byte("\n"))
		if p, ok := bytes.CutPrefix(first, []byte(pidKey)); ok {
			pid, _ = strconv.Atoi(string(p))
		}
	}
	if pid <= 0 || !alive(pid) {
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
		fmt.Fprintln(stdout, sc.Text())
	}
	return 0
}

// alive reports whether pid exists; EPERM (another user's process) counts.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
